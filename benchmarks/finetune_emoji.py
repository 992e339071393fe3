"""Fine-tuning the last N blocks of EfficientNet-Lite0 on cached trunk activations (dual-path Stage II on a CPU).

Every run: the demo's settings (MiniLM-L6 text features, MLP heads to 256-d, batch 128, lr 1e-3,
patience 5, emoji val chooses the epoch, emoji test scored once) with
``--finetune-image-blocks N`` for each ``--blocks`` N (0: the frozen encoder, the baseline in
the same run; ``all``: the whole network from cached pixels), the tail at ``--finetune-lr``;
``--steps-per-epoch`` caps an epoch so that the slow tails fit the machine. Training data:
``--pool`` as in ``icons_emoji.py``. ``--two-stage`` trains instance -> instance+rank instead of
InfoNCE (Stage I on the frozen encoder, Stage II fine-tuning: the paper's schedule).

Options that apply to every N of one invocation (each named in the run folder when not the
default): ``--text-layers`` (``--finetune-text-layers``), ``--layer-lr-decay``, ``--ema``
(weight average), ``--cross-style`` (the image-image term between styles of one emoji),
``--augment KIND ...`` with ``--augment-views`` (augmented trunk views), ``--seeds`` (mean ± sd).

Reported per N: test R@K / rsum / group mAP, seconds per epoch (training + validation), the
trunk encode time (the call's wall time minus the epochs it trained), the size on disk of the
trunk's cache folder (shared by every run with that trunk, so it grows with the data encoded), and
the process's peak resident memory after the run (monotone over the runs of one invocation).

    python benchmarks/finetune_emoji.py --runs /work/xmr-runs/finetune --blocks 0 1 3 --epochs 8 \\
        --steps-per-epoch 120 --threads 2
    python benchmarks/finetune_emoji.py --runs /work/xmr-runs/finetune-all --pool "+ all icon sets" \\
        --blocks 3 --finetune-lr 3e-5 --augment lineart --augment-views 2 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import time
from pathlib import Path

from icons_emoji import METRICS, POOLS, pool_slug, pool_sources
from xmr.bench.common import Session, add_session_options, command_line, markdown, mean_sd, start_session
from xmr.data import fetch_dataset
from xmr.encoders.augment import DEFAULT_KINDS, AugmentConfig
from xmr.encoders.finetune import TailDepth, parse_depth
from xmr.runs.config import RunConfig, TrainSource
from xmr.training import TrainConfig
from xmr.training.execution import ExecutionConfig
from xmr.utils.io import load_json
from xmr.workflows.demo import EVAL_TEXTS_PER_ITEM
from xmr.workflows.evaluate import evaluate_run
from xmr.workflows.features import feature_cache_dir
from xmr.workflows.train import train_run

log = logging.getLogger("finetune_emoji")
DEFAULT_FINETUNE_LR = TrainConfig().finetune_lr


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def variant(args: argparse.Namespace) -> str:
    """The invocation's non-default options as a name suffix (``-t1-lr3e-05-cs3-2stage`` ...)."""
    parts = [f"-t{args.text_layers}" if args.text_layers else "",
             f"-lr{args.finetune_lr:g}" if args.finetune_lr != DEFAULT_FINETUNE_LR else "",
             f"-lld{args.layer_lr_decay:g}" if args.layer_lr_decay != 1.0 else "",
             f"-ema{args.ema:g}" if args.ema else "",
             f"-cs{args.cross_style:g}" if args.cross_style else "",
             f"-aug-{'+'.join(args.augment)}{args.augment_views}" if args.augment else "",
             "-2stage" if args.two_stage else ""]
    return "".join(parts)


def run_name(args: argparse.Namespace, n: TailDepth, seed: int) -> str:
    """The run folder of block count ``n`` and ``seed``: every non-default option is in the name."""
    return f"{pool_slug(args.pool)}-ft{n}{variant(args)}-s{seed}"


def train_one(args: argparse.Namespace, session: Session, emoji: Path, sources: tuple[TrainSource, ...],
              n: TailDepth, seed: int) -> dict[str, object]:
    """Train (or load) one run and score it on the emoji test split."""
    cache_dir = session.cache_dir
    common = dict(epochs=args.epochs, seed=seed, steps_per_epoch=args.steps_per_epoch, finetune_lr=args.finetune_lr,
                  ema_decay=args.ema, cross_style=args.cross_style, layer_lr_decay=args.layer_lr_decay)
    train = (TrainConfig.from_flat(loss="instance", then="instance+rank", stage1_epochs=3, rank_loss="vse++", **common)
             if args.two_stage else TrainConfig.from_flat(loss="infonce", **common))
    augment = AugmentConfig(views=args.augment_views, kinds=tuple(args.augment)) if args.augment else AugmentConfig()
    cfg = RunConfig.from_flat(manifest=str(emoji), eval_texts_per_item=EVAL_TEXTS_PER_ITEM, train=train,
                              extra_train=sources, finetune_image_blocks=n, finetune_text_layers=args.text_layers,
                              augment=augment)
    run = args.runs / run_name(args, n, seed)
    history = run / "history.json"
    epochs_before = len(load_json(history)) if history.is_file() else 0
    t0 = time.perf_counter()
    # micro-batches change memory, not results (exact gradient accumulation): not in the run's name
    execution = ExecutionConfig(micro_batch=args.micro_batch)
    res = train_run(cfg, run, cache_dir=cache_dir, show_progress=False, execution=execution)
    wall = time.perf_counter() - t0
    epochs = [float(r["seconds"]) for r in res.history]
    test = evaluate_run(run, split="test", cache_dir=cache_dir, command=command_line(), show_progress=False)
    # the cross-style choices are made on val: its group mAP as well as the trainer's rsum
    val = evaluate_run(run, split="val", cache_dir=cache_dir, command=command_line(), show_progress=False)
    tail = res.model.config.image_tail  # names the trunk whose cache the run trained on
    cache = feature_cache_dir(cache_dir) / str(tail["trunk_id"]).replace("/", "_") if tail else None
    row = {"run": str(run), "status": res.status, "best_epoch": res.best_epoch, "epochs_run": len(epochs),
           "epoch_seconds": statistics.fmean(epochs), "call_seconds": wall,
           # a finished run is loaded, not trained: no set-up to time then
           "setup_seconds": wall - sum(epochs[epochs_before:]) if len(epochs) > epochs_before else None,
           "trunk_cache_bytes": folder_bytes(cache) if cache else 0,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "val_rsum": float(res.best_metrics.get("rsum", float("nan"))),
           "val_group_map": float(val["i2i_group_map"]),
           "test": {k: float(test[k]) for k in METRICS}}
    log.info("N=%s seed %d: test rsum %.1f, group mAP %.1f, %.0f s/epoch", n, seed, test["rsum"],
             test["i2i_group_map"], statistics.fmean(epochs))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_session_options(ap, runs="runs/finetune", out=Path(__file__).resolve().parent / "results" / "finetune")
    ap.add_argument("--blocks", type=parse_depth, nargs="+", default=[0, 1, 3, 5], help="N blocks, or all")
    ap.add_argument("--pool", default="emoji", choices=list(POOLS))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--steps-per-epoch", type=int, default=120)
    ap.add_argument("--finetune-lr", type=float, default=DEFAULT_FINETUNE_LR)
    ap.add_argument("--text-layers", type=parse_depth, default=0, help="also fine-tune MiniLM's last N layers (or all)")
    ap.add_argument("--layer-lr-decay", type=float, default=1.0, help="layer-wise lr decay of the tails (1: off)")
    ap.add_argument("--micro-batch", type=int, default=None,
                    help="embed each batch this many pairs at a time (the same gradients, less memory)")
    ap.add_argument("--ema", type=float, default=0.0, help="weight-average decay (0: off)")
    ap.add_argument("--cross-style", type=float, default=0.0, help="weight of the cross-style image-image term")
    ap.add_argument("--augment", nargs="*", default=[], choices=list(DEFAULT_KINDS) + ["hflip"],
                    help="augmentation kinds of the training views (none by default)")
    ap.add_argument("--augment-views", type=int, default=2)
    ap.add_argument("--two-stage", action="store_true", help="instance -> instance+rank (Stage I 3 epochs)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args(argv)
    session = start_session(args)
    emoji = fetch_dataset("emoji", session.cache_dir)
    args.runs.mkdir(parents=True, exist_ok=True)
    sources = pool_sources(args.pool, args.runs, session.cache_dir)
    rows = {n: {seed: train_one(args, session, emoji, sources, n, seed) for seed in args.seeds} for n in args.blocks}

    def mean(n: TailDepth, key: str) -> float:
        return statistics.fmean(float(r[key]) for r in rows[n].values())  # type: ignore[arg-type]

    def test_values(n: TailDepth, key: str) -> list[float]:
        return [float(r["test"][key]) for r in rows[n].values()]  # type: ignore[index]

    base = statistics.fmean(test_values(args.blocks[0], "rsum"))
    table = markdown(["N blocks", *METRICS, f"Δ rsum vs N={args.blocks[0]}", "val rsum", "val group mAP",
                      "best epoch", "s / epoch", "setup s (trunk encode)", "trunk cache MB", "peak RSS MB"],
                     [[n, *(mean_sd(test_values(n, k)) for k in METRICS),
                       f"{statistics.fmean(test_values(n, 'rsum')) - base:+.1f}",
                       mean_sd([float(r["val_rsum"]) for r in rows[n].values()]),  # type: ignore[arg-type]
                       mean_sd([float(r["val_group_map"]) for r in rows[n].values()]),  # type: ignore[arg-type]
                       "/".join(str(r["best_epoch"]) for r in rows[n].values()),
                       f"{mean(n, 'epoch_seconds'):.0f}",
                       "/".join("-" if r["setup_seconds"] is None else f"{r['setup_seconds']:.0f}"
                                for r in rows[n].values()),
                       f"{max(int(r['trunk_cache_bytes']) for r in rows[n].values()) / 1e6:.0f}",  # type: ignore[call-overload]
                       f"{max(float(r['peak_rss_mb']) for r in rows[n].values()):.0f}"]  # type: ignore[arg-type]
                      for n in args.blocks])
    objective = "instance -> instance+rank (Stage I: 3 epochs, frozen encoder)" if args.two_stage else "InfoNCE"
    extras = [f"text layers {args.text_layers}" if args.text_layers else "",
              f"layer lr decay {args.layer_lr_decay:g}" if args.layer_lr_decay != 1.0 else "",
              f"EMA {args.ema:g}" if args.ema else "",
              f"cross-style term {args.cross_style:g}" if args.cross_style else "",
              f"augment {'+'.join(args.augment)} x{args.augment_views} views" if args.augment else ""]
    seeds = ", ".join(map(str, args.seeds))
    text = session.report(
        f"Fine-tuning the last N image-encoder blocks ({objective}, training data: {args.pool})",
        f"Emoji zero-shot test split; max {args.epochs} epochs of {args.steps_per_epoch} steps (batch 128), "
        f"tail lr {args.finetune_lr:g}, heads lr 1e-3, BatchNorm statistics frozen, "
        f"{'; '.join(e for e in extras if e) or 'no augmentation'}; seeds {seeds} (mean ± sd when several); "
        "best epoch by emoji val rsum. N = 0 is the frozen encoder (the baseline, same settings).",
        table)
    seeds_part = "_seeds" + "-".join(map(str, args.seeds)) if args.seeds != [0] else ""
    # runs of other lengths never overwrite each other's results
    stem = f"finetune_{pool_slug(args.pool)}{variant(args)}{seeds_part}_{args.epochs}x{args.steps_per_epoch}"
    session.write(args.out, stem.replace("-2stage", "_2stage"),
                  text, {"rows": {str(n): {str(s): r for s, r in by_seed.items()} for n, by_seed in rows.items()},
                         "blocks": args.blocks, "seeds": args.seeds})
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
