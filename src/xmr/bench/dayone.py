"""What the day-one benchmarks share (``benchmarks/dayone_zeroshot.py``, ``benchmarks/dayone_tags.py``):
one split's cached EfficientNet-Lite0 + MiniLM features with its ImageNet logits, the scores of two
sides' rows on it, the shortcut's gap to a registered encoder, and the test table."""

from __future__ import annotations

import numpy as np
import torch

from xmr.bench.common import markdown
from xmr.data import fetch_dataset, read_items, select_split
from xmr.encoders import create_image_encoder, create_text_encoder
from xmr.encoders.conse import ConseImageNet
from xmr.evaluation.label_metrics import label_retrieval_metrics
from xmr.evaluation.protocol import chance_of_protocol, evaluate_embeddings
from xmr.workflows.features import FeatureSet, encode_items

#: the test table's recall columns
METRICS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")


def split_features(name: str, split: str, texts_per_item: int | None) -> tuple[FeatureSet, np.ndarray]:
    """The built-in dataset ``name``'s ``split``: pooled EfficientNet-Lite0 features and MiniLM texts
    (through the feature cache), and the images' ImageNet logits. Shape of the logits: (N, 1000)."""
    items = select_split(read_items(fetch_dataset(name)), split)
    image = create_image_encoder("efficientnet-lite0")
    fs = encode_items(items, image_encoder=image, text_encoder=create_text_encoder("minilm-l6"),
                      texts_per_item=texts_per_item, show_progress=False)
    with torch.inference_mode():
        logits = image.model._fc(torch.from_numpy(fs.image_feats)).numpy()  # type: ignore[attr-defined]
    return fs, logits


def split_scores(fs: FeatureSet, img: np.ndarray, txt: np.ndarray) -> dict[str, float]:
    """Cross-modal metrics of image rows ``img`` against text rows ``txt`` (``fs``'s relevance), the exact
    chance rsum, and image->image mAP by group where groups repeat."""
    out = {k: float(v) for k, v in evaluate_embeddings(img, txt, fs.relevance).items() if isinstance(v, (int, float))}
    out["chance_rsum"] = chance_of_protocol(fs.relevance)["rsum"]
    groups = [it.group for it in fs.items]
    if all(g is not None for g in groups) and len(set(groups)) < len(groups):
        out["i2i_group_mAP"] = label_retrieval_metrics(img, groups, img, groups, exclude_self=True)["map"]
    return out


def encoder_gap(enc: ConseImageNet, fs: FeatureSet, logits: np.ndarray, n: int = 8) -> float:
    """Largest difference between ``enc``'s own ``encode_batch`` on the first ``n`` images of ``fs`` (an
    emoji split) and its rows from the cached logits (``from_logits``): the benchmarks' shortcut checked
    against the registered encoder on real images."""
    images = [enc.load(fetch_dataset("emoji").parent / it.image) for it in fs.items[:n]]
    return float(np.abs(enc.encode_batch(images) - enc.from_logits(logits[:n])).max())


def scores_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown: one row per model and dataset of ``results`` (model -> dataset -> :func:`split_scores`)."""
    return markdown(["model", "dataset", *METRICS, "chance rsum", "i2i group mAP (%)"],
                    [[label, name, *(f"{m[k]:.1f}" for k in METRICS), f"{m['chance_rsum']:.1f}",
                      f"{m['i2i_group_mAP']:.1f}" if "i2i_group_mAP" in m else "-"]
                     for label, per in results.items() for name, m in per.items()])
