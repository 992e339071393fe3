"""Overlap indicator S of positive and negative similarity distributions (dual-path Eq. 10).

Zheng et al., "Dual-Path Convolutional Image-Text Embeddings with Instance Loss", Sec. IV-B:
with P the distribution of cosine similarities of positive image-text pairs and Q that of
negative pairs,

    S = integral_{-1}^{1} min(P(x), Q(x)) dx                                       (Eq. 10)

S = 1: the distributions coincide (retrieval is at chance); S = 0: every positive pair scores
above every negative pair. Lower is better (the paper: 0.2563 ranking loss alone, 0.1633
instance loss alone, 0.0914 both).

P and Q are estimated by histograms, so S depends on the bin count (the paper does not give
one). With density histograms over equal bins of width w, the integral is exactly
``sum_b min(p_b, q_b) * w = sum_b min(n_pos_b / n_pos, n_neg_b / n_neg)``.

Numpy only (Pillow, lazily, for the optional plot); never torch.
"""

from __future__ import annotations

import os
import typing

import numpy as np
from scipy import sparse

from xmr.errors import XmrError
from xmr.utils.arrays import l2_normalize

Relevance: typing.TypeAlias = "np.ndarray | sparse.spmatrix"

_RANGE_TOL = 1e-6  # cosines of normalised float32 vectors stray this far outside [-1, 1]


def _histogram_fractions(values: np.ndarray, name: str, bins: int, value_range: tuple[float, float]) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise XmrError(f"{name} similarities are empty")
    if not np.isfinite(values).all():
        raise XmrError(f"{name} similarities contain NaN or infinity")
    lo, hi = value_range
    if values.min() < lo - _RANGE_TOL or values.max() > hi + _RANGE_TOL:
        bad = values.min() if values.min() < lo - _RANGE_TOL else values.max()
        raise XmrError(f"{name} similarity {bad:.6g} is outside value_range [{lo:g}, {hi:g}]")
    counts, _ = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    return counts / values.size


def overlap_indicator(pos_sims: np.ndarray, neg_sims: np.ndarray, *, bins: int = 100,
                      value_range: tuple[float, float] = (-1.0, 1.0)) -> float:
    """S = integral of min(P, Q) over histograms of positive and negative similarities (Eq. 10).

    Args:
        pos_sims: similarities of positive pairs (any shape, flattened). Shape: (n_pos,).
        neg_sims: similarities of negative pairs. Shape: (n_neg,).
        bins: number of equal-width histogram bins over ``value_range``.
        value_range: the integration interval (the paper: the cosine range [-1, 1]). Values
            within 1e-6 outside it are clipped in; further out is an error.

    Returns:
        S in [0, 1].

    Raises:
        XmrError: an empty or non-finite input, a value outside ``value_range``, bins < 1 or an
            empty range.
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise XmrError(f"bins must be an int >= 1, got {bins!r}")
    if not value_range[0] < value_range[1]:
        raise XmrError(f"value_range must be (low, high) with low < high, got {value_range}")
    p = _histogram_fractions(pos_sims, "positive", int(bins), value_range)
    q = _histogram_fractions(neg_sims, "negative", int(bins), value_range)
    return float(np.minimum(p, q).sum())


def _normalise_rows(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise XmrError(f"{name} embeddings must be 2-D (n, d), got shape {x.shape}")
    return l2_normalize(x)


def positive_negative_sims(img_emb: np.ndarray, txt_emb: np.ndarray, relevance: Relevance, *,
                           max_negatives: int | None = None, seed: int = 0, chunk_rows: int = 1024
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of all relevant (positive) and non-relevant (negative) image-text pairs.

    Args:
        img_emb: image embeddings (normalised here). Shape: (n_img, d).
        txt_emb: text embeddings. Shape: (n_txt, d).
        relevance: True where text t describes image i; boolean ndarray or scipy sparse matrix.
            Shape: (n_img, n_txt).
        max_negatives: if set, draw this many (image, text) pairs uniformly without replacement
            and keep the non-relevant ones (so slightly fewer come back) instead of all
            n_img * n_txt - n_pos negatives.
        seed: seed of that draw.
        chunk_rows: images per block when computing all negatives.

    Returns:
        ``(pos, neg)``: float64 similarities, positives in row-major (image, text) order.
        Shape: (n_pos,), (n_neg,).

    Raises:
        XmrError: mismatched shapes, or max_negatives / chunk_rows < 1.
    """
    img, txt = _normalise_rows(img_emb, "image"), _normalise_rows(txt_emb, "text")
    if img.shape[1] != txt.shape[1]:
        raise XmrError(f"image and text embeddings differ in dimension: {img.shape[1]} vs {txt.shape[1]}")
    shape = (img.shape[0], txt.shape[0])
    rel = sparse.csr_matrix(relevance, dtype=bool) if sparse.issparse(relevance) else np.asarray(relevance, dtype=bool)
    if rel.shape != shape:
        raise XmrError(f"relevance has shape {rel.shape}, expected (n_img, n_txt) = {shape}")
    if chunk_rows < 1:
        raise XmrError(f"chunk_rows must be >= 1, got {chunk_rows}")
    rows, cols = rel.nonzero()
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    pos = np.einsum("nd,nd->n", img[rows], txt[cols])
    if max_negatives is not None:
        if max_negatives < 1:
            raise XmrError(f"max_negatives must be >= 1, got {max_negatives}")
        n_pairs = shape[0] * shape[1]
        flat = np.sort(np.random.default_rng(seed).choice(n_pairs, size=min(max_negatives, n_pairs), replace=False))
        r, c = np.divmod(flat, shape[1])
        is_pos = np.asarray(rel[r, c]).ravel().astype(bool)
        r, c = r[~is_pos], c[~is_pos]
        return pos, np.einsum("nd,nd->n", img[r], txt[c])
    negs = []
    for start in range(0, shape[0], chunk_rows):
        stop = min(start + chunk_rows, shape[0])
        block = img[start:stop] @ txt.T
        rel_block = typing.cast(sparse.csr_matrix, rel[start:stop]).toarray() if sparse.issparse(rel) \
            else rel[start:stop]
        negs.append(block[~rel_block])
    return pos, np.concatenate(negs) if negs else np.zeros(0)


def plot_overlap_histogram(pos_sims: np.ndarray, neg_sims: np.ndarray, path: str | os.PathLike[str], *,
                           bins: int = 100, value_range: tuple[float, float] = (-1.0, 1.0),
                           size: tuple[int, int] = (640, 400)) -> float:
    """Draw the P and Q histograms (the paper's Fig. 5) to a PNG with matplotlib; return S.

    Positive pairs in translucent blue, negative pairs in translucent red (their overlap shows
    purple); x: the pair's similarity, y: the fraction of each set's pairs per bin; S in the
    legend. The file is written atomically.

    Args:
        pos_sims: positive-pair similarities. Shape: (n_pos,).
        neg_sims: negative-pair similarities. Shape: (n_neg,).
        path: the PNG to write.
        bins: histogram bins, as in :func:`overlap_indicator`.
        value_range: the x range, as in :func:`overlap_indicator`.
        size: (width, height) of the image in pixels, each >= 200.

    Returns:
        S of :func:`overlap_indicator` with the same bins, also printed on the plot.
    """
    from xmr.plots.figures import pyplot, save_figure  # only the plot needs matplotlib

    s = overlap_indicator(pos_sims, neg_sims, bins=bins, value_range=value_range)
    width, height = size
    if width < 200 or height < 200:
        raise XmrError(f"plot size must be at least 200 x 200 pixels, got {size}")
    p = _histogram_fractions(pos_sims, "positive", bins, value_range)
    q = _histogram_fractions(neg_sims, "negative", bins, value_range)
    edges = np.linspace(value_range[0], value_range[1], bins + 1)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(width / 100, height / 100))
    ax.stairs(p, edges, fill=True, color="#285adc", alpha=0.45, label=f"P: positive pairs (n={np.size(pos_sims)})")
    ax.stairs(q, edges, fill=True, color="#dc2828", alpha=0.45, label=f"Q: negative pairs (n={np.size(neg_sims)})")
    ax.plot([], [], " ", label=f"overlap S = {s:.4f}")
    ax.set_xlim(*value_range)
    ax.set_xlabel("similarity of the pair")
    ax.set_ylabel("fraction of the set's pairs per bin")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return s
