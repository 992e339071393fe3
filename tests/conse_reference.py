"""References the day-one encoder tests share (``test_conse.py``, ``test_conse_tags.py``): the library's own
EfficientNet-Lite0 forward for reference logits, a run's ``xmr eval`` figures with the texts it queried, and
the metrics of a brute-force score matrix."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import sparse

from xmr.data import Item, read_manifest, select_split
from xmr.encoders.conse import ConseImageNet
from xmr.evaluation.metrics import cross_modal_metrics_from_ranks, first_relevant_ranks


def library_logits(enc: ConseImageNet, batch: Sequence[np.ndarray]) -> np.ndarray:
    """The ImageNet logits of uint8 HxWx3 arrays by the package model's own forward (stem, blocks, head,
    pooling, dropout in eval, fc), on EfficientNet-Lite0's input scaling. Shape: (len(batch), 1000)."""
    with torch.inference_mode():
        x = (torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255.0 - 0.498) / 0.502
        return enc.base.model(x).numpy()  # type: ignore[attr-defined]


def evaluated_test_split(run: Path, manifest: str | Path) -> tuple[dict[str, float], list[Item], list[str], np.ndarray]:
    """What ``xmr eval RUN --split test`` wrote (its metrics), the test items, the sorted query texts it used
    (each item's first ``eval_texts_per_item`` texts, from ``run.json``), and their (images, texts) bool
    relevance."""
    n_texts = json.loads((run / "run.json").read_text())["eval_texts_per_item"]
    got = json.loads((run / "eval-test-full.json").read_text())["metrics"]
    items = select_split(read_manifest(manifest), "test")
    texts = sorted({t for it in items for t in it.texts[:n_texts]})
    return got, items, texts, np.array([[t in it.texts[:n_texts] for t in texts] for it in items])


def brute_metrics(sims: np.ndarray, rel: np.ndarray) -> dict[str, float]:
    """R@K, medr and rsum both ways of an (images, texts) score matrix against relevance ``rel``."""
    return cross_modal_metrics_from_ranks(first_relevant_ranks(sims, sparse.csr_matrix(rel)),
                                          first_relevant_ranks(sims.T, sparse.csr_matrix(rel.T)))
