"""How a joint space scores an (image, text) pair: the one registry of similarities, with numpy scores.

:data:`SIMILARITIES` is the source of every similarity's name, its ``is_inner_product`` and its
numpy score (evaluation, search, re-ranking). Its torch score, for training, is registered under
the same name in :mod:`xmr.losses.similarity` (``@torch_score(name)``; torch stays out of this
layer), which refuses, at import, a similarity registered on one side only.

* ``cosine``: ``img @ txt.T`` of L2-normalised embeddings.
* ``order``: GXN's order-violation score ``s(t, v) = -||max(0, v - t)||^2`` (Sec. 3.2, Eq. 2),
  the image being the more abstract side as GXN prints it. Not symmetric: the first argument is
  always the image side.

Example::

    >>> import numpy as np
    >>> v, t = np.array([[1.0, 0.0]]), np.array([[0.5, 0.5], [1.0, 1.0]])
    >>> order_scores(v, t).tolist()
    [[-0.25, -0.0]]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from xmr.registry import Registry

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Similarity:
    """A registered way to score (image, text) pairs, with what it can be used for.

    Attributes:
        name: the registered name (the run config's ``similarity``).
        score: ``fn(img (n_i, d), txt (n_t, d)) -> scores (n_i, n_t)``.
        is_inner_product: the score is the inner product of the embeddings. Then FAISS's
            inner-product search ranks exactly by it, and the inner-product machinery applies:
            InfoNCE, re-ranking, A3VSE's pseudo pairs and adversarial terms, the overlap
            indicator S. Otherwise search scores every pair exactly (numpy).
    """

    name: str
    score: ScoreFn
    is_inner_product: bool


#: name -> :class:`Similarity`
SIMILARITIES: Registry[Similarity] = Registry("similarity")

# pairs x dims held at once by order_scores (about 64 MB of float32)
_ORDER_BLOCK = 1 << 24


def cosine_scores(img: np.ndarray, txt: np.ndarray) -> np.ndarray:
    """Inner products of (L2-normalised) embeddings. Shape: (n_i, d), (n_t, d) -> (n_i, n_t)."""
    return np.asarray(img) @ np.asarray(txt).T


def order_scores(img: np.ndarray, txt: np.ndarray) -> np.ndarray:
    """``-||max(0, v_i - t_j)||^2`` for every image i and text j. Shape: (n_i, n_t).

    Computed a block of images at a time, so memory stays near ``_ORDER_BLOCK`` floats.
    """
    img, txt = np.asarray(img), np.asarray(txt)
    out = np.empty((img.shape[0], txt.shape[0]), dtype=np.result_type(img, txt))
    step = max(1, _ORDER_BLOCK // max(1, txt.shape[0] * txt.shape[1]))
    for a in range(0, img.shape[0], step):
        diff = img[a:a + step, None, :] - txt[None, :, :]
        np.maximum(diff, 0, out=diff)
        out[a:a + step] = -np.einsum("ijk,ijk->ij", diff, diff)
    return out


SIMILARITIES.add("cosine", Similarity("cosine", cosine_scores, is_inner_product=True))
SIMILARITIES.add("order", Similarity("order", order_scores, is_inner_product=False))


def score_fn(similarity: str) -> ScoreFn:
    """The scorer of the registered ``similarity``; an unknown name raises XmrError listing the known ones."""
    return SIMILARITIES.get(similarity).score


def is_inner_product(similarity: str) -> bool:
    """:attr:`Similarity.is_inner_product` of the registered ``similarity``."""
    return SIMILARITIES.get(similarity).is_inner_product
