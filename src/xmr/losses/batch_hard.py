"""Batch-hard triplet loss and identity cross-entropy for P x K identity batches.

Batch-hard triplet (Hermans, Beyer and Leibe 2017, "In defense of the triplet loss for person
re-identification", Eq. 5): for every anchor a in the batch, the hardest positive (the farthest
sample with the same label) and the hardest negative (the nearest sample with another label),

    L_tri = mean_a [ margin + max_{p: y_p = y_a, p != a} D(a, p) - min_{n: y_n != y_a} D(a, n) ]_+

with D the Euclidean distance between the embeddings *as given* (pass L2-normalised
embeddings to get a distance in [0, 2] that a fixed margin is meaningful against).
The heterogeneous-manifolds paper (Yang et al., AAAI 2020, Eq. 9) trains its cross-modal model
with L = L_class + beta L_tri, beta = 0.2 and margin 0.6.

These take one embedding batch plus labels, not an (image, text) pair, so they are not in the
pairwise ``LOSSES`` registry.

Example::

    >>> import torch, torch.nn.functional as F
    >>> emb = F.normalize(torch.randn(8, 16), dim=-1); labels = torch.arange(4).repeat(2)
    >>> out = batch_hard_triplet_loss(emb, labels, margin=0.6)
    >>> sorted(out)
    ['frac_active', 'hardest_neg', 'hardest_pos', 'loss']
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xmr.errors import XmrError


def _pairwise_distances(emb: torch.Tensor) -> torch.Tensor:
    """Euclidean distances, with a gradient that stays finite on the zero diagonal. Shape: (B, B)."""
    sq = emb.pow(2).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * emb @ emb.t()).clamp(min=0.0)
    # sqrt'(0) is infinite: take the root only where d2 > 0 and leave exact zeros at 0
    zero = d2 <= 1e-12
    return torch.sqrt(d2.masked_fill(zero, 1.0)).masked_fill(zero, 0.0)


def batch_hard_triplet_loss(emb: torch.Tensor, labels: torch.Tensor, *, margin: float = 0.6
                            ) -> dict[str, torch.Tensor]:
    """Hinge on the hardest positive and hardest negative of each anchor (Hermans et al., Eq. 5).

    Anchors without a positive or without a negative in the batch are left out of the mean.

    Args:
        emb: embeddings. Shape: (B, d). Distances are taken on them unchanged (normalise first
            if a fixed margin should mean the same thing at any scale).
        labels: identity of each row. Shape: (B,), integer.
        margin: the hinge margin, >= 0.

    Returns:
        ``{"loss", "hardest_pos", "hardest_neg", "frac_active"}``: the mean hinge over valid
        anchors (0 with no valid anchor, still attached to the graph), the mean hardest-positive and
        hardest-negative distances, and the fraction of valid anchors with a non-zero hinge.

    Raises:
        ValueError: bad shapes or a negative margin.
    """
    if emb.ndim != 2 or labels.ndim != 1 or labels.shape[0] != emb.shape[0]:
        raise XmrError(f"need emb (B, d) and labels (B,); got {tuple(emb.shape)} and {tuple(labels.shape)}")
    if margin < 0:
        raise XmrError(f"margin must be >= 0, got {margin}")
    dist = _pairwise_distances(emb)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    pos_mask, neg_mask = same & ~eye, ~same
    hardest_pos = dist.masked_fill(~pos_mask, float("-inf")).max(dim=1).values
    hardest_neg = dist.masked_fill(~neg_mask, float("inf")).min(dim=1).values
    valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)
    if not valid.any():
        zero = emb.sum() * 0.0
        return {"loss": zero, "hardest_pos": zero.detach(), "hardest_neg": zero.detach(),
                "frac_active": zero.detach()}
    hinge = F.relu(margin + hardest_pos[valid] - hardest_neg[valid])
    return {"loss": hinge.mean(), "hardest_pos": hardest_pos[valid].mean().detach(),
            "hardest_neg": hardest_neg[valid].mean().detach(),
            "frac_active": (hinge > 0).float().mean()}


def identity_ce_loss(logits: torch.Tensor, labels: torch.Tensor, *, label_smoothing: float = 0.0
                     ) -> dict[str, torch.Tensor]:
    """Cross-entropy over training identities (the classification term L_class of Eq. 9).

    Args:
        logits: classifier outputs. Shape: (B, n_identities).
        labels: identity index of each row. Shape: (B,).
        label_smoothing: as in :func:`torch.nn.functional.cross_entropy`.

    Returns:
        ``{"loss", "accuracy"}``: mean cross-entropy and the batch top-1 accuracy.
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise XmrError(f"need logits (B, C) and labels (B,); got {tuple(logits.shape)} and {tuple(labels.shape)}")
    loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    acc = (logits.argmax(dim=1) == labels).float().mean().detach()
    return {"loss": loss, "accuracy": acc}
