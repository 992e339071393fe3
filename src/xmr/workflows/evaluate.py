"""``xmr eval``: score a trained run on a split with the standard cross-modal protocol.

With re-ranking (``rerank=["diffusion"]``, ``xmr eval --rerank diffusion``) the same metrics are
computed a second time on re-ranked lists, fitting the re-ranker in memory on the evaluated
split: for text->image on the split's images (the texts as the other modality), for
image->text on its texts. Each query's ``shortlist`` best cosine results are re-ordered and
lifted above everything else; the rest of the ranking keeps its cosine order, so Recall@K,
medr and meanr are those of the full re-ranked list. Image->image mAP/CMC are not re-ranked.
The re-rankers are transductive here (the split's texts are the queries and the other
modality's graph nodes), but never see the image-text pairs: geodesic alignment then uses
ICP on mutual nearest neighbours instead of the pairs a search gallery provides.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import sparse

from xmr.errors import XmrError
from xmr.evaluation.metrics import cross_modal_metrics_from_ranks, first_relevant_ranks, label_retrieval_metrics
from xmr.evaluation.overlap import overlap_indicator, positive_negative_sims
from xmr.evaluation.protocol import chance_of_protocol, evaluate_embeddings
from xmr.evaluation.similarity import is_inner_product
from xmr.models import JointModel
from xmr.rerank.registry import create_reranker
from xmr.rerank.reranker import GalleryVectors, Modality, Reranker, order_shortlist
from xmr.runs.config import load_run, run_encoders, run_items
from xmr.runtime.device import CPU_FP32, Runtime
from xmr.utils.io import check_writable, save_json
from xmr.workflows.features import FeatureSet, encode_items

log = logging.getLogger(__name__)

EVAL_MODES = ("full", "1k")
#: the prefix of the expected metrics of a random ranking in :func:`evaluate_run`'s result (``chance/rsum``)
#: and their section of the results JSON
CHANCE = "chance"


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


def reranked_ranks(reranker: Reranker, queries: np.ndarray, query_own: np.ndarray | None, gallery: np.ndarray,
                   relevance: sparse.csr_matrix, *, modality: Modality, block: int = 256
                   ) -> tuple[np.ndarray, int]:
    """First-relevant ranks of the re-ranked lists of ``queries`` over ``gallery``.

    Each query's ``shortlist`` best cosine results are re-ordered by the fitted ``reranker`` and
    given scores above every other gallery item (decreasing in the new order); the others keep
    their cosines. The ranks are then counted exactly as for the plain ranking (ties against the
    query), so the two sets of metrics are comparable.

    Args:
        reranker: fitted on the gallery, for the target ``gallery`` is.
        queries: joint-space queries. Shape: (n_q, d).
        query_own: their own encoder features. Shape: (n_q, d_own), or None.
        gallery: joint-space gallery. Shape: (n_g, d).
        relevance: True where gallery item g is relevant to query q. Shape: (n_q, n_g).
        modality: what the queries are, ``"text"`` or ``"image"``.

    Returns:
        ``(ranks, n_unscored)``: 0-based ranks, shape (n_q,), and how many queries the re-ranker
        could not score at all (they keep the cosine order).
    """
    n_q, n_g = len(queries), len(gallery)
    width = min(reranker.params.shortlist, n_g)
    lift = np.float64(2.0) + width  # above any cosine (<= 1) once the position is subtracted
    ranks = np.empty(n_q, dtype=np.int64)
    n_unscored = 0
    for a in range(0, n_q, block):
        b = min(a + block, n_q)
        sims = queries[a:b] @ gallery.T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :width]
        scores, scored = reranker.shortlist_scores(queries[a:b], None if query_own is None else query_own[a:b],
                                                   np.take_along_axis(sims, top, axis=1), top,
                                                   query_modality=modality)
        n_unscored += int((~scored.any(axis=1)).sum())
        _, ids = order_shortlist(scores, scored, top)
        lifted = sims.astype(np.float64)
        np.put_along_axis(lifted, ids, np.broadcast_to(lift - np.arange(width), ids.shape), axis=1)
        ranks[a:b] = first_relevant_ranks(lifted, relevance[a:b])
    return ranks, n_unscored


def _folds(relevance: sparse.csr_matrix, mode: str, fold_size: int = 1000, n_folds: int = 5
           ) -> list[tuple[slice, np.ndarray]]:
    """(images, text columns) of each evaluation fold, as :func:`evaluate_embeddings` cuts them."""
    if mode == "full":
        return [(slice(0, relevance.shape[0]), np.arange(relevance.shape[1]))]
    return [(slice(a, a + fold_size), np.unique(relevance[a:a + fold_size].indices))
            for a in range(0, fold_size * n_folds, fold_size)]


def rerank_metrics(reranker: Reranker, fs: FeatureSet, img: np.ndarray, txt: np.ndarray, *,
                   mode: str = "full") -> dict[str, float]:
    """Cross-modal metrics of re-ranked lists, the re-ranker fit on each evaluated gallery.

    Returns the keys of :func:`cross_modal_metrics_from_ranks` (means over folds in ``1k``
    mode) plus ``t2i_unscored`` / ``i2t_unscored``: queries the re-ranker could not score.
    """
    folds = []
    for rows, cols in _folds(fs.relevance, mode):
        rel = fs.relevance[rows][:, cols].tocsr()
        # no image-text pairs: they are the ground truth being measured (geodesic aligns by ICP)
        gallery = GalleryVectors(img[rows], txt[cols], image_feats=fs.image_feats[rows],
                                 text_feats=fs.text_feats[cols])
        t2i, t2i_un = reranked_ranks(reranker.unfitted_copy().fit(gallery, target="images"), txt[cols],
                                     fs.text_feats[cols], img[rows], rel.T.tocsr(), modality="text")
        i2t, i2t_un = reranked_ranks(reranker.unfitted_copy().fit(gallery, target="texts"), img[rows],
                                     fs.image_feats[rows], txt[cols], rel, modality="image")
        folds.append({**cross_modal_metrics_from_ranks(i2t, t2i), "t2i_unscored": t2i_un, "i2t_unscored": i2t_un})
    summed = ("n_images", "n_texts", "t2i_unscored", "i2t_unscored")
    return {k: float(sum(f[k] for f in folds)) if k in summed else float(np.mean([f[k] for f in folds]))
            for k in folds[0]}


def evaluate_features(model: JointModel, fs: FeatureSet, *, mode: str = "full",
                      rerank: Sequence[Reranker] = ()) -> dict[str, float]:
    """Cross-modal (and, where labels exist, label-level) metrics of ``model`` on ``fs``.

    Each re-ranker in ``rerank`` adds its metrics as ``"<name>/<metric>"`` (see :func:`rerank_metrics`).
    """
    similarity = model.config.similarity
    if rerank and not is_inner_product(similarity):
        raise XmrError(f"re-ranking works on cosine spaces; this model scores by {similarity!r}")
    img = model.embed_numpy(fs.image_feats, "image")
    txt = model.embed_numpy(fs.text_feats, "text")
    metrics = {k: v for k, v in evaluate_embeddings(img, txt, fs.relevance, mode=mode, similarity=similarity).items()
               if isinstance(v, (int, float))}
    metrics.update(_label_metrics(fs, img))
    if is_inner_product(similarity):  # dual-path Eq. 10: overlap of positive and negative pair cosines
        pos, neg = positive_negative_sims(img, txt, fs.relevance, max_negatives=1_000_000, seed=0)
        metrics["overlap_S"] = overlap_indicator(pos, neg)
    for rr in rerank:
        metrics.update({f"{rr.name}/{k}": v for k, v in rerank_metrics(rr, fs, img, txt, mode=mode).items()})
    return metrics


def eval_output_path(run_dir: str | Path, run_manifest: str, *, split: str, mode: str,
                     manifest: str | None = None, out: str | Path | None = None) -> Path:
    """Where :func:`evaluate_run` writes: ``out``, else ``<run>/eval-<split>-<mode>.json`` for the
    run's own manifest, else ``<run>/eval-<manifest stem>-<8 hex of its path>-<split>-<mode>.json``."""
    if out is not None:
        return Path(out)
    run_dir = Path(run_dir)
    if manifest is None or Path(manifest).resolve() == Path(run_manifest).resolve():
        return run_dir / f"eval-{split}-{mode}.json"
    resolved = Path(manifest).resolve()
    tag = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
    return run_dir / f"eval-{resolved.stem}-{tag}-{split}-{mode}.json"


def evaluate_run(run_dir: str | Path, *, split: str = "test", mode: str = "full", manifest: str | None = None,
                 texts_per_item: int | None = None, cache_dir: str | Path | None = None,
                 rerank: Sequence[str | Reranker] = (), command: str | None = None,
                 show_progress: bool | None = None, skip_bad: bool = False,
                 out: str | Path | None = None, runtime: Runtime | None = None) -> dict[str, float]:
    """Evaluate the best checkpoint of ``run_dir`` on ``split`` and write the results as JSON.

    The file is :func:`eval_output_path`: ``eval-<split>-<mode>.json`` for the run's own data,
    a name carrying the manifest for another one, so results never overwrite each other.

    Args:
        run_dir: a folder made by ``xmr train``.
        split: the manifest split to score (``test`` by default).
        mode: ``full`` (whole split) or ``1k`` (mean over 5 folds of 1,000 images, COCO 1K).
        manifest: another manifest to evaluate on (default: the run's own).
        texts_per_item: texts per item used as queries (default: the run's ``eval_texts_per_item``).
        rerank: re-ranking methods (names, or unfitted re-rankers with their parameters) to
            evaluate beside the plain ranking; their metrics come back as ``"<name>/<metric>"``
            and go to the JSON's ``rerank`` section with the parameters.
        The expected metrics of a random ranking of the same gallery (exact, from the relevance
        matrix: :func:`~xmr.evaluation.protocol.chance_of_protocol`) come back as
        ``"chance/<metric>"`` and go to the JSON's ``chance`` section.
        command: the command line that asked for this, stored beside the numbers.
        skip_bad: evaluate around unreadable images (listed under ``skipped`` in the JSON)
            instead of refusing.
        out: write the results here instead.
        runtime: the device and precision the encoders and the model run at (None: the CPU at fp32);
            the features and embeddings come back float32 on the CPU, where the metrics are computed.
    """
    run_dir = Path(run_dir)
    runtime = runtime or CPU_FP32
    rerankers = [create_reranker(r) if isinstance(r, str) else r for r in rerank]
    if mode not in EVAL_MODES:
        raise XmrError(f"unknown evaluation mode {mode!r}; use {' or '.join(EVAL_MODES)}")
    cfg, model = load_run(run_dir)
    n_texts = texts_per_item if texts_per_item is not None else cfg.eval_texts_per_item
    target = eval_output_path(run_dir, cfg.manifest, split=split, mode=mode, manifest=manifest, out=out)
    check_writable(target.parent, "results folder")  # refuse now, not after encoding
    fs = encode_items(run_items(cfg, manifest=manifest, split=split, skip_bad=skip_bad),
                      **run_encoders(cfg, model.vocab, runtime),
                      cache_dir=cache_dir, texts_per_item=n_texts, show_progress=show_progress, skip_bad=skip_bad)
    model.to(runtime.device)
    with runtime.autocast():
        metrics = evaluate_features(model, fs, mode=mode, rerank=rerankers)
    chance = chance_of_protocol(fs.relevance, mode=mode)
    metrics.update({f"{CHANCE}/{k}": v for k, v in chance.items()})
    plain = {k: v for k, v in metrics.items() if "/" not in k}
    reranked = {rr.name: {"params": rr.params, "directions": ["t2i", "i2t"],
                          "metrics": {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith(f"{rr.name}/")}}
                for rr in rerankers}
    save_json(eval_output_path(run_dir, cfg.manifest, split=split, mode=mode, manifest=manifest, out=out),
              {"metrics": plain, "split": split, "mode": mode, "manifest": manifest or cfg.manifest,
               "texts_per_item": n_texts, "model_id": model.model_id, CHANCE: chance,
               **({"rerank": reranked} if reranked else {}),
               **({"skipped": list(fs.skipped)} if fs.skipped else {}), "command": command})
    return metrics
