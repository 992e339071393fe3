"""What the trainer consumes: features plus pair indices, no Items or files."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from xmr.errors import XmrError


@dataclass(frozen=True)
class PairSet:
    """Training pairs over cached features.

    Attributes:
        image_feats: encoder features per image. Shape: (n_images, image_dim).
        text_feats: encoder features per distinct text. Shape: (n_texts, text_dim).
        pairs: (image index, text index) of each matching pair. Shape: (n_pairs, 2).
        image_groups: group id per image; images of one group are not each other's negatives.
            Shape: (n_images,).
        weights: how often each pair is drawn per epoch (None: once each): a pair of weight w
            appears floor(w) times plus once more with probability frac(w), drawn afresh each
            epoch (:func:`weighted_epoch`). Shape: (n_pairs,), values > 0.
        image_views: augmented views' features, the plain ``image_feats`` first (None: no
            augmentation); each epoch draws one view per image (:func:`epoch_views`).
            Shape: (n_views, n_images, image_dim).
    """

    image_feats: np.ndarray
    text_feats: np.ndarray
    pairs: np.ndarray
    image_groups: np.ndarray
    weights: np.ndarray | None = None
    image_views: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.pairs.ndim != 2 or self.pairs.shape[1] != 2 or len(self.pairs) < 2:
            raise XmrError(f"pairs must be (n >= 2, 2), got {self.pairs.shape}")
        if self.image_groups.shape != (len(self.image_feats),):
            raise XmrError("image_groups must have one entry per image")
        if self.pairs[:, 0].max() >= len(self.image_feats) or self.pairs[:, 1].max() >= len(self.text_feats):
            raise XmrError("pair index out of range")
        if self.weights is not None and (self.weights.shape != (len(self.pairs),) or not np.all(self.weights > 0)):
            raise XmrError(f"pair weights must be (n_pairs,) values > 0, got shape {self.weights.shape}")
        if self.image_views is not None and (self.image_views.ndim != 3
                                             or self.image_views.shape[1:] != self.image_feats.shape):
            raise XmrError(f"image_views must be (n_views, {', '.join(map(str, self.image_feats.shape))}), "
                           f"got {self.image_views.shape}")

    def epoch_image_feats(self, seed: int, epoch: int) -> np.ndarray:
        """This epoch's image features: one drawn view per image (the plain ones without views)."""
        if self.image_views is None:
            return self.image_feats
        pick = epoch_views(len(self.image_views), len(self.image_feats), seed, epoch)
        return np.ascontiguousarray(self.image_views[pick, np.arange(len(pick))])

    @property
    def pairs_per_epoch(self) -> int:
        """The expected number of pair draws in one epoch (the sum of the weights; n_pairs without)."""
        return len(self.pairs) if self.weights is None else max(2, int(round(float(self.weights.sum()))))


def epoch_views(n_views: int, n_images: int, seed: int, epoch: int) -> np.ndarray:
    """Which view each image shows in ``epoch``: uniform over the views, seeded by (seed, epoch). Shape: (n_images,)."""
    return np.random.default_rng([seed, epoch, 2]).integers(0, n_views, n_images)


def weighted_epoch(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One epoch's pair indices, shuffled: pair i floor(w_i) times, plus once with probability frac(w_i).

    Args:
        weights: per-pair weights > 0. Shape: (n_pairs,).
        rng: this epoch's generator (the draw and the order both come from it).

    Returns:
        Indices into the pairs, each repeated as drawn. Shape: (n_draws,).
    """
    whole = np.floor(weights).astype(np.int64)
    counts = whole + (rng.random(len(weights)) < (weights - whole))
    return rng.permutation(np.repeat(np.arange(len(weights)), counts))


@dataclass(frozen=True)
class EvalSet:
    """Validation/test data: features plus relevance (n_images, n_texts), True where matching."""

    image_feats: np.ndarray
    text_feats: np.ndarray
    relevance: sp.csr_matrix


def pairs_from_relevance(relevance: sp.csr_matrix) -> np.ndarray:
    """All (image, text) index pairs where ``relevance`` is True. Shape: (nnz, 2)."""
    coo = sp.coo_matrix(relevance)
    mask = coo.data != 0
    return np.stack([coo.row[mask], coo.col[mask]], axis=1).astype(np.int64)
