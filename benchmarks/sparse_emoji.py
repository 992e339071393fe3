"""A3VSE on sparsely annotated emoji: VSE++ vs A3VSE and its ablations (issue 4, A3VSE Table/ablation).

Corpus: the emoji manifest, training split thinned to 10 % of the emoji (``by_group=True``: all
four drawing styles of an emoji are annotated or none is) with one text each
(:func:`xmr.data.sparse.sparsify`, ``0.1x1``, seed 0). The other training images are
un-annotated; their pseudo-text is their regional ImageNet labels
(:meth:`xmr.semantics.labeller.ImageNetLabeller.regional_labels`, 2 x 2 crops, top-1 per crop,
ordered by confidence) joined by spaces (``--pseudo global`` uses the top-5 global labels).

Features (all cached): images -> EfficientNet-Lite0 final map pooled to 3 x 3 regions
(:mod:`xmr.encoders.regions`, 9 x 1280); texts and pseudo-texts -> MiniLM-L6 (384).

Variants, every hyper-parameter fixed before the first run (no tuning on val or test):

* ``vse++``: annotated pairs only, mean pooling, no discriminators (= A3VSE with every addition off);
* ``a3vse``: the full model (attention, pseudo pairs with beta = 0.8, six GRL discriminators);
* ``a3vse -pseudo`` / ``a3vse -attention`` / ``a3vse -adversarial``: one addition removed.

Model selection: the epoch with the best val rsum (val split, CLDR name as the one text per
image). Reported: the test split (29 subgroups unseen in training, CLDR name per image),
i2t/t2i R@1/5/10 and rsum, seed 0 (and more with ``--seeds``).

Example::

    XMR_CACHE_DIR=/work/xmr-cache .venv/bin/python benchmarks/sparse_emoji.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, load_note, markdown  # noqa: E402

from xmr.data.manifest import Item, read_manifest  # noqa: E402
from xmr.data.sparse import sparsify  # noqa: E402
from xmr.encoders import create_encoder, encode_texts  # noqa: E402
from xmr.encoders.regions import encode_regions  # noqa: E402
from xmr.evaluation.protocol import build_text_queries  # noqa: E402
from xmr.semantics.labeller import ImageNetLabeller, pseudo_text  # noqa: E402
from xmr.training.a3vse import (  # noqa: E402
    A3VSEConfig,
    PairedFeatures,
    RetrievalFeatures,
    evaluate_a3vse,
    train_a3vse,
)
from xmr.utils.paths import default_cache_dir  # noqa: E402

log = logging.getLogger("sparse_emoji")

BASE = A3VSEConfig(embed_dim=256, context_dim=256, epochs=10, steps_per_epoch=40, batch_size=64, lr=5e-4)
VARIANTS: dict[str, A3VSEConfig] = {
    "vse++": dataclasses.replace(BASE, attention=False, pseudo_texts=False, adversarial=False),
    "a3vse": BASE,
    "a3vse -pseudo": dataclasses.replace(BASE, pseudo_texts=False),
    "a3vse -attention": dataclasses.replace(BASE, attention=False),
    "a3vse -adversarial": dataclasses.replace(BASE, adversarial=False),
}
LABEL_CHUNK = 256
COLUMNS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")


def _texts(items: list[Item], enc: object, cache: Path) -> np.ndarray:
    return encode_texts(enc, [it.texts[0] for it in items], cache_dir=cache).feats  # type: ignore[arg-type]


def prepare(manifest: Path, *, pseudo: str, seed: int, limit_unannotated: int | None
            ) -> tuple[PairedFeatures, PairedFeatures, RetrievalFeatures, RetrievalFeatures, dict[str, object]]:
    """Sparsify, label the un-annotated training images, encode everything (all through caches)."""
    cache_root = Path(default_cache_dir())
    feats_cache = cache_root / "features"
    items = read_manifest(manifest)
    corpus = sparsify(items, "0.1x1", seed=seed, by_group=True)
    train = [it for it in corpus.items if it.split == "train"]
    ann = [it for it in train if it.id in corpus.annotated]
    un = [it for it in train if it.id in corpus.unannotated]
    if limit_unannotated is not None and limit_unannotated < len(un):
        pick = np.sort(np.random.default_rng(seed).choice(len(un), limit_unannotated, replace=False))
        un = [un[i] for i in pick]
    val = [it for it in items if it.split == "val"]
    test = [it for it in items if it.split == "test"]
    t0 = time.perf_counter()
    labeller = ImageNetLabeller(cache_dir=cache_root / "semantics")
    labels = []
    for start in range(0, len(un), LABEL_CHUNK):  # each chunk is cached as it finishes
        chunk = [it.image for it in un[start:start + LABEL_CHUNK]]
        if pseudo == "regional":
            labels += labeller.regional_labels(chunk, grid=(2, 2), top_k=1)
        else:
            labels += labeller.global_labels(chunk, top_k=5)
        log.info("labelled %d/%d un-annotated images (%.0f s)", len(labels), len(un), time.perf_counter() - t0)
    pseudo_texts = [pseudo_text(lab) or "object" for lab in labels]
    t_label = time.perf_counter() - t0
    t0 = time.perf_counter()
    img_enc = create_encoder("efficientnet-lite0")
    txt_enc = create_encoder("minilm-l6")
    regions = {name: encode_regions(group, img_enc, cache_dir=feats_cache, grid=3)  # type: ignore[arg-type]
               for name, group in (("ann", ann), ("un", un), ("val", val), ("test", test))}
    annotated = PairedFeatures.one_to_one(regions["ann"], _texts(ann, txt_enc, feats_cache))
    s = encode_texts(txt_enc, pseudo_texts, cache_dir=feats_cache).feats  # type: ignore[arg-type]
    unannotated = PairedFeatures.one_to_one(regions["un"], s)
    evals = []
    for name, group in (("val", val), ("test", test)):
        texts, rel = build_text_queries(group, texts_per_item=1)
        evals.append(RetrievalFeatures(regions[name], encode_texts(txt_enc, texts, cache_dir=feats_cache).feats,  # type: ignore[arg-type]
                                       rel))
    info = {"annotated_images": len(ann), "unannotated_images": len(un), "val_images": len(val),
            "test_images": len(test), "label_seconds": round(t_label, 1),
            "encode_seconds": round(time.perf_counter() - t0, 1),
            "pseudo_examples": [f"{u.id} -> {p!r}" for u, p in list(zip(un, pseudo_texts))[:5]]}
    return annotated, unannotated, evals[0], evals[1], info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, default=None, help="emoji manifest (default: <cache>/datasets/emoji)")
    ap.add_argument("--pseudo", choices=("regional", "global"), default="regional")
    ap.add_argument("--limit-unannotated", type=int, default=None, help="label only a seeded subset")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--prepare-only", action="store_true", help="fill the caches and stop")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sparse" / "sparse_emoji.md")
    ap.add_argument("--runs", type=Path, default=None, help="folder for checkpoints (default: none kept)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    manifest = args.manifest or Path(default_cache_dir()) / "datasets" / "emoji" / "manifest.jsonl"
    annotated, unannotated, val, test, info = prepare(manifest, pseudo=args.pseudo, seed=0,
                                                      limit_unannotated=args.limit_unannotated)
    log.info("data: %s", json.dumps(info))
    if args.prepare_only:
        return 0
    rows, raw = [], {}
    for name in args.variants:
        for seed in args.seeds:
            cfg = dataclasses.replace(VARIANTS[name], seed=seed)
            t0 = time.perf_counter()
            res = train_a3vse(annotated, unannotated, val, cfg,
                              None if args.runs is None else args.runs / f"{name.replace(' ', '')}-s{seed}")
            secs = time.perf_counter() - t0
            m = evaluate_a3vse(res.model, test)
            raw[f"{name} seed{seed}"] = {"test": m, "val": res.best_val, "best_epoch": res.best_epoch,
                                         "seconds": secs}
            log.info("%s seed %d: test rsum %.1f (val %.1f, epoch %d, %.0f s)", name, seed, m["rsum"],
                     res.best_val["rsum"], res.best_epoch, secs)
            rows.append([name, seed, *(f"{m[c]:.1f}" for c in COLUMNS), f"{res.best_val['rsum']:.1f}",
                         res.best_epoch, f"{secs:.0f}"])
    table = markdown(["variant", "seed", *COLUMNS, "val rsum", "best epoch", "train s"], rows)
    text = "\n".join([
        "# A3VSE on sparse emoji (10 % x 1, by group)", "",
        f"Command: `XMR_CACHE_DIR={default_cache_dir()} {command_line()}`", "",
        f"Data: {info['annotated_images']} annotated train images (1 text each), {info['unannotated_images']} "
        f"un-annotated with {args.pseudo} pseudo-texts; val {info['val_images']} images, test "
        f"{info['test_images']} images (CLDR name as the one text per image). "
        f"Pseudo-text examples: {'; '.join(info['pseudo_examples'])}.", "",
        f"Shared config: `{BASE}`", "",
        "Test split (29 subgroups unseen in training), model chosen by val rsum:", "",
        table, "", load_note(), "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
