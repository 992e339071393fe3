"""The day-one zero-shot model (no training, no captions): ConSE image features in MiniLM's space.

Each image is :class:`xmr.encoders.conse.ConseImageNet`'s vector: the probability-weighted mean of
the MiniLM-L6 embeddings of its EfficientNet-Lite0 ImageNet-1k classifier's top-K classes (ConSE,
Norouzi et al., ICLR 2014), and each query text its MiniLM-L6 embedding; scores are cosines, as a run
``--image-encoder conse-imagenet --text-encoder minilm-l6 --head identity`` scores them.

The settings (the class texts: first lemma or all, prompt set, gloss weight; the weighting: K and
the softmax temperature) are chosen by **val** rsum on the emoji zero-shot split (189 emoji never
seen by any model here, in 4 styles, the CLDR name as the one query text per image); scene-captions'
val split is shown beside the 15 best (synthetic shapes: ImageNet classes do not name them, so it can only
show harm). The chosen settings and plain ConSE (class names, K=10, T=1: issue 28's probe) are then
scored once on **test**: R@1/5/10 both directions, rsum, the exact chance level, and image->image
mAP by group (the same emoji in other styles) as ``xmr eval`` reports it.

For speed the sweep reuses the cached pooled EfficientNet-Lite0 features: the logits are the model's
own classifier applied to them (``EfficientNetLite0.logits`` is exactly that), checked against the
registered encoder's ``encode_batch`` on a few test images (the largest difference is printed).

Example (about 5 minutes on 2 busy cores once the features are cached)::

    python benchmarks/dayone_zeroshot.py
"""

from __future__ import annotations

import argparse
import itertools
import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from xmr.bench.common import command_line, load_note, markdown
from xmr.bench.dayone import METRICS, encoder_gap, scores_table, split_features, split_scores
from xmr.encoders import TextEncoder, create_text_encoder
from xmr.encoders.conse import DAYONE, NAMES_ONLY, ConseConfig, ConseImageNet, class_table, conse_vectors
from xmr.evaluation.protocol import evaluate_embeddings
from xmr.utils.arrays import l2_normalize
from xmr.utils.io import atomic_write, atomic_write_text, save_json
from xmr.workflows.features import FeatureSet

log = logging.getLogger("dayone_zeroshot")

#: dataset -> texts per item used as queries (emoji: the CLDR name; scenes: the five captions)
DATASETS = {"emoji": 1, "scene-captions": None}
TEXT_SETTINGS = [dict(lemmas=lem, prompts=p, gloss_weight=g)
                 for lem in ("first", "all") for p in ("none", "photo", "ensemble") for g in (0.0, 0.5, 1.0, 2.0)]
TOP_K = (1, 3, 5, 10, 20, 50, 100)
TEMPERATURES = (0.5, 1.0, 2.0, 3.0, 5.0)


class MemoText:
    """A text encoder that embeds each distinct string once (the sweep's class tables share most)."""

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder, self.dim = encoder, encoder.dim
        self.memo: dict[str, np.ndarray] = {}

    def encode_batch(self, inputs: list[str]) -> np.ndarray:
        new = list(dict.fromkeys(t for t in inputs if t not in self.memo))
        for i in range(0, len(new), 256):
            self.memo.update(zip(new[i:i + 256], self.encoder.encode_batch(new[i:i + 256]), strict=True))
        return np.stack([self.memo[t] for t in inputs])


def scores(fs: FeatureSet, img: np.ndarray) -> dict[str, float]:
    """:func:`~xmr.bench.dayone.split_scores` of image rows against the split's MiniLM texts (cosine)."""
    return split_scores(fs, img, fs.text_feats)


def sweep(data: dict[str, tuple[FeatureSet, np.ndarray]], tables: dict[str, np.ndarray], *,
          shown: int = 15) -> list[dict[str, object]]:
    """Val metrics of every (text setting, K, T) on emoji; the ``shown`` best also on the other datasets."""
    def row_of(key: str, k: int, t: float, names: list[str]) -> dict[str, object]:
        row: dict[str, object] = {"texts": key, "top_k": k, "temperature": t}
        for name in names:
            fs, logits = data[name]
            m = scores(fs, conse_vectors(logits, tables[key], top_k=k, temperature=t))
            row[name] = {m_: m[m_] for m_ in (*METRICS, "chance_rsum", "i2i_group_mAP") if m_ in m}
        return row

    rows = [row_of(key, k, t, ["emoji"]) for key in tables for k, t in itertools.product(TOP_K, TEMPERATURES)]
    rows.sort(key=lambda r: -r["emoji"]["rsum"])  # type: ignore[index]
    rows[:shown] = [row_of(str(r["texts"]), int(r["top_k"]), float(r["temperature"]), list(data))  # type: ignore[call-overload]
                    for r in rows[:shown]]
    return rows


def tag_fusion(fs: FeatureSet, logits: np.ndarray, cfg: ConseConfig, lambdas: tuple[float, ...]) -> dict[str, float]:
    """Val rsum of ``cos(ConSE, MiniLM) + lambda * s_g . q`` (A3VSE's tag baseline, ``xmr.data.imagenet_tags``,
    as a second signal), exactly, as the inner product of ``[x, sqrt(lambda) s_g]`` and ``[t, sqrt(lambda) q]``."""
    from xmr.semantics import TagBaseline, WordNet

    q = TagBaseline(WordNet()).query_vectors(fs.texts)
    z = logits - logits.max(axis=1, keepdims=True)
    probs = (np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)).astype(np.float32)
    img = ConseImageNet(cfg).from_logits(logits)
    unit_p = l2_normalize(probs)
    unit_q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    out = {}
    for lam in lambdas:
        both = (np.hstack([img, np.sqrt(lam) * probs]), np.hstack([fs.text_feats, np.sqrt(lam) * q]))
        out[f"s.q, lambda {lam}"] = float(evaluate_embeddings(*both, fs.relevance)["rsum"])  # type: ignore[arg-type]
        # servable as unit vectors: (cos(x, t) + lambda cos(s, q)) / (1 + lambda)
        unit = (np.hstack([img, np.sqrt(lam) * unit_p]), np.hstack([fs.text_feats, np.sqrt(lam) * unit_q]))
        out[f"cos(s, q), lambda {lam}"] = float(evaluate_embeddings(*unit, fs.relevance)["rsum"])  # type: ignore[arg-type]
    return out


def text_key(setting: dict[str, object]) -> str:
    return f"{setting['lemmas']}/{setting['prompts']}/gloss{setting['gloss_weight']}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "dayone")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    load = load_note()
    val = {name: split_features(name, "val", n) for name, n in DATASETS.items()}
    tables = {}
    memo = MemoText(create_text_encoder("minilm-l6"))
    for setting in TEXT_SETTINGS:
        enc = ConseImageNet(ConseConfig(**setting))  # type: ignore[arg-type]
        cached = enc.table_path().is_file()  # else the same function, each distinct string embedded once
        if not cached:
            table = class_table(enc.texts, memo, gloss_weight=enc.config.gloss_weight)  # type: ignore[arg-type]
            enc.table_path().parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(enc.table_path()) as fh:
                np.save(fh, table)
        tables[text_key(setting)] = enc.table
    rows = sweep(val, tables)
    best = max(rows, key=lambda r: r["emoji"]["rsum"])  # type: ignore[index]
    chosen = replace(ConseConfig(**{s: v for s, v in (TEXT_SETTINGS[[text_key(s) for s in TEXT_SETTINGS]
                                                                     .index(best["texts"])]).items()}),  # type: ignore[arg-type]
                     top_k=int(best["top_k"]), temperature=float(best["temperature"]))  # type: ignore[arg-type]
    log.info("chosen on emoji val: %s (registered day-one settings: %s)", chosen, DAYONE)

    fusion = tag_fusion(*val["emoji"], chosen, (0.0, 0.3, 1.0, 3.0, 10.0))
    log.info("tag-baseline fusion on emoji val (lambda: rsum): %s", fusion)

    test = {name: split_features(name, "test", n) for name, n in DATASETS.items()}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for label, cfg in (("ConSE, class names (K=10, T=1)", NAMES_ONLY), ("day-one (val-chosen)", chosen)):
        enc = ConseImageNet(cfg)
        results[label] = {name: scores(fs, enc.from_logits(logits)) for name, (fs, logits) in test.items()}
    # the sweep's shortcut equals the product's encoder on real images
    gap = encoder_gap(ConseImageNet(chosen), *test["emoji"])

    sweep_rows = sorted(rows, key=lambda r: -r["emoji"]["rsum"])[:15]  # type: ignore[index]
    sweep_table = markdown(["class texts", "K", "T", "emoji val rsum", "emoji val group mAP (%)", "scenes val rsum"],
                           [[r["texts"], r["top_k"], r["temperature"], f"{r['emoji']['rsum']:.1f}",  # type: ignore[index]
                             f"{r['emoji']['i2i_group_mAP']:.1f}", f"{r['scene-captions']['rsum']:.1f}"]  # type: ignore[index]
                            for r in sweep_rows])
    by_text = markdown(["class texts", "best emoji val rsum", "at K, T"],
                       [[key, f"{b['emoji']['rsum']:.1f}", f"{b['top_k']}, {b['temperature']}"]  # type: ignore[index]
                        for key in tables
                        for b in [max((r for r in rows if r["texts"] == key), key=lambda r: r["emoji"]["rsum"])]])  # type: ignore[index]
    text = "\n\n".join([
        "# The day-one zero-shot model: ConSE in MiniLM's space, no training, no captions",
        f"Command: `{command_line()}`",
        f"Chosen on emoji val rsum: `{asdict(chosen)}`; the registered `conse-imagenet` has "
        f"{'these settings' if chosen == DAYONE else 'other settings: ' + str(asdict(DAYONE))}. "
        "Test, touched once (R@K in percent):",
        scores_table(results),
        "Val sweep, the 15 best by emoji val rsum (class texts = lemmas / prompt set / gloss weight):",
        sweep_table,
        "Each class-text setting at its best K, T (emoji val):",
        by_text,
        "A second signal, A3VSE's tag baseline (WordNet expansion of the query against the full class "
        "probabilities, `xmr.data.imagenet_tags`), added to the cosine with weight lambda, emoji val rsum "
        "(`s.q`: the baseline's score as is; `cos(s, q)`: both unit vectors, a form an index of unit vectors "
        "could serve): " + ", ".join(f"{k}: {v:.1f}" for k, v in fusion.items()) + ".",
        f"The sweep's logits (the classifier on the cached pooled features) against the registered encoder's "
        f"`encode_batch` on 8 test images: largest difference {gap:.2e}.",
        f"{load} at start.",
    ]) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "dayone.md", text)
    save_json(args.out / "dayone.json", {"command": command_line(), "chosen": asdict(chosen), "test": results,
                                         "val_sweep": rows, "encoder_gap": gap,
                                         "tag_fusion_emoji_val_rsum": fusion})
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
