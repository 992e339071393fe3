"""A3VSE's unsupervised WordNet tag baseline on the emoji zero-shot split (the "s_g baseline" row).

What it measures: retrieval with **no image-text pairs at all** [A3VSE, Huang et al., MM 2019,
Sec. 4.3, Tables 2 and 4]. Each image gets a tag vector ``s_g`` from the packaged
EfficientNet-Lite0 ImageNet-1k classifier (:class:`xmr.semantics.labeller.ImageNetLabeller`,
whole image, 224 px): its class probabilities with every class outside the image's top-k global
labels set to zero (``--top-k 5``; ``--top-k 0`` keeps all 1000 probabilities). Each query text is
expanded with WordNet synsets into a k-hot vector ``q`` over the same 1000 classes
(:class:`xmr.data.imagenet_tags.TagBaseline` with its defaults: noun senses of every
word/n-gram, a class matches when the query names its synset or any hypernym of it, no hypernym
expansion of the query). The score is ``r = s_g . q``.

Corpus and protocol follow ``benchmarks/sparse_emoji.py``: the emoji manifest
(``<cache>/datasets/emoji/manifest.jsonl``), the ``val`` and ``test`` splits (test: 29 subgroups
unseen in training), the CLDR name (first text) as the one text per image, identical names merged
into one query (:func:`xmr.evaluation.protocol.build_text_queries`, ``texts_per_item=1``), and
i2t/t2i R@1/5/10 and rsum from :func:`xmr.evaluation.metrics.cross_modal_metrics`. Nothing is
trained, so val is simply a second evaluation split, reported separately.

Ties: most (image, text) scores are exactly 0 (a query names few of the 1000 classes; an image
has k tags). The metrics module breaks ties pessimistically (a relevant item ranks after every
non-relevant item with an equal score), so an all-zero row or column earns nothing; that is the
reported row. As context, a second row breaks ties at random (a seeded jitter smaller than half
the smallest gap between distinct scores, so it never reorders unequal scores), and the number of
queries that match no ImageNet class at all, or no tag of any image (all-zero score row), is
recorded. A row of seeded uniform random scores gives the chance reference.

Labelling goes through the probability cache in ``<cache>/semantics`` in chunks (progress is kept
if interrupted); a second run is free.

Example::

    XMR_CACHE_DIR=/work/xmr-cache .venv/bin/python benchmarks/tag_baseline_emoji.py
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from xmr.bench.common import command_line, load_note, markdown
from xmr.data.imagenet_tags import TagBaseline
from xmr.data.manifest import Item, read_manifest
from xmr.data.wordnet import WordNet
from xmr.evaluation.metrics import cross_modal_metrics
from xmr.evaluation.protocol import build_text_queries
from xmr.semantics.labeller import ImageNetLabeller, top_labels
from xmr.utils.paths import default_cache_dir

log = logging.getLogger("tag_baseline_emoji")

LABEL_CHUNK = 256
COLUMNS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")
SPLITS = ("val", "test")


def label_probs(labeller: ImageNetLabeller, items: list[Item], name: str) -> np.ndarray:
    """Whole-image class probabilities of ``items``, a cached chunk at a time. Shape: (n, 1000)."""
    t0 = time.perf_counter()
    out = []
    for start in range(0, len(items), LABEL_CHUNK):
        out.append(labeller.probabilities([it.image for it in items[start:start + LABEL_CHUNK]]))
        log.info("%s: labelled %d/%d images (%.0f s)", name, min(start + LABEL_CHUNK, len(items)), len(items),
                 time.perf_counter() - t0)
    return np.concatenate(out)


def keep_top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """``s_g``: the probabilities of each image's top-k classes, zero elsewhere (k = 0: all kept).

    The top-k are chosen exactly as :func:`xmr.semantics.labeller.top_labels` (the global labels)
    chooses them: descending probability, ties to the lower class index.
    """
    if k <= 0 or k >= probs.shape[1]:
        return probs.astype(np.float32)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    s = np.zeros_like(probs, dtype=np.float32)
    np.put_along_axis(s, order, np.take_along_axis(probs, order, axis=1), axis=1)
    return s


def random_tie_break(scores: np.ndarray, seed: int) -> np.ndarray:
    """Scores in float64 plus a seeded jitter below half the smallest gap between distinct values.

    Equal scores get a random order; unequal ones keep theirs. The same jitter serves both
    directions (one matrix), like the metrics module expects.
    """
    s = scores.astype(np.float64)
    distinct = np.unique(s)
    gap = float(np.diff(distinct).min()) if distinct.size > 1 else 1.0
    return s + np.random.default_rng(seed).random(s.shape) * 0.49 * gap


def fmt_row(name: str, m: dict[str, float]) -> list[object]:
    return [name, *(f"{m[c]:.1f}" for c in COLUMNS), f"{m['i2t_medr']:.0f}", f"{m['t2i_medr']:.0f}"]


def evaluate_split(items: list[Item], probs: np.ndarray, base: TagBaseline, *, top_k: int, seed: int,
                   class_names: list[str]) -> dict[str, object]:
    """Every row of one split, plus the zero-match counts and a few examples."""
    texts, rel = build_text_queries(items, texts_per_item=1)
    s_g = keep_top_k(probs, top_k)
    q = base.query_vectors(texts)  # (n_texts, 1000) k-hot
    scores = (q @ s_g.T).T  # r = s_g . q, as (n_images, n_texts) for the metrics
    rng_seed = seed + 1
    rows = {
        f"tag baseline (top-{top_k or 'all'}, pessimistic ties)": cross_modal_metrics(scores, rel),
        f"tag baseline (top-{top_k or 'all'}, random tie-break)": cross_modal_metrics(
            random_tie_break(scores, rng_seed), rel),
        "random scores": cross_modal_metrics(np.random.default_rng(seed).random(scores.shape), rel),
    }
    if top_k:
        full = (q @ probs.astype(np.float32).T).T
        rows["tag baseline (all 1000 probs, pessimistic ties)"] = cross_modal_metrics(full, rel)
    no_class = ~q.any(axis=1)
    zero_row = ~(scores > 0).any(axis=0)  # per text: scores 0 against every image
    zero_img = ~(scores > 0).any(axis=1)  # per image: scores 0 against every text
    rel_d = rel.toarray()
    pos_rel = (scores > 0) & rel_d
    matched = [i for i in range(len(texts)) if q[i].any()][:6]
    info = {
        "n_images": len(items), "n_texts": len(texts),
        "queries_matching_no_class": int(no_class.sum()),
        "queries_all_zero_scores": int(zero_row.sum()),
        "images_all_zero_scores": int(zero_img.sum()),
        "relevant_pairs": int(rel_d.sum()), "relevant_pairs_scored_above_zero": int(pos_rel.sum()),
        "texts_with_a_relevant_image_above_zero": int(pos_rel.any(axis=0).sum()),
        "mean_classes_per_query": float(q.sum(axis=1).mean()),
        "distinct_score_values": int(np.unique(scores).size),
        "query_examples": {texts[i]: [class_names[j] for j in np.flatnonzero(q[i])][:8] for i in matched},
        "image_examples": {it.id: [n for n, _ in top_labels(p, class_names, max(top_k, 1))]
                           for it, p in list(zip(items, probs))[:4]},
    }
    return {"metrics": rows, "info": info}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, default=None, help="emoji manifest (default: <cache>/datasets/emoji)")
    ap.add_argument("--top-k", type=int, default=5, help="global labels kept per image in s_g (0: all 1000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random-scores and tie-break rows")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "sparse" / "tag_baseline_emoji.md")
    args = ap.parse_args(argv)
    if args.top_k < 0:
        ap.error("--top-k must be >= 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    t_start = time.perf_counter()
    cache_root = Path(default_cache_dir())
    manifest = args.manifest or cache_root / "datasets" / "emoji" / "manifest.jsonl"
    items = read_manifest(manifest)
    groups = {name: [it for it in items if it.split == name] for name in SPLITS}
    wordnet = WordNet()  # raises XmrError naming `make data` when WordNet is missing
    labeller = ImageNetLabeller(cache_dir=cache_root / "semantics")
    base = TagBaseline(wordnet)
    t0 = time.perf_counter()
    probs = {name: label_probs(labeller, group, name) for name, group in groups.items()}
    t_label = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = {name: evaluate_split(groups[name], probs[name], base, top_k=args.top_k, seed=args.seed,
                                    class_names=labeller.class_names) for name in SPLITS}
    t_score = time.perf_counter() - t0
    total = time.perf_counter() - t_start
    for name in SPLITS:
        for row, m in results[name]["metrics"].items():
            log.info("%s %s: rsum %.1f", name, row, m["rsum"])

    header = ["method", *COLUMNS, "i2t medr", "t2i medr"]
    sections = []
    for name in reversed(SPLITS):  # test first: it is the row that sits beside sparse_emoji.md
        res, info = results[name]["metrics"], results[name]["info"]
        sections += [
            f"## {name} split ({info['n_images']} images, {info['n_texts']} distinct CLDR names)", "",
            markdown(header, [fmt_row(row, m) for row, m in res.items()]), "",
            f"* queries whose WordNet expansion names no ImageNet class: {info['queries_matching_no_class']} "
            f"of {info['n_texts']}; queries scoring 0 against every image (all-zero score row): "
            f"{info['queries_all_zero_scores']} of {info['n_texts']}; images scoring 0 against every query: "
            f"{info['images_all_zero_scores']} of {info['n_images']}",
            f"* relevant (image, text) pairs with a score above 0: {info['relevant_pairs_scored_above_zero']} of "
            f"{info['relevant_pairs']}; texts with at least one such relevant image: "
            f"{info['texts_with_a_relevant_image_above_zero']}; mean classes named per query "
            f"{info['mean_classes_per_query']:.1f}; distinct score values {info['distinct_score_values']}",
            "",
        ]
    test_info = results["test"]["info"]
    examples = "; ".join(f"{t!r} -> {', '.join(c) or '-'}" for t, c in test_info["query_examples"].items())
    img_examples = "; ".join(f"{i} -> {', '.join(c)}" for i, c in test_info["image_examples"].items())
    text = "\n".join([
        "# A3VSE's unsupervised WordNet tag baseline on emoji (no image-text pairs)", "",
        f"Command: `XMR_CACHE_DIR={default_cache_dir()} {command_line()}`", "",
        f"Score `r = s_g . q`: `s_g` = EfficientNet-Lite0 ImageNet-1k probabilities of the whole image, "
        f"{'top-' + str(args.top_k) + ' global labels kept, the rest 0' if args.top_k else 'all 1000 kept'}; "
        "`q` = k-hot over the 1000 classes from the WordNet noun synsets of the query's words/n-grams (a class "
        "matches when the query names its synset or one of its hypernyms; `TagBaseline` defaults). Queries: the "
        "CLDR name, one text per image, identical names merged (as in `sparse_emoji.md`). Nothing is trained.", "",
        "Rows: the tag baseline with the metrics module's pessimistic ties (the reported number), the same "
        f"scores with ties broken at random (seed {args.seed + 1}, context only), seeded uniform random scores "
        f"(seed {args.seed}, chance reference)"
        + (", and the baseline with all 1000 probabilities kept in `s_g`." if args.top_k else "."), "",
        *sections,
        f"Examples (test): queries -> matched classes (first 8): {examples}.", "",
        f"Images -> top-{max(args.top_k, 1)} global labels: {img_examples}.", "",
        f"Runtime: {total:.0f} s in all (labelling {t_label:.0f} s through the cache in `{cache_root / 'semantics'}`, "
        f"scoring and metrics {t_score:.0f} s).", "",
        load_note(), "",
    ])
    raw = {"config": {"manifest": str(manifest), "top_k": args.top_k, "seed": args.seed,
                      "tie_break_seed": args.seed + 1, "tag_depth": base.tag_depth,
                      "query_hypernym_depth": base.query_hypernym_depth, "texts_per_item": 1,
                      "wordnet": str(wordnet.root), "labeller": labeller.model_id},
           "seconds": {"total": round(total, 1), "label": round(t_label, 1), "score": round(t_score, 1)},
           **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
