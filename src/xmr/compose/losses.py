"""Losses for composed queries: composed features psi_xt against target image features.

Both follow TIRG (Vo et al., "Composing Text and Image for Image Retrieval - An Empirical
Odyssey", CVPR 2019, Sec. 3.3), the framework the seed paper adopts in Sec. 4.4; they are the
second term L(psi_xt, g(psi_x_target)) of the seed paper's Eq. 2. Row i of ``query`` (the
composed feature) matches row i of ``target``; the other rows' targets are the negatives, except
rows of the same ``group`` (e.g. two queries with one target image), which are not pushed away.

Example::

    >>> import torch
    >>> q, t = torch.randn(4, 8), torch.randn(4, 8)
    >>> sorted(soft_triplet_loss(q, t))
    ['d_neg', 'd_pos', 'loss']
    >>> sorted(batch_classification_loss(q, t, scale=16.0))
    ['accuracy', 'loss']
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from xmr.errors import XmrError
from xmr.losses import infonce_loss
from xmr.registry import Registry


def _check(query: torch.Tensor, target: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
    """Bool (B, B): True where j != i is a negative for query i (not i itself, not i's group)."""
    if query.ndim != 2 or query.shape != target.shape or query.shape[0] < 1:
        raise XmrError(f"query and target must both be (B, D); got {tuple(query.shape)} and {tuple(target.shape)}")
    b = query.shape[0]
    neg = ~torch.eye(b, dtype=torch.bool, device=query.device)
    if groups is not None:
        if groups.shape != (b,):
            raise XmrError(f"groups must have shape ({b},), got {tuple(groups.shape)}")
        neg &= groups[:, None] != groups[None, :]
    return neg


def soft_triplet_loss(query: torch.Tensor, target: torch.Tensor, *,
                      groups: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """TIRG's soft triplet loss over every in-batch negative.

    With d(a, b) = ||a - b||^2 (squared Euclidean, as TIRG's ``pairwise_distances``),

        loss = mean over (i, j in N(i)) of  log(1 + exp(d(q_i, t_i) - d(q_i, t_j)))

    where N(i) are the rows j != i outside i's group: the mean is over all valid (query, negative)
    pairs together. TIRG instead samples 3 triplets per anchor from the concatenated set
    [queries; targets]; here every in-batch negative target is used, deterministically.
    No normalisation is applied: pass L2-normalised features if that is wanted.

    Args:
        query: composed features. Shape: (B, D).
        target: target image features; row i matches ``query[i]``. Shape: (B, D).
        groups: optional group id per row. Shape: (B,).

    Returns:
        ``{"loss", "d_pos", "d_neg"}`` scalars: the loss, the mean positive distance and the mean
        negative distance. A batch with no negative at all (B = 1, or one group) gives a zero loss
        that still depends on the inputs (so ``backward`` works) and NaN ``d_neg``.
    """
    neg = _check(query, target, groups)
    # the explicit difference, not cdist: exact, and no sqrt whose gradient is NaN at distance 0
    d = (query[:, None, :] - target[None, :, :]).pow(2).sum(dim=2)  # (B, B): d[i, j] = ||q_i - t_j||^2
    d_pos = d.diagonal()
    terms = F.softplus(d_pos[:, None] - d)[neg]  # softplus(x) = log(1 + exp(x)), stable
    loss = terms.mean() if terms.numel() else d.sum() * 0.0
    d_neg = d[neg].mean().detach() if terms.numel() else torch.tensor(float("nan"), device=d.device)
    return {"loss": loss, "d_pos": d_pos.mean().detach(), "d_neg": d_neg}


def batch_classification_loss(query: torch.Tensor, target: torch.Tensor, *, scale: torch.Tensor | float = 16.0,
                              groups: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """TIRG's batch-based classification loss: softmax cross-entropy over in-batch targets.

        logits[i, j] = scale * <q_i / ||q_i||, t_j / ||t_j||>
        loss = -1/B sum_i log softmax_j(logits[i, :])[i]

    Both sides are L2-normalised, so the logits are scaled cosines. TIRG's NormalizationLayer
    instead multiplies each side by a learned s (init 4.0), i.e. logits = s^2 cos; the default
    ``scale=16.0`` is that initial value. Entries j != i in i's group are removed from the
    softmax of row i (they are not negatives).

    Args:
        query: composed features. Shape: (B, D).
        target: target image features; row i matches ``query[i]``. Shape: (B, D).
        scale: multiplier of the cosines, a scalar tensor (may require grad; the trainer owns it)
            or a float.
        groups: optional group id per row. Shape: (B,).

    Returns:
        ``{"loss", "accuracy"}``: the mean cross-entropy and the (detached) fraction of rows whose
        own target has the largest (masked) logit.
    """
    neg = _check(query, target, groups)
    logits = scale * F.normalize(query, dim=1) @ F.normalize(target, dim=1).t()
    keep = neg | torch.eye(query.shape[0], dtype=torch.bool, device=query.device)
    logits = logits.masked_fill(~keep, float("-inf"))
    labels = torch.arange(query.shape[0], device=query.device)
    accuracy = (logits.argmax(dim=1) == labels).to(query.dtype).mean().detach()
    return {"loss": F.cross_entropy(logits, labels), "accuracy": accuracy}


def infonce_compose_loss(query: torch.Tensor, target: torch.Tensor, *, scale: torch.Tensor | float = 16.0,
                         groups: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The joint space's symmetric InfoNCE (:func:`xmr.losses.infonce_loss`) on (composed query,
    target) pairs: logits ``scale * cos``; same-group targets are not negatives. Shapes: (B, D) each."""
    _check(query, target, groups)
    return infonce_loss(F.normalize(query, dim=1), F.normalize(target, dim=1), logit_scale=scale, groups=groups)


LossFn = Callable[..., dict[str, torch.Tensor]]

# kept apart from xmr.losses.LOSSES: these take (composed query, target image), not (image, text)
COMPOSE_LOSSES: Registry[LossFn] = Registry("composed loss")
COMPOSE_LOSSES.add("soft_triplet", soft_triplet_loss)
COMPOSE_LOSSES.add("batch_classification", batch_classification_loss)
COMPOSE_LOSSES.add("infonce", infonce_compose_loss)
