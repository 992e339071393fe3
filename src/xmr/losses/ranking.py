"""Bidirectional hinge ranking loss: VSE0 (sum over negatives) and VSE++ (hardest negative).

With s(i, t) = <img_i, txt_t> and margin alpha, for each matching pair (i, i):

    VSE0:  sum_{j != i} [alpha - s(i,i) + s(i,j)]_+  +  [alpha - s(i,i) + s(j,i)]_+
    VSE++: max_{j != i} [alpha - s(i,i) + s(i,j)]_+  +  max_{j != i} [alpha - s(i,i) + s(j,i)]_+

averaged over the batch. VSE++ is Faghri et al. 2018, used as Eq. 2-3 of A3VSE and as the
ranking baseline of GXN and the dual-path paper. When every embedding collapses to one point,
all scores are equal and the VSE++ loss is exactly 2 * alpha — the trainer watches for that.

s need not be the dot product: ``similarity="order"`` ranks with GXN's order-violation score
(GXN Eq. 2; see :mod:`xmr.losses.similarity`), and ``scores=`` ranks a precomputed (B, B) matrix,
e.g. GXN's two-branch score s* of Eq. 3 (``vse_loss(None, None, scores=s_star, margin=0.05)``).

Example::

    >>> import torch, torch.nn.functional as F
    >>> img = F.normalize(torch.randn(8, 16), dim=-1); txt = F.normalize(torch.randn(8, 16), dim=-1)
    >>> float(vse_loss(img, img, margin=0.2, max_violation=True)["loss"]) < 0.4
    True
"""

from __future__ import annotations

import torch

from xmr.errors import XmrError
from xmr.losses._masks import check_pair, extra_positives
from xmr.losses.registry import LOSSES, declare
from xmr.losses.similarity import SimilarityFn, resolve_similarity


def _pair_scores(img: torch.Tensor | None, txt: torch.Tensor | None, similarity: str | SimilarityFn,
                 scores: torch.Tensor | None) -> torch.Tensor:
    """The (B, B) score matrix of the batch, from embeddings or as given."""
    if scores is not None:
        if img is not None or txt is not None:
            raise XmrError("pass either embeddings (img, txt) or scores=, not both")
        if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
            raise XmrError(f"scores must be a square (B, B) matrix, got {tuple(scores.shape)}")
        return scores
    if img is None or txt is None:
        raise XmrError("vse_loss needs image and text embeddings, or scores=")
    check_pair(img, txt)
    if similarity == "cosine":
        return img @ txt.t()  # inputs are L2-normalised: the dot product is the cosine, bit for bit as before
    out = resolve_similarity(similarity)(img, txt)
    if out.shape != (img.shape[0], img.shape[0]):
        raise XmrError(f"similarity must return a ({img.shape[0]}, {img.shape[0]}) matrix, got {tuple(out.shape)}")
    return out


@LOSSES.register("vse")
def vse_loss(img: torch.Tensor | None, txt: torch.Tensor | None, *, margin: float = 0.2,
             max_violation: bool = False, groups: torch.Tensor | None = None,
             text_ids: torch.Tensor | None = None, logit_scale: torch.Tensor | float | None = None,
             similarity: str | SimilarityFn = "cosine", scores: torch.Tensor | None = None
             ) -> dict[str, torch.Tensor]:
    """Bidirectional triplet ranking loss with in-batch negatives.

    Args:
        img: image embeddings. Shape: (B, d), L2-normalised.
        txt: text embeddings; row i matches ``img[i]``. Shape: (B, d).
        margin: alpha, the margin between the positive and a negative similarity.
        max_violation: False = VSE0 (sum over negatives), True = VSE++ (hardest negative only).
        groups: optional group id per pair (B,); same-group pairs are not negatives.
        text_ids: optional text id per pair (B,); pairs sharing a text are not negatives.
        logit_scale: ignored (accepted so every loss has one calling convention).
        similarity: how a pair is scored: a name registered in
            :data:`xmr.losses.similarity.SIMILARITIES` ("cosine", "order") or a callable
            ``(img (B, d), txt (B, d)) -> (B, B)`` with ``[i, j]`` = s(image i, text j).
            "cosine" is the dot product of the (L2-normalised) inputs, as before.
        scores: a precomputed score matrix (B, B), ``[i, j]`` = s(image i, text j), e.g. GXN's
            two-branch s* (Eq. 3); then ``img`` and ``txt`` must be None.

    Returns:
        ``{"loss", "i2t", "t2i"}``: the mean per-pair loss and its two directions.

    Raises:
        ValueError: embeddings of different shapes, or a negative margin.
        XmrError: both or neither of embeddings and ``scores``, a non-square ``scores``, or an
            unknown similarity name.
    """
    if margin < 0:
        raise XmrError(f"margin must be >= 0, got {margin}")
    scores = _pair_scores(img, txt, similarity, scores)
    batch, device = scores.shape[0], scores.device
    pos = scores.diagonal()
    not_neg = extra_positives(batch, device, groups, text_ids)
    not_neg |= torch.eye(batch, dtype=torch.bool, device=device)
    cost_t = (margin + scores - pos[:, None]).clamp(min=0).masked_fill(not_neg, 0.0)  # image i vs text j
    cost_i = (margin + scores - pos[None, :]).clamp(min=0).masked_fill(not_neg, 0.0)  # text j vs image i
    if max_violation:
        i2t, t2i = cost_t.max(dim=1).values, cost_i.max(dim=0).values
    else:
        i2t, t2i = cost_t.sum(dim=1), cost_i.sum(dim=0)
    i2t, t2i = i2t.mean(), t2i.mean()
    return {"loss": i2t + t2i, "i2t": i2t, "t2i": t2i}


@LOSSES.register("vse0")
def vse0_loss(img: torch.Tensor, txt: torch.Tensor, **kw: object) -> dict[str, torch.Tensor]:
    """VSE0: :func:`vse_loss` summed over all in-batch negatives."""
    return vse_loss(img, txt, **{**kw, "max_violation": False})


@LOSSES.register("vse++")
@declare(hardest_negative=True)
def vsepp_loss(img: torch.Tensor, txt: torch.Tensor, **kw: object) -> dict[str, torch.Tensor]:
    """VSE++: :func:`vse_loss` with the hardest in-batch negative (max violation)."""
    return vse_loss(img, txt, **{**kw, "max_violation": True})
