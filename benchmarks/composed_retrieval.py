"""Composed retrieval: TIRG / Relation / concat / add, in the pretrained space and in Joint.

Datasets (all built offline, seed 0; ``xmr fetch``-able): ``css`` (CSS-like 2-D scenes, 10k train /
2k test queries), ``cci`` (CCI-like iterative scenes, rounds 1-3 train, round 4 test: 1,110 / 10,000),
``emoji-edits`` (skin tone, tone swap, gender, hair; test base emoji unseen) and ``icon-edits``
(MDI base icon + style words; test bases unseen).

Every run: EfficientNet-Lite0 pooled features as the gallery (3 x 3 region features for Relation),
TIRG's LSTM (hidden 512) query encoder trained from scratch, batch classification loss, AdamW lr
1e-3, batch 64, max 20 epochs, patience 5, seed 0; "in Joint" adds one fc projection per modality
into a 512-d joint space and the image-caption InfoNCE term (seed Eq. 2; captions: scene
descriptions, CLDR names, icon names). The epoch is chosen by validation R@1+R@10+R@50 (the val
split, or a seeded 10 % of the training triplets where there is none); test is scored once.

Example::

    XMR_CACHE_DIR=/work/xmr-cache .venv/bin/python benchmarks/composed_retrieval.py \\
        --runs /work/xmr-runs/composed --threads 1
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from xmr.bench.common import add_session_options, command_line, markdown, start_session
from xmr.data import fetch_dataset
from xmr.data.composed_sets import triplets_beside
from xmr.tasks.composed.config import ComposedRunConfig
from xmr.tasks.composed.jobs import evaluate_composed_run, train_composed_run
from xmr.tasks.composed.train import ComposedTrainConfig

log = logging.getLogger("composed_retrieval")

DATASETS = ("css", "cci", "emoji-edits", "icon-edits")
#: row name -> (composer, in Joint)
METHODS: dict[str, tuple[str, bool]] = {
    "TIRG": ("tirg", False), "TIRG in Joint": ("tirg", True),
    "Relation": ("relation", False), "Relation in Joint": ("relation", True),
    "concat": ("concat", False), "concat in Joint": ("concat", True),
    "add": ("add", False), "add in Joint": ("add", True),
}
METRICS = ("r1", "r10", "r50")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--epochs", type=int, default=20)
    add_session_options(ap, runs="runs/composed", out=Path(__file__).parent / "results" / "composed")
    args = ap.parse_args(argv)
    session = start_session(args)
    cache_dir = session.cache_dir
    results: dict[str, dict[str, dict[str, float]]] = {}
    for ds in args.datasets:
        manifest = fetch_dataset(ds, cache_dir)
        for name in args.methods:
            composer, joint = METHODS[name]
            cfg = ComposedRunConfig(manifest=str(manifest), triplets=str(triplets_beside(manifest)), composer=composer,
                                    in_joint=joint, train=ComposedTrainConfig(epochs=args.epochs))
            run = args.runs / ds / name.replace(" ", "-").lower()
            res = train_composed_run(cfg, run, cache_dir=cache_dir, show_progress=False)
            test = evaluate_composed_run(run, split="test", cache_dir=cache_dir, command=command_line(),
                                         show_progress=False)
            results.setdefault(ds, {})[name] = {
                **{k: float(test[k]) for k in (*METRICS, "medr", "n_queries")},
                "val_rsum": float(res.best_metrics.get("rsum", float("nan"))), "best_epoch": res.best_epoch,
                "epochs_run": len(res.history), "train_seconds": float(sum(r["seconds"] for r in res.history))}
            log.info("%s %s: test R@1 %.1f R@10 %.1f R@50 %.1f", ds, name, test["r1"], test["r10"], test["r50"])
    header = ["method", *(f"{ds} {m}" for ds in args.datasets for m in ("R@1", "R@10", "R@50"))]
    rows = [[name, *(f"{results[ds][name][m]:.1f}" for ds in args.datasets for m in METRICS)] for name in args.methods]
    table = markdown(header, rows)
    detail = markdown(["dataset", "method", "test queries", "medr", "val rsum", "best epoch", "epochs run", "train s"],
                      [[ds, name, int(r["n_queries"]), f"{r['medr']:.0f}", f"{r['val_rsum']:.1f}", r["best_epoch"],
                        r["epochs_run"], f"{r['train_seconds']:.0f}"] for ds, by in results.items()
                       for name, r in by.items()])
    text = session.report(
        "Composed retrieval: TIRG / Relation / concat / add, pretrained space vs in Joint",
        "Test R@K in percent (hit: an image of the target scene / emoji / icon in the top K; the query's own "
        "image excluded; gallery: every image of the dataset). Settings in the script's docstring.",
        table, detail)
    session.write(args.out, "composed_retrieval", text, {"results": results})
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
