"""``xmr eval``: score a trained run on a split with the standard cross-modal protocol."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from xmr.evaluation.metrics import label_retrieval_metrics
from xmr.evaluation.protocol import evaluate_embeddings
from xmr.models import JointModel, load_model
from xmr.utils.io import save_json
from xmr.workflows.features import FeatureSet, encode_items
from xmr.workflows.run_config import load_run_config, run_encoders, run_items

log = logging.getLogger(__name__)


def _label_metrics(fs: FeatureSet, img: np.ndarray) -> dict[str, float]:
    """Image->image mAP / CMC by ``label`` and by ``group`` (e.g. the same emoji in other styles)."""
    out: dict[str, float] = {}
    for field in ("label", "group"):
        values = [getattr(it, field) for it in fs.items]
        if any(v is None for v in values) or len(set(values)) == len(values):
            continue  # no such labels, or every item its own class: nothing to retrieve
        m = label_retrieval_metrics(img, values, img, values, exclude_self=True)
        out.update({f"i2i_{field}_{k}": float(v) for k, v in m.items()})
    return out


def evaluate_features(model: JointModel, fs: FeatureSet, *, mode: str = "full") -> dict[str, float]:
    """Cross-modal (and, where labels exist, label-level) metrics of ``model`` on ``fs``."""
    img = model.embed_numpy(fs.image_feats, "image")
    txt = model.embed_numpy(fs.text_feats, "text")
    metrics = {k: v for k, v in evaluate_embeddings(img, txt, fs.relevance, mode=mode).items()
               if isinstance(v, (int, float))}
    metrics.update(_label_metrics(fs, img))
    return metrics


def evaluate_run(run_dir: str | Path, *, split: str = "test", mode: str = "full", manifest: str | None = None,
                 texts_per_item: int | None = None, cache_dir: str | Path | None = None,
                 command: str | None = None, show_progress: bool | None = None) -> dict[str, float]:
    """Evaluate the best checkpoint of ``run_dir`` on ``split`` and write ``eval-<split>-<mode>.json``.

    Args:
        run_dir: a folder made by ``xmr train``.
        split: the manifest split to score (``test`` by default).
        mode: ``full`` (whole split) or ``1k`` (mean over 5 folds of 1,000 images, COCO 1K).
        manifest: another manifest to evaluate on (default: the run's own).
        texts_per_item: texts per item used as queries (default: the run's ``eval_texts_per_item``).
        command: the command line that asked for this, stored beside the numbers.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    model = load_model(run_dir / "best")
    n_texts = texts_per_item if texts_per_item is not None else cfg.eval_texts_per_item
    fs = encode_items(run_items(cfg, manifest=manifest, split=split), **run_encoders(cfg),  # type: ignore[arg-type]
                      cache_dir=cache_dir, texts_per_item=n_texts, show_progress=show_progress)
    metrics = evaluate_features(model, fs, mode=mode)
    save_json(run_dir / f"eval-{split}-{mode}.json",
              {"metrics": metrics, "split": split, "mode": mode, "manifest": manifest or cfg.manifest,
               "texts_per_item": n_texts, "model_id": model.model_id, "command": command})
    return metrics
