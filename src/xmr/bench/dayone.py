"""What the day-one benchmarks share (``benchmarks/dayone_zeroshot.py``, ``benchmarks/dayone_tags.py``):
one split's cached EfficientNet-Lite0 + MiniLM features with its ImageNet logits, and the scores of
two sides' rows on it."""

from __future__ import annotations

import numpy as np
import torch

from xmr.data import fetch_dataset, read_items, select_split
from xmr.encoders import create_image_encoder, create_text_encoder
from xmr.evaluation.label_metrics import label_retrieval_metrics
from xmr.evaluation.protocol import chance_of_protocol, evaluate_embeddings
from xmr.workflows.features import FeatureSet, encode_items


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
