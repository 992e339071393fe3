"""Fine-tuning the last N blocks of EfficientNet-Lite0 on cached trunk activations (dual-path Stage II on a CPU).

Every run: the demo's settings (MiniLM-L6 text features, MLP heads to 256-d, batch 128, lr 1e-3,
patience 5, emoji val chooses the epoch, emoji test scored once) with
``--finetune-image-blocks N`` for each ``--blocks`` N (0: the frozen encoder, the baseline in
the same run), the tail at ``--finetune-lr``; ``--steps-per-epoch`` caps an epoch so that the
slow tails fit the machine. Training data: ``--pool`` as in ``icons_emoji.py``. ``--two-stage``
trains instance -> instance+rank instead of InfoNCE (Stage I on the frozen encoder, Stage II
fine-tuning: the paper's schedule).

Reported per N: test R@K / rsum / group mAP, seconds per epoch (training + validation), the
trunk encode time (the call's wall time minus the epochs it trained), the size on disk of the
trunk's cache folder (shared by every run with that trunk, so it grows with the data encoded), and
the process's peak resident memory after the run (monotone over the runs of one invocation).

    python benchmarks/finetune_emoji.py --runs /work/xmr-runs/finetune --blocks 0 1 3 --epochs 8 \\
        --steps-per-epoch 120 --threads 2
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import time
from pathlib import Path

from icons_emoji import METRICS, POOLS, pool_slug, pool_sources
from xmr.bench.common import add_session_options, command_line, markdown, start_session
from xmr.data import fetch_dataset
from xmr.runs.config import RunConfig
from xmr.training import TrainConfig
from xmr.utils.io import load_json
from xmr.workflows.demo import EVAL_TEXTS_PER_ITEM
from xmr.workflows.evaluate import evaluate_run
from xmr.workflows.features import feature_cache_dir
from xmr.workflows.train import train_run

log = logging.getLogger("finetune_emoji")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_session_options(ap, runs="runs/finetune", out=Path(__file__).resolve().parent / "results" / "finetune")
    ap.add_argument("--blocks", type=int, nargs="+", default=[0, 1, 3, 5])
    ap.add_argument("--pool", default="emoji", choices=list(POOLS))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--steps-per-epoch", type=int, default=120)
    ap.add_argument("--finetune-lr", type=float, default=1e-4)
    ap.add_argument("--two-stage", action="store_true", help="instance -> instance+rank (Stage I 3 epochs)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    session = start_session(args)
    cache_dir = session.cache_dir
    emoji, icons = fetch_dataset("emoji", cache_dir), fetch_dataset("icons", cache_dir)
    args.runs.mkdir(parents=True, exist_ok=True)
    sources = pool_sources(icons, POOLS[args.pool], args.runs)
    if args.two_stage:
        train = TrainConfig(loss="instance", then="instance+rank", stage1_epochs=3, rank_loss="vse++",
                            epochs=args.epochs, seed=args.seed, steps_per_epoch=args.steps_per_epoch,
                            finetune_lr=args.finetune_lr)
    else:
        train = TrainConfig(loss="infonce", epochs=args.epochs, seed=args.seed, steps_per_epoch=args.steps_per_epoch,
                            finetune_lr=args.finetune_lr)
    rows: dict[int, dict[str, object]] = {}
    for n in args.blocks:
        cfg = RunConfig(manifest=str(emoji), eval_texts_per_item=EVAL_TEXTS_PER_ITEM, train=train,
                        extra_train=sources, finetune_image_blocks=n)
        name = f"{pool_slug(args.pool)}-ft{n}"
        run = args.runs / (name + ("-2stage" if args.two_stage else "") + f"-s{args.seed}")
        history = run / "history.json"
        epochs_before = len(load_json(history)) if history.is_file() else 0
        t0 = time.perf_counter()
        res = train_run(cfg, run, cache_dir=cache_dir, show_progress=False)
        wall = time.perf_counter() - t0
        epochs = [float(r["seconds"]) for r in res.history]
        test = evaluate_run(run, split="test", cache_dir=cache_dir, command=command_line(), show_progress=False)
        tail = res.model.config.image_tail  # names the trunk whose cache the run trained on
        cache = feature_cache_dir(cache_dir) / str(tail["trunk_id"]).replace("/", "_") if tail else None
        rows[n] = {"run": str(run), "status": res.status, "best_epoch": res.best_epoch, "epochs_run": len(epochs),
                   "epoch_seconds": statistics.fmean(epochs), "call_seconds": wall,
                   # a finished run is loaded, not trained: no set-up to time then
                   "setup_seconds": wall - sum(epochs[epochs_before:]) if len(epochs) > epochs_before else None,
                   "trunk_cache_bytes": folder_bytes(cache) if cache else 0,
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "val_rsum": float(res.best_metrics.get("rsum", float("nan"))),
                   "test": {k: float(test[k]) for k in METRICS}}
        log.info("N=%d: test rsum %.1f, group mAP %.1f, %.0f s/epoch", n, test["rsum"], test["i2i_group_map"],
                 statistics.fmean(epochs))
    base = rows[args.blocks[0]]["test"]["rsum"]  # type: ignore[index]
    table = markdown(["N blocks", *METRICS, f"Δ rsum vs N={args.blocks[0]}", "val rsum", "best epoch", "s / epoch",
                      "setup s (trunk encode)", "trunk cache MB", "peak RSS MB"],
                     [[n, *(f"{r['test'][k]:.1f}" for k in METRICS),  # type: ignore[index]
                       f"{r['test']['rsum'] - base:+.1f}", f"{r['val_rsum']:.1f}", r["best_epoch"],  # type: ignore[index, operator]
                       f"{r['epoch_seconds']:.0f}",
                       "-" if r["setup_seconds"] is None else f"{r['setup_seconds']:.0f}",
                       f"{int(r['trunk_cache_bytes']) / 1e6:.0f}", f"{r['peak_rss_mb']:.0f}"]  # type: ignore[call-overload]
                      for n, r in rows.items()])
    objective = "instance -> instance+rank (Stage I: 3 epochs, frozen encoder)" if args.two_stage else "InfoNCE"
    text = session.report(
        f"Fine-tuning the last N image-encoder blocks ({objective}, training data: {args.pool})",
        f"Emoji zero-shot test split; max {args.epochs} epochs of {args.steps_per_epoch} steps (batch 128), "
        f"tail lr {args.finetune_lr:g}, heads lr 1e-3, BatchNorm statistics frozen, seed {args.seed}; "
        "best epoch by emoji val rsum. N = 0 is the frozen encoder (the baseline, same settings).",
        table)
    stem = f"finetune_{pool_slug(args.pool)}" + (
        "_2stage" if args.two_stage else "")
    session.write(args.out, stem, text, {"rows": {str(k): v for k, v in rows.items()}, "blocks": args.blocks})
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
