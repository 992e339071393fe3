"""Domain discriminators and A3VSE's adversarial attentive alignment loss (Eqs. 4-8).

Huang et al., "Annotation Efficient Cross-Modal Retrieval with Adversarial Attentive Alignment"
(A3VSE, ACM MM 2019), Sec. 3.3. Four domains of embedded inputs:

    "v"  = G^v(v)    annotated images         "t" = G^t(t)  their text descriptions
    "vu" = G^v(v^u)  un-annotated images      "s" = G^t(s)  their regional-semantics "sentences"

and six discriminators, each separating one pair of domains, with the weights of Sec. 4:

    ============  ==========  ====================================  ======
    alignment     pair (A, B)  what it separates                    lambda
    ============  ==========  ====================================  ======
    intra-modal   v  / vu     annotated vs un-annotated images      0.2
    intra-modal   t  / s      descriptions vs regional semantics    0.1
    cross-modal   v  / t      annotated images vs their texts       0.5
    cross-modal   vu / s      un-annotated images vs their tags     0.5
    transitive    v  / s      annotated images vs semantics         0.3
    transitive    vu / t      un-annotated images vs descriptions   0.3
    ============  ==========  ====================================  ======

Eq. 4: ``l_d(A, B; theta) = mean_i log D(a_i) + mean_j log(1 - D(b_j))``; the discriminators
maximise it and the encoders minimise it (Eq. 10). Here each discriminator sees its inputs
through a gradient reversal layer, and the returned loss is ``sum_p lambda_p * BCE_p`` with
``BCE_p = -l_d`` (A labelled 1, B labelled 0). Minimising that one number trains the
discriminators to separate (maximise l_d) and, through the reversed gradient, the encoders to
confuse them (minimise l_d): the min-max of Eq. 10 in one ``backward()``. Add it to the triplet
loss (Eq. 9: l = l_adv + l_tri, with l_adv's sign carried by the GRL).

The paper does not describe the discriminator network; :class:`DomainDiscriminator` is a small
MLP (Linear-ReLU-Dropout-Linear) that outputs a logit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from xmr.errors import XmrError
from xmr.models.grl import grad_reverse


class DomainPair(NamedTuple):
    """One of A3VSE's six discriminators: domain ``a`` (label 1) vs domain ``b`` (label 0)."""

    name: str
    a: str
    b: str
    weight: float
    alignment: str


DOMAINS = ("v", "t", "vu", "s")

A3VSE_PAIRS: tuple[DomainPair, ...] = (
    DomainPair("v_vu", "v", "vu", 0.2, "intra"),   # Eq. 5, lambda_vvu
    DomainPair("t_s", "t", "s", 0.1, "intra"),     # Eq. 5, lambda_ts
    DomainPair("v_t", "v", "t", 0.5, "cross"),     # Eq. 6, lambda_vt
    DomainPair("vu_s", "vu", "s", 0.5, "cross"),   # Eq. 6, lambda_vus
    DomainPair("v_s", "v", "s", 0.3, "trans"),     # Eq. 7, lambda_vs
    DomainPair("vu_t", "vu", "t", 0.3, "trans"),   # Eq. 7, lambda_vut
)
_PAIRS_BY_NAME = {p.name: p for p in A3VSE_PAIRS}


class DomainDiscriminator(nn.Module):
    """D_theta: an embedding -> the logit that it comes from domain A rather than B.

    Args:
        dim: embedding dimension.
        hidden_dim: width of the hidden layer.
        dropout: dropout after the hidden activation.

    Shape:
        (B, dim) -> (B,) logits; ``sigmoid`` gives D_theta(a) of Eq. 4.
    """

    def __init__(self, dim: int, *, hidden_dim: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        if dim < 1 or hidden_dim < 1:
            raise XmrError(f"dim and hidden_dim must be >= 1, got {dim} and {hidden_dim}")
        if not 0.0 <= dropout < 1.0:
            raise XmrError(f"dropout must be in [0, 1), got {dropout}")
        self.net = nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def domain_adversarial_loss(discriminator: nn.Module, a: torch.Tensor, b: torch.Tensor, *,
                            coeff: float = 1.0) -> dict[str, torch.Tensor]:
    """``-l_d(A, B)`` of A3VSE Eq. 4 for one discriminator, with its inputs behind a GRL.

    Args:
        discriminator: maps (n, d) embeddings to (n,) logits.
        a: a mini-batch of domain A (label 1). Shape: (B_a, d).
        b: a mini-batch of domain B (label 0). Shape: (B_b, d).
        coeff: gamma of the gradient reversal (see :func:`xmr.models.grl.grl_schedule`);
            0 trains the discriminator only.

    Returns:
        ``{"loss", "acc"}``: ``-(mean log D(a) + mean log(1 - D(b)))``, and the discriminator's
        accuracy over both batches (detached; 0.5 = the domains are confused).
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise XmrError(f"domain batches must be non-empty (B_a, d) and (B_b, d), got {tuple(a.shape)} "
                       f"and {tuple(b.shape)}")
    logit_a = discriminator(grad_reverse(a, coeff))
    logit_b = discriminator(grad_reverse(b, coeff))
    loss = (F.binary_cross_entropy_with_logits(logit_a, torch.ones_like(logit_a))
            + F.binary_cross_entropy_with_logits(logit_b, torch.zeros_like(logit_b)))
    correct = (logit_a > 0).sum() + (logit_b <= 0).sum()
    return {"loss": loss, "acc": (correct.float() / (len(a) + len(b))).detach()}


def adversarial_alignment_loss(discriminators: Mapping[str, nn.Module], feats: Mapping[str, torch.Tensor], *,
                               weights: Mapping[str, float] | None = None, coeff: float = 1.0
                               ) -> dict[str, torch.Tensor]:
    """Weighted sum of the discriminator losses of A3VSE Eqs. 5-8, through gradient reversal.

    Args:
        discriminators: one module per pair to align, keyed by pair name in
            :data:`A3VSE_PAIRS` ("v_vu", "t_s", "v_t", "vu_s", "v_s", "vu_t"); a subset is fine.
        feats: embedded mini-batches keyed by domain, from {"v", "t", "vu", "s"}.
            Shape: each (B_domain, d).
        weights: lambda per pair name (default: the paper's, see :data:`A3VSE_PAIRS`).
        coeff: gamma of the gradient reversal layer.

    Returns:
        ``{"loss", "loss_<pair>", "acc_<pair>"}`` for every pair given: ``loss`` =
        sum_p lambda_p (-l_d,p), to be added to the triplet loss and minimised.

    Raises:
        XmrError: an unknown pair name, a pair whose domain batch is missing, or no pair.
    """
    if not discriminators:
        raise XmrError("adversarial_alignment_loss needs at least one discriminator")
    weights = {} if weights is None else dict(weights)
    for name in (*discriminators, *weights):
        if name not in _PAIRS_BY_NAME:
            raise XmrError(f"unknown domain pair {name!r}; known: {', '.join(_PAIRS_BY_NAME)}")
    out: dict[str, torch.Tensor] = {}
    total: torch.Tensor | None = None
    for name, disc in discriminators.items():
        pair = _PAIRS_BY_NAME[name]
        for domain in (pair.a, pair.b):
            if domain not in feats:
                raise XmrError(f"pair {name!r} needs the {domain!r} batch; got {', '.join(feats) or 'none'}")
        part = domain_adversarial_loss(disc, feats[pair.a], feats[pair.b], coeff=coeff)
        term = float(weights.get(name, pair.weight)) * part["loss"]
        total = term if total is None else total + term
        out[f"loss_{name}"], out[f"acc_{name}"] = part["loss"], part["acc"]
    assert total is not None
    return {"loss": total, **out}


def make_a3vse_discriminators(dim: int, *, hidden_dim: int = 512, dropout: float = 0.0) -> nn.ModuleDict:
    """The six discriminators of A3VSE, keyed by pair name (see :data:`A3VSE_PAIRS`)."""
    return nn.ModuleDict({p.name: DomainDiscriminator(dim, hidden_dim=hidden_dim, dropout=dropout)
                          for p in A3VSE_PAIRS})
