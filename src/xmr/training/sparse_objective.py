"""A3VSE's objective around any pair loss: pseudo-pair triplets and adversarial domain alignment.

Huang et al., "Annotation Efficient Cross-Modal Retrieval with Adversarial Attentive Alignment"
(A3VSE, ACM MM 2019), Eqs. 3-9. Given the embedded mini-batches of four domains,

    "v" / "t"    annotated images and their texts (row i of each is a pair)
    "vu" / "s"   un-annotated images and their pseudo-texts (paired likewise)

the loss is

    l = beta * l_vt + (1 - beta) * l_p(vu, s; alpha_vs)            Eq. 3 (l_vt: the run's pair loss)
        + sum_pairs lambda_pair * BCE_pair behind a GRL of gamma     Eqs. 4-8

with l_p the VSE++ hardest-negative hinge (Eq. 2). Without the pseudo domains the triplet part is
``l_vt`` alone (weight 1); the discriminators see only the pairs whose two domains are present.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from xmr.errors import XmrError
from xmr.losses import vse_loss
from xmr.models.discriminator import A3VSE_PAIRS, adversarial_alignment_loss

PAIR_NAMES: tuple[str, ...] = tuple(p.name for p in A3VSE_PAIRS)    # v_vu, t_s, v_t, vu_s, v_s, vu_t
PAPER_WEIGHTS: tuple[float, ...] = tuple(p.weight for p in A3VSE_PAIRS)  # 0.2, 0.1, 0.5, 0.5, 0.3, 0.3


def sparse_alignment_loss(emb: Mapping[str, torch.Tensor], pair_loss: torch.Tensor, *, beta: float = 0.8,
                          pseudo_margin: float = 0.3,
                          discriminators: Mapping[str, nn.Module] | nn.ModuleDict | None = None,
                          weights: Mapping[str, float] | None = None, coeff: float = 0.0
                          ) -> dict[str, torch.Tensor]:
    """A3VSE's Eq. 9 for one mini-batch.

    Args:
        emb: L2-normalised embeddings by domain: "v", "t" and optionally "vu" and "s".
            Shape: each (B_domain, d); "v"/"t" and "vu"/"s" row-paired. The pseudo-pair
            triplet needs both "vu" and "s"; a domain alone only feeds the discriminators.
        pair_loss: l_vt, the run's loss on the annotated pairs (e.g. VSE++ of Eq. 2). Scalar.
        beta: weight of l_vt when pseudo pairs are present (the paper's 0.8).
        pseudo_margin: alpha_vs of the pseudo-pair hinge (the paper's 0.3).
        discriminators: modules keyed by pair name (None: no adversarial term).
        weights: lambda per pair name (default: the paper's).
        coeff: gamma of the gradient reversal at this step.

    Returns:
        ``loss``; ``triplet_vs`` when pseudo pairs are present; ``adversarial`` and the
        per-pair ``loss_<pair>`` / ``acc_<pair>`` when discriminators are given.
    """
    has_pseudo = "vu" in emb and "s" in emb
    if not 0.0 <= beta <= 1.0:
        raise XmrError(f"beta must be in [0, 1], got {beta}")
    out: dict[str, torch.Tensor] = {}
    loss = pair_loss
    if has_pseudo:
        tri_vs = vse_loss(emb["vu"], emb["s"], margin=pseudo_margin, max_violation=True)["loss"]
        out["triplet_vs"] = tri_vs
        loss = beta * pair_loss + (1.0 - beta) * tri_vs
    if discriminators:
        active = {p.name: discriminators[p.name] for p in A3VSE_PAIRS
                  if p.name in discriminators and p.a in emb and p.b in emb}
        if active:
            adv = adversarial_alignment_loss(active, {d: emb[d] for d in ("v", "t", "vu", "s") if d in emb},
                                             weights=weights, coeff=coeff)
            out.update({k: v for k, v in adv.items() if k != "loss"})
            out["adversarial"] = adv["loss"]
            loss = loss + adv["loss"]
    out["loss"] = loss
    return out
