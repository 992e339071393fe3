"""The standard image-text retrieval protocol: text queries from items, full and 1K-fold scores.

With unique captions this is the Karpathy-split COCO/Flickr30K protocol of VSE++ and SCAN:
every text has one image, every image (usually) five texts; "1k" averages the metrics over
five folds of 1,000 test images (COCO 1K), "full" scores the whole set (COCO 5K, Flickr 1K).
When items share texts (one emoji drawn in several styles), a text is a single query that is
relevant to every item carrying it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from xmr.errors import XmrError
from xmr.evaluation.metrics import (
    Relevance,
    chance_cross_modal_metrics,
    cross_modal_metrics_from_ranks,
    cross_modal_ranks_from_embeddings,
)

if TYPE_CHECKING:
    from xmr.data.manifest import Item

log = logging.getLogger(__name__)

MODES = ("full", "1k")

TABLE_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")
"""The columns of the published cross-modal tables."""

_COUNT_KEYS = ("n_images", "n_texts")


def build_text_queries(
    items: Sequence[Item], *, texts_per_item: int | None = None
) -> tuple[list[str], sparse.csr_matrix]:
    """The pool of text queries of ``items`` and which items each text is relevant to.

    Each item contributes its first ``texts_per_item`` texts (all when None). Identical strings
    are one query, in order of first appearance; it is relevant to every item that has it.

    Args:
        items: the evaluation items (images with their texts).
        texts_per_item: how many of each item's texts to use, e.g. 5 for COCO.

    Returns:
        ``(texts, relevance)``: the unique texts (n_txt) and a boolean CSR matrix with
        ``relevance[i, t]`` True when text ``t`` is one of item ``i``'s texts.
        Shape: (n_items, n_txt).

    Raises:
        XmrError: no items, or an item has no text (it could not be an image query).
    """
    if texts_per_item is not None and int(texts_per_item) < 1:
        raise XmrError(f"texts_per_item must be >= 1 or None, got {texts_per_item}")
    if not items:
        raise XmrError("no items to evaluate")
    index: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for i, item in enumerate(items):
        chosen = item.texts if texts_per_item is None else item.texts[: int(texts_per_item)]
        if not chosen:
            raise XmrError(f"item {item.id!r} has no texts; drop it before text-image evaluation")
        for j in sorted({index.setdefault(t, len(index)) for t in chosen}):
            rows.append(i)
            cols.append(j)
    relevance = sparse.csr_matrix(
        (np.ones(len(rows), dtype=bool), (np.array(rows), np.array(cols))),
        shape=(len(items), len(index)),
    )
    return list(index), relevance


def _check_embeddings(
    img_emb: np.ndarray, txt_emb: np.ndarray, relevance: Relevance
) -> tuple[np.ndarray, np.ndarray, sparse.csr_matrix]:
    img, txt = np.asarray(img_emb), np.asarray(txt_emb)
    if img.ndim != 2 or txt.ndim != 2:
        raise XmrError(f"embeddings must be 2-D, got image {img.shape} and text {txt.shape}")
    if img.shape[1] != txt.shape[1]:
        raise XmrError(f"image embeddings have dimension {img.shape[1]}, text embeddings {txt.shape[1]}")
    rel = sparse.csr_matrix(relevance, dtype=bool)
    rel.eliminate_zeros()
    if rel.shape != (img.shape[0], txt.shape[0]):
        raise XmrError(f"relevance has shape {rel.shape}, expected (n_images, n_texts) = "
                       f"({img.shape[0]}, {txt.shape[0]})")
    for name, emb in (("image", img), ("text", txt)):
        bad = ~np.isfinite(emb).all(axis=1)
        if bad.any():
            raise XmrError(f"{name} embedding {int(np.flatnonzero(bad)[0])} contains NaN or inf")
    no_text = np.flatnonzero(np.diff(rel.indptr) == 0)
    if no_text.size:
        raise XmrError(f"image {int(no_text[0])} has no relevant text")
    no_image = np.flatnonzero(np.bincount(rel.indices, minlength=rel.shape[1]) == 0)
    if no_image.size:
        raise XmrError(f"text {int(no_image[0])} is relevant to no image")
    return img, txt, rel


def _fold_mean(
    img: np.ndarray, txt: np.ndarray, rel: sparse.csr_matrix, fold_size: int, n_folds: int,
    ks: Sequence[int], similarity: str = "cosine",
) -> dict[str, float]:
    """Metrics averaged over consecutive folds of ``fold_size`` images and their texts."""
    folds = []
    for f in range(n_folds):
        a, b = f * fold_size, (f + 1) * fold_size
        fold_rel = rel[a:b]
        cols = np.unique(fold_rel.indices)  # the texts of this fold's images
        i2t, t2i = cross_modal_ranks_from_embeddings(img[a:b], txt[cols], fold_rel[:, cols], similarity=similarity)
        folds.append(cross_modal_metrics_from_ranks(i2t, t2i, ks=ks))
    out: dict[str, float] = {}
    for key in folds[0]:
        values = [m[key] for m in folds]
        out[key] = int(sum(values)) if key in _COUNT_KEYS else float(np.mean(values))
    return out


def evaluate_embeddings(
    img_emb: np.ndarray,
    txt_emb: np.ndarray,
    relevance: Relevance,
    *,
    mode: str = "full",
    fold_size: int = 1000,
    n_folds: int = 5,
    ks: Sequence[int] = (1, 5, 10),
    similarity: str = "cosine",
) -> dict[str, float | str]:
    """Image->text and text->image retrieval metrics of L2-normalised embeddings.

    Similarities are ``img_emb @ txt_emb.T`` (or the model's ``similarity``, e.g. GXN's
    order-violation score), computed a block of images at a time.

    Args:
        img_emb: image embeddings, L2-normalised. Shape: (n_img, d).
        txt_emb: text embeddings, L2-normalised. Shape: (n_txt, d).
        relevance: True where text ``t`` describes image ``i`` (see :func:`build_text_queries`).
            Shape: (n_img, n_txt).
        mode: ``"full"`` scores the whole set; ``"1k"`` averages over ``n_folds`` consecutive
            folds of ``fold_size`` images, each searched against the texts of its own images
            (the COCO 1K protocol). Images beyond ``n_folds * fold_size`` are ignored.
        fold_size: images per fold in ``"1k"`` mode.
        n_folds: folds in ``"1k"`` mode.
        ks: recall cut-offs.
        similarity: a registered :data:`xmr.evaluation.similarity.SIMILARITIES` name.

    Returns:
        The keys of :func:`~xmr.evaluation.metrics.cross_modal_metrics` (means over folds in
        ``"1k"`` mode, where ``n_images``/``n_texts`` are totals over folds), plus ``mode`` and
        ``n_folds`` (1 in ``"full"`` mode).

    Raises:
        XmrError: mismatched shapes, non-finite embeddings, an image without texts or a text
            without images, or fewer than ``n_folds * fold_size`` images in ``"1k"`` mode.
    """
    if mode not in MODES:
        raise XmrError(f"mode must be one of {MODES}, got {mode!r}")
    if int(fold_size) < 1 or int(n_folds) < 1:
        raise XmrError(f"fold_size and n_folds must be >= 1, got {fold_size} and {n_folds}")
    img, txt, rel = _check_embeddings(img_emb, txt_emb, relevance)
    out: dict[str, float | str]
    if mode == "full":
        i2t, t2i = cross_modal_ranks_from_embeddings(img, txt, rel, similarity=similarity)
        out = {**cross_modal_metrics_from_ranks(i2t, t2i, ks=ks), "mode": mode, "n_folds": 1}
        return out
    needed = int(n_folds) * int(fold_size)
    if img.shape[0] < needed:
        raise XmrError(f"1k mode needs {n_folds} folds x {fold_size} = {needed} images, "
                       f"got {img.shape[0]}; use mode 'full'")
    if img.shape[0] > needed:
        log.warning("1k mode: using the first %d of %d images", needed, img.shape[0])
    out = {**_fold_mean(img, txt, rel, int(fold_size), int(n_folds), ks, similarity), "mode": mode,
           "n_folds": int(n_folds)}
    return out


def chance_of_protocol(relevance: Relevance, *, mode: str = "full", fold_size: int = 1000, n_folds: int = 5,
                       ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """The expected metrics of a random ranking under :func:`evaluate_embeddings`' protocol: exact
    (:func:`~xmr.evaluation.metrics.chance_cross_modal_metrics`), averaged over the same folds in
    ``"1k"`` mode. Shape of ``relevance``: (n_img, n_txt)."""
    if mode not in MODES:
        raise XmrError(f"mode must be one of {MODES}, got {mode!r}")
    rel = sparse.csr_matrix(relevance, dtype=bool)
    if mode == "full":
        return chance_cross_modal_metrics(rel, ks=ks)
    folds = []
    for f in range(int(n_folds)):
        fold = rel[f * fold_size:(f + 1) * fold_size]
        folds.append(chance_cross_modal_metrics(fold[:, np.unique(fold.indices)], ks=ks))
    return {k: float(np.mean([m[k] for m in folds])) for k in folds[0]}


def _column_title(key: str) -> str:
    """``i2t_r10`` -> ``i2t R@10``, ``t2i_medr`` -> ``t2i medr``."""
    parts = key.split("_")
    return " ".join(f"R@{p[1:]}" if p[:1] == "r" and p[1:].isdigit() else p for p in parts)


def _cell(value: object, precision: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{precision}f}"
    return str(value)


def _align(table: list[list[str]]) -> str:
    """Rows of cells as text: the first column left-aligned, the others right-aligned."""
    widths = [max(len(line[c]) for line in table) for c in range(len(table[0]))]
    return "\n".join("  ".join([line[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(line[1:], widths[1:])])
                     .rstrip() for line in table)


def format_table(
    rows: Mapping[str, Mapping[str, float | str]],
    keys: Sequence[str] = TABLE_KEYS,
    *,
    precision: int = 1,
    name_header: str = "run",
    transpose: bool = False,
) -> str:
    """A plain-text table of metrics: one row per run and one aligned column per metric, or
    (``transpose``) one row per metric and one column per run (e.g. plain vs re-ranked).

    Example:
        >>> print(format_table({"clip": {"i2t_r1": 50.12, "rsum": 400.0}}, ["i2t_r1", "rsum"]))
        run   i2t R@1   rsum
        clip     50.1  400.0
        >>> print(format_table({"plain": {"t2i_r1": 10.0}, "diffusion": {"t2i_r1": 12.5}}, ["t2i_r1"],
        ...                    name_header="metric", transpose=True))
        metric   plain  diffusion
        t2i R@1   10.0       12.5

    Args:
        rows: run name -> metrics dict (as from :func:`evaluate_embeddings`).
        keys: metric keys to show, in order; ``i2t_r1`` is titled ``i2t R@1``, ``_`` becomes a space.
        precision: decimals for float values; a missing value shows as ``-``.
        name_header: title of the first column.
        transpose: runs as columns, metrics as rows.

    Returns:
        The table, lines joined by newlines, no trailing newline.
    """
    cells = [[_cell(m.get(k), precision) for k in keys] for m in rows.values()]
    if transpose:
        table = [[name_header, *map(str, rows)]] + [[_column_title(k), *(c[j] for c in cells)]
                                                     for j, k in enumerate(keys)]
    else:
        table = [[name_header, *(_column_title(k) for k in keys)]] + [[str(n), *c] for n, c in zip(rows, cells)]
    return _align(table)


SIDE_BY_SIDE_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "i2t_medr", "t2i_r1", "t2i_r5", "t2i_r10", "t2i_medr", "rsum")
"""The rows of a transposed :func:`format_table` of plain vs re-ranked metrics: the recalls plus the median ranks."""
