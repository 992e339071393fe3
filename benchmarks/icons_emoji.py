"""More paired data: emoji alone vs emoji + icon sets, on the emoji zero-shot test split.

Every run: the demo's settings (frozen EfficientNet-Lite0 / MiniLM-L6 features, MLP heads to
256-d, InfoNCE, max ``--epochs`` epochs, patience 5, batch 128, lr 1e-3), the emoji manifest as
the run's own (its val split chooses the epoch, its test split is scored once), plus the icon
sets of ``xmr data fetch icons`` as extra training sources (every split of the icons: none of
them is scored). Pools:

- ``emoji``: emoji only (the demo's InfoNCE run);
- ``+ MDI``: the Material Design Icons set;
- ``+ MDI + game-icons``: and the Game Icons drawings;
- ``+ all icon sets``: the nine sets of the icons dataset;
- ``+ all icon sets + icons-extra``: and the 22 sets of ``xmr data fetch icons-extra`` (most in colour).

Each pool is trained with every ``--seeds`` seed (mean ± sd over seeds), with the cross-style
image-image term when ``--cross-style W`` is given, and with each
``--augment`` variant: ``none``, one kind alone (``crop``, ``jitter``, ``grey``, ``lineart``) or
``all`` four, with ``--augment-views`` views per training image (``xmr train --augment-views``). Scored on the whole
emoji test split (1,526 images x 383 CLDR names) and on its subset whose names appear verbatim
(case-folded) in no training text of that pool (``unseen names``; its size is reported per
pool): t2i / i2t R@1/5/10, rsum and cross-style image->image group mAP. A curve (matplotlib) shows
test rsum against the number of training pairs.

Example (finished runs are loaded, not retrained)::

    python benchmarks/icons_emoji.py --runs /work/xmr-runs/icons --seeds 0 1 2 --threads 2
    python benchmarks/icons_emoji.py --runs /work/xmr-runs/icons --pools emoji --seeds 0 \
        --augment none crop jitter grey lineart all --augment-views 3 --out benchmarks/results/augment
"""

from __future__ import annotations

import argparse
import logging
import statistics
from collections.abc import Sequence
from pathlib import Path

from xmr.bench.common import add_session_options, command_line, markdown, mean_sd, start_session
from xmr.data import fetch_dataset, read_manifest, select_split
from xmr.data.manifest import Item, write_manifest
from xmr.encoders.augment import DEFAULT_KINDS, AugmentConfig
from xmr.runs.config import RunConfig, TrainSource
from xmr.training import TrainConfig
from xmr.workflows.demo import EVAL_TEXTS_PER_ITEM
from xmr.workflows.evaluate import evaluate_run
from xmr.workflows.train import extra_training_items, train_run

log = logging.getLogger("icons_emoji")

ICON_SPLITS = ("train", "val", "test")
#: pool name -> the icon styles (sets) it adds; None: every set
POOLS: dict[str, tuple[str, ...] | None] = {
    "emoji": (),
    "+ MDI": ("mdi",),
    "+ MDI + game-icons": ("mdi", "game-icons"),
    "+ all icon sets": None,
    "+ all icon sets + icons-extra": None,
}
#: pool name -> further datasets whose every split it adds (``xmr data fetch icons-extra`` ...)
POOL_DATASETS: dict[str, tuple[str, ...]] = {"+ all icon sets + icons-extra": ("icons-extra",)}
AUGMENTS: dict[str, tuple[str, ...]] = {"none": (), "crop": ("crop",), "jitter": ("jitter",), "grey": ("grey",),
                                        "lineart": ("lineart",), "all": DEFAULT_KINDS}
METRICS = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "rsum", "i2i_group_map")


def pool_sources(pool: str, folder: Path, cache_dir: str | None) -> tuple[TrainSource, ...]:
    """The extra training sources of a pool: the icons manifest (or a manifest of some of its sets
    written into ``folder``), then its :data:`POOL_DATASETS`."""
    styles = POOLS[pool]
    if styles == ():
        return ()
    icons = fetch_dataset("icons", cache_dir)
    further = tuple(TrainSource(str(fetch_dataset(name, cache_dir)), ICON_SPLITS)
                    for name in POOL_DATASETS.get(pool, ()))
    if styles is None:
        return (TrainSource(str(icons), ICON_SPLITS), *further)
    path = folder / f"icons-{'-'.join(styles)}.jsonl"
    if not path.is_file():
        write_manifest([it for it in read_manifest(icons) if it.style in styles], path)
    return (TrainSource(str(path), ICON_SPLITS), *further)


def pool_slug(pool: str) -> str:
    """A pool's name as a folder / file name: ``"+ MDI + game-icons"`` -> ``mdi-game-icons``."""
    return pool.strip("+ ").replace(" + ", "-").replace(" ", "-").lower()


def unseen_names_manifest(test: Sequence[Item], training_texts: set[str], path: Path) -> int:
    """Write the test items whose query name (first text) is no training text; return how many."""
    keep = [it for it in test if it.texts and it.texts[0].casefold() not in training_texts]
    write_manifest(keep, path)
    return len(keep)


def plot_curve(points: dict[str, dict[str, list[float]]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = dict(sorted(points.items(), key=lambda kv: statistics.fmean(kv[1]["pairs"])))  # along the x axis
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("rsum", "whole test split"), ("unseen_rsum", "names in no training text")):
        xs = [statistics.fmean(p["pairs"]) for p in points.values()]
        ys = [statistics.fmean(p[key]) for p in points.values()]
        err = [statistics.stdev(p[key]) if len(p[key]) > 1 else 0.0 for p in points.values()]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
        if key == "rsum":  # one label per pool, beside the upper curve
            for i, (name, x, y) in enumerate(zip(points, xs, ys)):  # alternately above and below: no overlap
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(-4, 8 if i % 2 else -16), fontsize=7,
                            ha="right")
    ax.set_xscale("log")
    ax.set_xlabel("training pairs (log scale)")
    ax.set_ylabel("emoji zero-shot test rsum")
    ax.set_title("More paired data: emoji + icon sets (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_session_options(ap, runs="runs/icons", out=Path(__file__).resolve().parent / "results" / "icons")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pools", nargs="+", default=list(POOLS), choices=list(POOLS))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--augment", nargs="+", default=["none"], choices=list(AUGMENTS),
                    help="augmentation variants: none, one kind alone, or all four")
    ap.add_argument("--augment-views", type=int, default=3, help="views per training image when augmenting")
    ap.add_argument("--cross-style", type=float, default=0.0,
                    help="weight of the cross-style image-image term (xmr train --cross-style; 0: off)")
    ap.add_argument("--stem", default="icons_emoji", help="name of the result files")
    args = ap.parse_args(argv)
    session = start_session(args)
    cache_dir = session.cache_dir
    emoji = fetch_dataset("emoji", cache_dir)
    args.runs.mkdir(parents=True, exist_ok=True)
    emoji_items = read_manifest(emoji)
    test = select_split(emoji_items, "test")
    own = [it for it in select_split(emoji_items, RunConfig(manifest=str(emoji)).train_split) if it.texts]
    rows: dict[str, dict[str, object]] = {}
    curve: dict[str, dict[str, list[float]]] = {}
    for pool, aug in [(p, a) for p in args.pools for a in args.augment]:
        sources = pool_sources(pool, args.runs, cache_dir)
        augment = AugmentConfig(views=args.augment_views, kinds=AUGMENTS[aug]) if AUGMENTS[aug] else AugmentConfig()
        row_name = pool if aug == "none" else f"{pool}, augment {aug}"
        # what the pool trains on does not depend on the seed: its texts, pairs and unseen test names
        extra, _ = extra_training_items(RunConfig(manifest=str(emoji), extra_train=sources))
        seen = {t.casefold() for it in [*own, *extra] for t in it.texts}
        n_pairs = int(sum(len(it.texts) for it in [*own, *extra]))
        n_unseen_names = len({it.texts[0].casefold() for it in test if it.texts[0].casefold() not in seen})
        per_seed = []
        for seed in args.seeds:
            cfg = RunConfig(manifest=str(emoji), eval_texts_per_item=EVAL_TEXTS_PER_ITEM,
                            train=TrainConfig.from_flat(loss="infonce", epochs=args.epochs, seed=seed,
                                                        cross_style=args.cross_style), extra_train=sources,
                            augment=augment)
            folder = pool_slug(pool)
            if aug != "none":
                folder += f"-aug-{aug}{args.augment_views}"
            if args.cross_style:
                folder += f"-cs{args.cross_style:g}"
            run = args.runs / f"{folder}-s{seed}"
            res = train_run(cfg, run, cache_dir=cache_dir, show_progress=False)
            n_unseen = unseen_names_manifest(test, seen, run / "test-unseen-names.jsonl")
            full = evaluate_run(run, split="test", cache_dir=cache_dir, command=command_line(), show_progress=False)
            unseen = evaluate_run(run, split="test", manifest=str(run / "test-unseen-names.jsonl"),
                                  out=run / "eval-test-unseen-names.json", cache_dir=cache_dir,
                                  command=command_line(), show_progress=False)
            epochs = [float(r["seconds"]) for r in res.history]
            per_seed.append({"seed": seed, "run": str(run), "best_epoch": res.best_epoch,
                             "val_rsum": float(res.best_metrics.get("rsum", float("nan"))),
                             "n_pairs": n_pairs,
                             "n_images": len(own) + len(extra), "epoch_seconds": statistics.fmean(epochs),
                             "epochs_run": len(epochs), "test": {k: float(full[k]) for k in METRICS},
                             "unseen": {k: float(unseen[k]) for k in METRICS}, "n_unseen_images": n_unseen,
                             "n_unseen_names": n_unseen_names})
            log.info("%s seed %d: test rsum %.1f, unseen-name rsum %.1f (%d images), group mAP %.1f", row_name, seed,
                     full["rsum"], unseen["rsum"], n_unseen, full["i2i_group_map"])
        rows[row_name] = {"sources": [vars(s) | {"splits": list(s.splits)} for s in sources],
                          "augment": vars(augment) | {"kinds": list(augment.kinds)}, "seeds": per_seed}
        if aug == "none":
            curve[pool] = {"pairs": [float(r["n_pairs"]) for r in per_seed],
                           "rsum": [r["test"]["rsum"] for r in per_seed],  # type: ignore[index]
                           "unseen_rsum": [r["unseen"]["rsum"] for r in per_seed]}  # type: ignore[index]

    def cells(pool: str, part: str) -> list[str]:
        seeds = rows[pool]["seeds"]
        return [mean_sd([s[part][k] for s in seeds]) for k in METRICS]  # type: ignore[index, union-attr]

    header = ["training data", "training pairs", *METRICS]
    table = markdown(header, [[p, int(rows[p]["seeds"][0]["n_pairs"]), *cells(p, "test")]  # type: ignore[index]
                              for p in rows])
    unseen_table = markdown(["pool", "unseen names (images)", *METRICS],
                            [[p, f"{rows[p]['seeds'][0]['n_unseen_names']} ({rows[p]['seeds'][0]['n_unseen_images']})",  # type: ignore[index]
                              *cells(p, "unseen")] for p in rows])
    timing = markdown(["pool", "seed", "best epoch", "epochs run", "val rsum", "s / epoch"],
                      [[p, s["seed"], s["best_epoch"], s["epochs_run"], f"{s['val_rsum']:.1f}",  # type: ignore[index]
                        f"{s['epoch_seconds']:.1f}"] for p in rows for s in rows[p]["seeds"]])  # type: ignore[union-attr]
    png = args.out / f"{args.stem}_curve.png"
    if len(curve) > 1:
        plot_curve(curve, png)
    objective_extra = f" + cross-style term {args.cross_style:g}" if args.cross_style else ""
    text = session.report(
        "More paired data: emoji + icon sets (emoji zero-shot test split)",
        f"InfoNCE{objective_extra}, the demo's settings, seeds {', '.join(map(str, args.seeds))} (mean ± sd); "
        "best epoch by emoji val rsum. R@K and group mAP in percent. Whole test split: 1,526 images x 383 CLDR names.",
        table,
        "Test names that appear verbatim (case-folded) in no training text of the pool, and their images:",
        unseen_table,
        f"Curve: `{png.name}` (test rsum against training pairs)." if len(curve) > 1 else "",
        timing)
    session.write(args.out, args.stem, text, {"rows": rows, "seeds": args.seeds, "epochs": args.epochs})
    print(table)
    print()
    print(unseen_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
