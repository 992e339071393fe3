"""``hf-clip:PATH`` heads-only vs end to end, on a small random CLIP, on the emoji pool.

The checkpoint is a seeded random CLIP (``xmr.bench.tiny_clip``: 2 layers per tower, 64 wide, 64-px
images in 16-px patches, 16 tokens, 64-d projection) with a word-level tokenizer over the emoji
texts: no pretrained weights exist on this machine, so this measures what the machinery costs and
that training the towers moves the numbers, not CLIP's quality. Every run: the emoji manifest
(train split; val chooses the epoch; test scored once, one text per item), InfoNCE, batch 128,
heads lr 1e-3, ``--epochs`` epochs of ``--steps-per-epoch`` steps, patience 0. Rows:

- ``heads only``: the towers frozen, MLP heads (256-d) on their features;
- ``end to end``: both towers' layers trained (``--finetune-image-blocks 2 --finetune-text-layers 2``,
  at ``--finetune-lr``) with the same MLP heads;
- ``end to end, identity``: the towers trained, no heads (``--head identity``), starting at the
  checkpoint's temperature.

Reported per row: test R@1 / R@5 / R@10 both ways, rsum, the median seconds per epoch (training +
validation; each epoch's in the JSON),
and the set-up seconds (encoding: the frozen features, or the trunk rows).

    python benchmarks/hf_clip_finetune.py --runs /tmp/xmr-runs/hf-clip --epochs 3 --steps-per-epoch 60 --threads 2
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

from xmr.bench.common import add_session_options, command_line, markdown, start_session
from xmr.bench.tiny_clip import make_tiny_clip
from xmr.data import fetch_dataset, read_manifest
from xmr.runs.config import RunConfig
from xmr.training import TrainConfig
from xmr.workflows.demo import EVAL_TEXTS_PER_ITEM
from xmr.workflows.evaluate import evaluate_run
from xmr.workflows.train import train_run

log = logging.getLogger("hf_clip_finetune")
METRICS = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "rsum")
#: row name -> (head, finetune layers per tower)
ROWS = {"heads only": ("mlp", 0), "end to end": ("mlp", 2), "end to end, identity": ("identity", 2)}
PROJECTION = 64


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_session_options(ap, runs="runs/hf-clip", out=Path(__file__).resolve().parent / "results" / "finetune")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps-per-epoch", type=int, default=60)
    ap.add_argument("--finetune-lr", type=float, default=3e-4)
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    args = ap.parse_args(argv)
    session = start_session(args)
    emoji = fetch_dataset("emoji", session.cache_dir)
    args.runs.mkdir(parents=True, exist_ok=True)
    ckpt = args.runs / "tiny-clip"
    if not (ckpt / "config.json").is_file():
        make_tiny_clip(ckpt, (t for it in read_manifest(emoji) for t in it.texts), projection=PROJECTION)
    name = f"hf-clip:{ckpt.resolve()}"
    results = {}
    for row in args.rows:
        head, layers = ROWS[row]
        train = TrainConfig.from_flat(loss="infonce", epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                                      patience=0, finetune_lr=args.finetune_lr)
        cfg = RunConfig.from_flat(manifest=str(emoji), image_encoder=name, text_encoder=name, head=head,
                                  embed_dim=PROJECTION if head == "identity" else 256,
                                  eval_texts_per_item=EVAL_TEXTS_PER_ITEM, train=train,
                                  finetune_image_blocks=layers, finetune_text_layers=layers)
        run = args.runs / row.replace(", ", "-").replace(" ", "-")
        t0 = time.perf_counter()
        res = train_run(cfg, run, cache_dir=session.cache_dir, show_progress=False, overwrite=True)
        wall = time.perf_counter() - t0
        epochs = [float(r["seconds"]) for r in res.history]
        test = evaluate_run(run, split="test", cache_dir=session.cache_dir, command=command_line(),
                            show_progress=False)
        results[row] = {"run": str(run), "best_epoch": res.best_epoch, "epoch_seconds": statistics.median(epochs),
                        "epochs_seconds": epochs,
                        "setup_seconds": wall - sum(epochs), "logit_scale_start": 1 / res.model.config.init_temperature,
                        "test": {k: float(test[k]) for k in METRICS}}
        log.info("%s: test rsum %.1f, %.1f s/epoch (median)", row, test["rsum"], statistics.median(epochs))
    table = markdown(["run", *METRICS, "best epoch", "s / epoch (median)", "set-up s"],
                     [[row, *(f"{r['test'][k]:.1f}" for k in METRICS), r["best_epoch"],  # type: ignore[index]
                       f"{r['epoch_seconds']:.1f}", f"{r['setup_seconds']:.0f}"] for row, r in results.items()])
    text = session.report(
        "hf-clip:PATH heads-only vs end to end (a small random CLIP, emoji)",
        f"Emoji zero-shot test split (one text per item); InfoNCE, batch 128, heads lr 1e-3, towers lr "
        f"{args.finetune_lr:g}, {args.epochs} epochs of {args.steps_per_epoch} steps, best epoch by val rsum. "
        "The checkpoint is random "
        "(2 layers per tower, 64 wide, 64 px): the rows compare what training the towers adds on the same "
        "checkpoint and what it costs, not CLIP's pretrained quality.",
        table)
    session.write(args.out, f"hf_clip_tiny_{args.epochs}x{args.steps_per_epoch}", text, {"rows": results})
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
