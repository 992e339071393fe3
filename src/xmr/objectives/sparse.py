"""A3VSE's objective around the run's: pseudo-pair triplets and adversarial domain alignment.

Huang et al., "Annotation Efficient Cross-Modal Retrieval with Adversarial Attentive Alignment"
(A3VSE, ACM MM 2019), Eqs. 3-9. Given the embedded mini-batches of four domains,

    "v" / "t"    annotated images and their texts (row i of each is a pair)
    "vu" / "s"   un-annotated images and their pseudo-texts (paired likewise)

the loss is

    l = beta * l_vt + (1 - beta) * l_p(vu, s; alpha_vs)            Eq. 3 (l_vt: the run's objective)
        + sum_pairs lambda_pair * BCE_pair behind a GRL of gamma     Eqs. 4-8

with l_p the VSE++ hardest-negative hinge (Eq. 2). Without the pseudo domains the triplet part is
``l_vt`` alone (weight 1); the discriminators see only the pairs whose two domains are present.
The component owns the pseudo pairs' draws and the six discriminators (trained with the heads,
kept in ``last.pt``, never in the served model).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from xmr.errors import Param, XmrError
from xmr.evaluation.similarity import is_inner_product
from xmr.losses import vse_loss
from xmr.models import grl_schedule, make_a3vse_discriminators
from xmr.models.discriminator import A3VSE_PAIRS, adversarial_alignment_loss
from xmr.objectives.base import (
    EpochData,
    Fit,
    ObjectiveComponent,
    PairArrays,
    Setup,
    Step,
    Terms,
    TrainSettings,
    epoch_order,
    register_component,
)
from xmr.utils.numbers import check_finite_fields

PAIR_NAMES: tuple[str, ...] = tuple(p.name for p in A3VSE_PAIRS)    # v_vu, t_s, v_t, vu_s, v_s, vu_t
PAPER_WEIGHTS: tuple[float, ...] = tuple(p.weight for p in A3VSE_PAIRS)  # 0.2, 0.1, 0.5, 0.5, 0.3, 0.3


@dataclass(frozen=True)
class SparseAlignmentConfig:
    """A3VSE's terms (present with pseudo pairs or the discriminators).

    Attributes:
        pseudo_beta: with pseudo pairs (un-annotated images + pseudo-texts, A3VSE Eq. 3): the
            weight beta of the annotated pairs' loss; 1 - beta weights the pseudo-pair hinge.
        pseudo_margin: alpha_vs, the margin of the pseudo-pair VSE++ hinge (A3VSE: 0.3).
        adversarial: add A3VSE's six domain discriminators behind a gradient-reversal layer
            (Eqs. 4-8); pairs whose domains are absent (no pseudo pairs) are skipped.
        adv_weights: lambda of (v_vu, t_s, v_t, vu_s, v_s, vu_t) (A3VSE: 0.2, 0.1, 0.5, 0.5, 0.3, 0.3).
        grl_eta: eta of the GRL schedule gamma(p) = 2 / (1 + exp(-eta p)) - 1, p = step / total steps.
        disc_hidden: hidden width of each discriminator MLP.
    """

    pseudo_beta: float = 0.8
    pseudo_margin: float = 0.3
    adversarial: bool = False
    adv_weights: tuple[float, ...] = PAPER_WEIGHTS
    grl_eta: float = 10.0
    disc_hidden: int = 256

    def __post_init__(self) -> None:
        check_finite_fields(self)
        checks = {"pseudo_beta": 0.0 <= self.pseudo_beta <= 1.0, "pseudo_margin": self.pseudo_margin >= 0,
                  "grl_eta": self.grl_eta > 0, "disc_hidden": self.disc_hidden >= 1,
                  "adv_weights": len(self.adv_weights) == len(PAIR_NAMES) and all(w >= 0 for w in self.adv_weights)}
        for name, ok in checks.items():
            if not ok:
                raise XmrError("invalid {field}: {value}", field=name, value=repr(getattr(self, name)))
        object.__setattr__(self, "adv_weights", tuple(float(w) for w in self.adv_weights))  # JSON lists too


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
        raise XmrError("beta must be in [0, 1], got {beta}", beta=beta)
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


@register_component
class SparseAlignment(ObjectiveComponent):
    """A3VSE Eq. 9 around the objective so far: the pseudo-pair hinge and the GRL discriminators."""

    name = "sparse"
    config_field = "sparse"
    about = "A3VSE's pseudo pairs and adversarial terms"
    micro_batches = False  # its pseudo pairs' embeddings and discriminators sit outside the batch's
    cosine_only = True
    config_type = SparseAlignmentConfig
    flat_fields = {k: k for k in ("pseudo_beta", "pseudo_margin", "adversarial", "adv_weights", "grl_eta",
                                  "disc_hidden")}

    def __init__(self, setup: Setup, config: SparseAlignmentConfig) -> None:
        super().__init__(setup, config)
        pseudo = setup.inputs.get(self.name)
        self.pseudo: PairArrays | None = pseudo  # type: ignore[assignment]  # the trainer gives a PairSet
        self.config = config
        self.model = setup.model
        self.seed, self.batch_size, self.total_steps = setup.train.seed, setup.train.batch_size, setup.total_steps
        self.discriminators = (make_a3vse_discriminators(setup.model.config.embed_dim, hidden_dim=config.disc_hidden)
                               if config.adversarial else None)
        self.pseudo_order: np.ndarray | None = None

    @classmethod
    def settle(cls, config: SparseAlignmentConfig | None, inputs: Collection[str]) -> SparseAlignmentConfig | None:
        """Used with pseudo pairs (default settings when none are given) or with the discriminators."""
        if cls.name in inputs:
            return config or SparseAlignmentConfig()
        return config if config is not None and config.adversarial else None

    @classmethod
    def config_from_flat(cls, flat: Mapping[str, Any], loss: str,
                         inputs: Collection[str]) -> SparseAlignmentConfig | None:
        """Its config from the flat ``TrainConfig`` fields of older files and of the CLI: present with
        pseudo pairs (``inputs`` names this component) or where a setting differs from its default."""
        given = {k: flat[k] for k in cls.flat_fields if k in flat}
        config = SparseAlignmentConfig(**given)
        return config if cls.name in inputs or config != SparseAlignmentConfig() else None

    @classmethod
    def check_fit(cls, config: SparseAlignmentConfig, fit: Fit, train: TrainSettings) -> None:
        if not is_inner_product(fit.similarity):
            raise XmrError("{about} need the cosine similarity; train them with {fix}", about=cls.about,
                           fix=Param("similarity", "cosine"))

    def modules(self) -> dict[str, nn.Module]:
        return {"discriminators": self.discriminators} if self.discriminators is not None else {}

    def begin_epoch(self, epoch: EpochData) -> None:
        """This epoch's order of the pseudo pairs (their own seeded stream)."""
        if self.pseudo is not None:
            rng = np.random.default_rng([self.seed, epoch.epoch, 1])
            self.pseudo_order = epoch_order(len(self.pseudo.pairs), epoch.n_batches, self.batch_size, rng)

    def add_terms(self, step: Step, out: Terms) -> Terms:
        emb = dict(self.gather({"v": step.img, "t": step.txt}))
        if self.pseudo is not None and self.pseudo_order is not None:
            b, size = step.batch.index, self.batch_size
            pidx = self.pseudo.pairs[self.pseudo_order[b * size:(b + 1) * size]]
            device = step.img.device
            emb["vu"] = self.model.embed_images(torch.from_numpy(self.pseudo.image_feats[pidx[:, 0]]).to(device))
            emb["s"] = self.model.embed_texts(torch.from_numpy(self.pseudo.text_feats[pidx[:, 1]]).to(device))
        coeff = grl_schedule(min(1.0, step.global_step / self.total_steps), eta=self.config.grl_eta)
        weights = dict(zip(PAIR_NAMES, self.config.adv_weights))
        extra = sparse_alignment_loss(emb, out["loss"], beta=self.config.pseudo_beta,
                                      pseudo_margin=self.config.pseudo_margin, discriminators=self.discriminators,
                                      weights=weights, coeff=coeff)
        return {**out, "pair_loss": out["loss"], **extra, "grl_gamma": torch.tensor(coeff)}
