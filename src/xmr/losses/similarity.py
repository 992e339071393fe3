"""Image-text similarity matrices for the ranking losses: cosine, order-violation, two-branch.

Every function here maps a batch of image embeddings (B_i, d) and text embeddings (B_t, d) to a
score matrix ``scores[i, j] = s(image i, text j)`` of shape (B_i, B_t), the layout
:func:`xmr.losses.ranking.vse_loss` ranks.

Order-violation similarity (GXN, Gu et al. CVPR 2018, "Look, Imagine and Match", Sec. 3.2 after
Eq. 2, citing Vendrov et al. ICLR 2016 "Order-embeddings of images and language"):

    s(t, v) = -|| max(0, v - t) ||^2

It is zero when the text dominates the image coordinate-wise and grows more negative with every
coordinate where the image exceeds the text. Which side is "more abstract" is a convention:

* GXN as printed penalises ``v - t``: the image must lie below the text in every coordinate.
  This is ``abstract_side="image"`` (the default here, because GXN is the paper we implement).
* Vendrov et al. (and the VSE++ code's ``order_sim``) put captions *above* images in the
  visual-semantic hierarchy, which in their reversed product order (closer to the origin = more
  abstract) penalises ``max(0, t - v)``. This is ``abstract_side="text"``.

With learned embeddings either convention trains; they are mirror images, not the same model.
Vendrov et al. also constrain embeddings to the non-negative orthant (absolute value of the
projection); GXN does not say. These functions take embeddings as given: take ``abs`` in the
model (or pass ``absolute=True``) to reproduce Vendrov's set-up.

Two-branch score (GXN Eq. 3): ``s* = lam * s(t_h, v_h) + (1 - lam) * s(t_l, v_l)`` combines the
abstract (h) and grounded (l) branches; GXN uses ``lam = 0.5`` and margin 0.05.

Example::

    >>> import torch, torch.nn.functional as F
    >>> v = F.normalize(torch.randn(4, 8), dim=-1).abs(); t = F.normalize(torch.randn(4, 8), dim=-1).abs()
    >>> s = two_branch_similarity(cosine_similarity(v, t), order_similarity(v, t), lam=0.5)
    >>> tuple(s.shape)
    (4, 4)

One similarity, two scores: :data:`xmr.evaluation.similarity.SIMILARITIES` is the source of every
similarity's name, its ``is_inner_product`` and its numpy score (evaluation, search); this
module's :data:`SIMILARITIES` holds the torch score of each of those names (training), registered
with :func:`torch_score`, which refuses a name the numpy registry lacks. Importing this module
refuses a numpy similarity with no torch score, and ``tests/test_similarity.py`` checks that the
two scores agree on every registered name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from xmr.errors import XmrError
from xmr.evaluation.similarity import SIMILARITIES as SCORED_SIMILARITIES
from xmr.registry import Registry

SimilarityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: name -> the torch score of the similarity :data:`xmr.evaluation.similarity.SIMILARITIES` registers
#: under that name (where its ``is_inner_product`` and numpy score live)
SIMILARITIES: Registry[SimilarityFn] = Registry("similarity")

_ABSTRACT_SIDES = ("image", "text")


def torch_score(name: str) -> Callable[[SimilarityFn], SimilarityFn]:
    """Decorator: register ``fn(img (B_i, d), txt (B_t, d)) -> (B_i, B_t)`` as the torch score of the
    similarity ``name``, which :data:`xmr.evaluation.similarity.SIMILARITIES` must hold already.

    Raises:
        XmrError: ``name`` is not a registered similarity (the error lists the known ones), or it
            has a torch score already.
    """
    SCORED_SIMILARITIES.get(name)
    return SIMILARITIES.register(name)


def _check_embeddings(img: torch.Tensor, txt: torch.Tensor) -> None:
    if img.ndim != 2 or txt.ndim != 2 or img.shape[1] != txt.shape[1]:
        raise XmrError(f"image and text embeddings must be (B_i, d) and (B_t, d); got {tuple(img.shape)} "
                       f"and {tuple(txt.shape)}")


@torch_score("cosine")
def cosine_similarity(img: torch.Tensor, txt: torch.Tensor, *, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarity of every image with every text.

    Equal to ``img @ txt.T`` for L2-normalised inputs (the dual-path paper's D, Sec. IV-A; the
    VSE++/A3VSE S). Inputs are normalised here, so raw features work too.

    Args:
        img: image embeddings. Shape: (B_i, d).
        txt: text embeddings. Shape: (B_t, d).
        eps: floor on the norms (a zero vector scores 0 with everything).

    Returns:
        Scores in [-1, 1]. Shape: (B_i, B_t).
    """
    _check_embeddings(img, txt)
    img = img / img.norm(dim=1, keepdim=True).clamp(min=eps)
    txt = txt / txt.norm(dim=1, keepdim=True).clamp(min=eps)
    return img @ txt.t()


@torch_score("order")
def order_similarity(img: torch.Tensor, txt: torch.Tensor, *, abstract_side: str = "image",
                     absolute: bool = False) -> torch.Tensor:
    """Negative squared order violation between every image and every text (GXN Sec. 3.2).

    ``abstract_side="image"``: ``s(t, v) = -||max(0, v - t)||^2`` exactly as GXN prints it.
    ``abstract_side="text"``: ``-||max(0, t - v)||^2``, Vendrov et al.'s captions-above-images
    hierarchy (see the module docstring). The score is <= 0 and 0 only when the order holds.

    Args:
        img: image embeddings v. Shape: (B_i, d).
        txt: text embeddings t. Shape: (B_t, d).
        abstract_side: which modality sits higher in the partial order, "image" or "text".
        absolute: take ``abs`` of both inputs first (Vendrov's non-negative embeddings).

    Returns:
        ``scores[i, j] = s(txt[j], img[i])``. Shape: (B_i, B_t).

    Raises:
        XmrError: bad shapes or an unknown ``abstract_side``.
    """
    _check_embeddings(img, txt)
    if abstract_side not in _ABSTRACT_SIDES:
        raise XmrError(f"abstract_side must be 'image' or 'text', got {abstract_side!r}")
    if absolute:
        img, txt = img.abs(), txt.abs()
    # (B_i, 1, d) - (1, B_t, d): B_i * B_t * d floats, fine for training batches (128 x 128 x 1024)
    diff = img[:, None, :] - txt[None, :, :]
    if abstract_side == "text":
        diff = -diff
    return -diff.clamp(min=0).pow(2).sum(dim=2)


def two_branch_similarity(s_high: torch.Tensor, s_low: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """GXN Eq. 3 combined score ``s* = lam * s(t_h, v_h) + (1 - lam) * s(t_l, v_l)``.

    Args:
        s_high: scores of the abstract (high-level) branch. Shape: (B_i, B_t).
        s_low: scores of the grounded (low-level) branch. Shape: (B_i, B_t).
        lam: trade-off weight in [0, 1] (GXN: 0.5).

    Returns:
        The combined scores. Shape: (B_i, B_t).

    Raises:
        XmrError: the two score matrices differ in shape, or ``lam`` is outside [0, 1].
    """
    if s_high.ndim != 2 or s_high.shape != s_low.shape:
        raise XmrError(f"branch scores must be two (B_i, B_t) matrices of one shape; got {tuple(s_high.shape)} "
                       f"and {tuple(s_low.shape)}")
    if not 0.0 <= lam <= 1.0:
        raise XmrError(f"lam must be in [0, 1], got {lam}")
    return lam * s_high + (1.0 - lam) * s_low


def resolve_similarity(similarity: str | SimilarityFn) -> SimilarityFn:
    """A similarity function from a registered name or a callable (returned unchanged)."""
    if callable(similarity):
        return similarity
    if similarity in SCORED_SIMILARITIES and similarity not in SIMILARITIES:
        _refuse_numpy_only([similarity])
    return SIMILARITIES.get(similarity)


def _refuse_numpy_only(names: list[str]) -> None:
    raise XmrError("similarity {names} has a numpy score but no torch one; register one with "
                   "xmr.losses.similarity.torch_score", names=", ".join(map(repr, names)))


def check_similarities() -> None:
    """Every registered similarity has both scores (the two registries hold the same names).

    Raises:
        XmrError: a similarity has a numpy score and no torch one, or the other way round.
    """
    numpy_only = sorted(set(SCORED_SIMILARITIES.names()) - set(SIMILARITIES.names()))
    if numpy_only:
        _refuse_numpy_only(numpy_only)
    torch_only = sorted(set(SIMILARITIES.names()) - set(SCORED_SIMILARITIES.names()))
    if torch_only:
        raise XmrError("similarity {names} has a torch score but no entry in xmr.evaluation.similarity.SIMILARITIES",
                       names=", ".join(map(repr, torch_only)))


check_similarities()  # at import: a similarity added on one side only fails here, not in training
