"""GXN's Tables 1 and 2 ("Look, Imagine and Match", CVPR 2018) on scene-captions and on emoji.

Five rows, as Table 1's ablation: the two-branch model without generation, + i2t trained with
cross-entropy only, + i2t with the mixed XE + self-critical CIDEr-D loss, + t2i (the conditional
GAN), + i2t + t2i (Algorithm 1). Every run: frozen EfficientNet-Lite0 / MiniLM-L6 features, GXN's
match part (order-violation similarity, the Eq. 3 hinge summed over negatives = ``vse0``,
margin 0.05, lambda 0.5) and its generative weights (beta_f = beta_w = 0.5, beta_s = 2), lr 2e-4,
batch 128, ``--epochs`` x ``--steps-per-epoch`` steps, best epoch by val rsum. A control row,
the no-generation model with twice the steps, makes as many rank updates as "+ i2t + t2i".

Per run: test R@1, R@10, Med r both directions and Sum (Eq. 13: the four R@1 + R@10); Table 2:
BLEU-1..4 and CIDEr (pycocoevalcap) of the top-1..5 retrieved captions against each test image's
own texts; for i2t runs the generated captions' scores (greedy and beam 3); for t2i runs a PNG grid
of generated 64 x 64 images beside the real ones for test captions; seconds per epoch.

Differences from the paper: the encoders are frozen (GXN fine-tunes ResNet-152 and trains GRU
text encoders); "+ i2t + t2i" is trained from scratch (GXN initialises it from the i2t and t2i
models); a generative step is followed by a rank update, so i2t + t2i makes two rank updates per
batch where the other rows make one (hence the 2x control).

Example (finished runs are loaded, not retrained)::

    python benchmarks/gxn_ablation.py --dataset scene-captions --runs /work/xmr-runs/gxn --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import logging
import statistics
import textwrap
from pathlib import Path
from typing import Any

from xmr.bench.common import add_session_options, command_line, markdown, mean_sd, start_session
from xmr.data import fetch_dataset, read_manifest, select_split
from xmr.runs.config import RunConfig, load_run, run_encoders
from xmr.training import TrainConfig
from xmr.workflows.demo import EVAL_TEXTS_PER_ITEM
from xmr.workflows.evaluate import evaluate_run
from xmr.workflows.imagine import caption_quality, imagined_pixels
from xmr.workflows.train import train_run

log = logging.getLogger("gxn_ablation")

#: row name -> (run-folder slug, TrainConfig fields, steps-per-epoch factor). The 2x control makes as
#: many rank updates as "+ i2t + t2i" (which follows each of its two generative updates by one)
VARIANTS: dict[str, tuple[str, dict[str, Any], int]] = {
    "two-branch, no generation": ("match", {}, 1),
    "two-branch, no generation, 2x steps": ("match-2x", {}, 2),
    "+ i2t (xe)": ("i2t-xe", {"generative": ("i2t",), "caption_rl": False}, 1),
    "+ i2t (xe+rl)": ("i2t-mix", {"generative": ("i2t",)}, 1),
    "+ t2i": ("t2i", {"generative": ("t2i",)}, 1),
    "+ i2t + t2i": ("i2t-t2i", {"generative": ("i2t", "t2i")}, 1),
}
RETRIEVAL = ("i2t_r1", "i2t_r10", "i2t_medr", "t2i_r1", "t2i_r10", "t2i_medr")
CAPTION = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr")


def run_config(dataset: str, manifest: Path, args: argparse.Namespace, seed: int, fields: dict[str, Any],
               steps_factor: int = 1) -> RunConfig:
    train = TrainConfig.from_flat(loss="vse0", margin=0.05, lr=args.lr, epochs=args.epochs, patience=0, seed=seed,
                                  steps_per_epoch=args.steps_per_epoch * steps_factor, caption_xe_epochs=args.xe_epochs,
                                  **fields)
    return RunConfig(manifest=str(manifest), similarity="order", two_branch=0.5, embed_dim=args.embed_dim,
                     eval_texts_per_item=EVAL_TEXTS_PER_ITEM if dataset == "emoji" else None, train=train)


def image_grid(run: Path, dataset_manifest: Path, png: Path, n_texts: int = 6, n_draws: int = 4) -> None:
    """Real test images (left) and ``n_draws`` images the run imagines from one of their captions (right)."""
    from xmr.encoders.image_io import image_to_array
    from xmr.models.image_gan import IMAGE_SIZE
    from xmr.plots.figures import pyplot, save_figure

    plt = pyplot()

    config, model = load_run(run)
    test = [it for it in select_split(read_manifest(dataset_manifest), "test") if it.texts][:: 37][:n_texts]
    enc = run_encoders(config, model.vocab)["text_encoder"]
    fig, axes = plt.subplots(n_texts, n_draws + 1, figsize=(1.6 * (n_draws + 1), 1.75 * n_texts))
    for row, item in zip(axes, test):
        row[0].imshow(image_to_array(item.image, IMAGE_SIZE))  # as G and D see it: on white, 64 x 64
        row[0].set_title("real", fontsize=7)
        for ax, px in zip(row[1:], imagined_pixels(model, enc, item.texts[0], n=n_draws, seed=0)):
            ax.imshow(px)
        row[1].set_title("\n".join(textwrap.wrap(item.texts[0], 72)), fontsize=6, loc="left")
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, png, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_session_options(ap, runs="runs/gxn", out=Path(__file__).resolve().parent / "results" / "gxn")
    ap.add_argument("--dataset", default="scene-captions", choices=["scene-captions", "emoji"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps-per-epoch", type=int, default=100)
    ap.add_argument("--xe-epochs", type=int, default=3, help="XE-only epochs before the mixed loss (i2t xe+rl)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--embed-dim", type=int, default=512, help="joint size (each branch half of it)")
    ap.add_argument("--stem", default=None, help="name of the result files (default gxn_<dataset>)")
    args = ap.parse_args(argv)
    session = start_session(args)
    cache_dir = session.cache_dir
    manifest = fetch_dataset(args.dataset, cache_dir)
    stem = args.stem or f"gxn_{args.dataset.replace('-', '_')}"
    rows: dict[str, list[dict[str, Any]]] = {}
    for name in args.variants:
        slug, fields, factor = VARIANTS[name]
        rows[name] = []
        for seed in args.seeds:
            run = args.runs / f"{args.dataset}-{slug}-{args.epochs}x{args.steps_per_epoch}-lr{args.lr:g}-s{seed}"
            res = train_run(run_config(args.dataset, manifest, args, seed, fields, factor), run, cache_dir=cache_dir,
                            show_progress=False)
            test = evaluate_run(run, split="test", cache_dir=cache_dir, command=command_line(), show_progress=False)
            quality = caption_quality(run, split="test", cache_dir=cache_dir, show_progress=False)
            entry = {"seed": seed, "run": str(run), "best_epoch": res.best_epoch,
                     "val_rsum": float(res.best_metrics["rsum"]),
                     "epoch_seconds": statistics.fmean(float(r["seconds"]) for r in res.history),
                     "test": {k: float(test[k]) for k in RETRIEVAL},
                     "sum": float(test["i2t_r1"] + test["i2t_r10"] + test["t2i_r1"] + test["t2i_r10"]),
                     "quality": quality}
            if "t2i" in fields.get("generative", ()) and seed == args.seeds[0]:
                png = args.out / f"{stem}_{slug}_images.png"
                image_grid(run, manifest, png)
                entry["grid"] = png.name
            rows[name].append(entry)
            log.info("%s seed %d: Sum %.1f, retrieved top-1 CIDEr %.1f%s", name, seed, entry["sum"],
                     quality["retrieved"][1]["CIDEr"],  # type: ignore[index]
                     f", greedy CIDEr {quality['generated']['beam 1']['CIDEr']:.1f}"  # type: ignore[index]
                     if "generated" in quality else "")

    def col(name: str, get: Any, digits: int = 1) -> str:
        return mean_sd([float(get(e)) for e in rows[name]], digits)

    table1 = markdown(["model", "i2t R@1", "i2t R@10", "i2t Med r", "t2i R@1", "t2i R@10", "t2i Med r", "Sum"],
                      [[n, *[col(n, lambda e, k=k: e["test"][k]) for k in RETRIEVAL], col(n, lambda e: e["sum"])]
                       for n in rows])
    table2 = markdown(["model", "rank", *CAPTION],
                      [[n, r, *[col(n, lambda e, r=r, k=k: e["quality"]["retrieved"][r][k]) for k in CAPTION]]
                       for n in rows for r in range(1, 6)])
    gen_rows = [[n, b, *[col(n, lambda e, b=b, k=k: e["quality"]["generated"][b][k]) for k in CAPTION]]
                for n in rows if "generated" in rows[n][0]["quality"] for b in ("beam 1", "beam 3")]
    table3 = markdown(["model", "decoding", *CAPTION], gen_rows) if gen_rows else "(no i2t run)"
    timing = markdown(["model", "seed", "best epoch", "val rsum", "s / epoch"],
                      [[n, e["seed"], e["best_epoch"], f"{e['val_rsum']:.1f}", f"{e['epoch_seconds']:.1f}"]
                       for n in rows for e in rows[n]])
    examples = [f"- {ex['references'][0]!r} -> greedy {ex['beam 1']!r}, beam 3 {ex['beam 3']!r}"
                for ex in next((e["quality"].get("examples", []) for n in rows for e in rows[n]
                                if "examples" in e["quality"]), [])[:4]]
    grids = [f"`{e['grid']}` ({n})" for n in rows for e in rows[n] if "grid" in e]
    seeds = ", ".join(map(str, args.seeds))
    text = session.report(
        f"GXN ablation on {args.dataset} (Tables 1 and 2)",
        f"Seeds {seeds} (mean ± sd where several); {args.epochs} epochs x {args.steps_per_epoch} steps, batch 128, "
        f"lr {args.lr:g}, embed {args.embed_dim} ({args.embed_dim // 2} per branch), order similarity, vse0 margin "
        f"0.05, lambda 0.5; best epoch by val rsum. R@K in percent; Sum = i2t R@1 + R@10 + t2i R@1 + R@10 (Eq. 13).",
        table1,
        "Table 2: BLEU / CIDEr (pycocoevalcap, x 100) of the r-th retrieved test caption against the "
        "image's own texts:",
        table2,
        "Generated captions on the test images (beam 1 = greedy):",
        table3,
        "Examples (first reference -> generated):\n" + "\n".join(examples) if examples else "",
        "Generated images: " + ", ".join(grids) if grids else "",
        timing)
    session.write(args.out, stem, text, {"rows": rows, "seeds": args.seeds, "epochs": args.epochs,
                                         "steps_per_epoch": args.steps_per_epoch, "dataset": args.dataset})
    print(table1)
    print()
    print(table3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
