"""Bidirectional hinge ranking loss: VSE0 (sum over negatives) and VSE++ (hardest negative).

With s(i, t) = <img_i, txt_t> and margin alpha, for each matching pair (i, i):

    VSE0:  sum_{j != i} [alpha - s(i,i) + s(i,j)]_+  +  [alpha - s(i,i) + s(j,i)]_+
    VSE++: max_{j != i} [alpha - s(i,i) + s(i,j)]_+  +  max_{j != i} [alpha - s(i,i) + s(j,i)]_+

averaged over the batch. VSE++ is Faghri et al. 2018, used as Eq. 2-3 of A3VSE and as the
ranking baseline of GXN and the dual-path paper. When every embedding collapses to one point,
all scores are equal and the VSE++ loss is exactly 2 * alpha — the trainer watches for that.

Example::

    >>> import torch, torch.nn.functional as F
    >>> img = F.normalize(torch.randn(8, 16), dim=-1); txt = F.normalize(torch.randn(8, 16), dim=-1)
    >>> float(vse_loss(img, img, margin=0.2, max_violation=True)["loss"]) < 0.4
    True
"""

from __future__ import annotations

import torch

from xmr.losses._masks import check_pair, extra_positives
from xmr.losses.registry import LOSSES


@LOSSES.register("vse")
def vse_loss(img: torch.Tensor, txt: torch.Tensor, *, margin: float = 0.2, max_violation: bool = False,
             groups: torch.Tensor | None = None, text_ids: torch.Tensor | None = None,
             logit_scale: torch.Tensor | float | None = None
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

    Returns:
        ``{"loss", "i2t", "t2i"}``: the mean per-pair loss and its two directions.
    """
    check_pair(img, txt)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    scores = img @ txt.t()
    pos = scores.diagonal()
    not_neg = extra_positives(img.shape[0], img.device, groups, text_ids)
    not_neg |= torch.eye(img.shape[0], dtype=torch.bool, device=img.device)
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
    return vse_loss(img, txt, **{**kw, "max_violation": False})  # type: ignore[arg-type]


@LOSSES.register("vse++")
def vsepp_loss(img: torch.Tensor, txt: torch.Tensor, **kw: object) -> dict[str, torch.Tensor]:
    """VSE++: :func:`vse_loss` with the hardest in-batch negative (max violation)."""
    return vse_loss(img, txt, **{**kw, "max_violation": True})  # type: ignore[arg-type]
