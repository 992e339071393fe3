"""Training hyper-parameters as a frozen, validated dataclass (saved as ``train.json``)."""

from __future__ import annotations

from dataclasses import dataclass

from xmr.errors import XmrError
from xmr.losses import LOSSES
from xmr.losses.registry import capabilities as loss_capabilities
from xmr.training.sparse_objective import PAIR_NAMES, PAPER_WEIGHTS

HARDEST_NEGATIVE_LOSSES = ("vse++",)
#: the dual-path paper's instance loss (a shared classifier over training groups, Eqs. 5-8); not a
#: registered pair loss because it also takes the group labels and the classifier weight
INSTANCE = "instance"
#: Stage II of the dual-path schedule: instance loss + the ranking loss ``rank_loss`` (Eq. 9)
INSTANCE_RANK = "instance+rank"


def train_loss_names() -> list[str]:
    """Every valid ``TrainConfig.loss`` (``--loss``): the registered pair losses and ``instance``."""
    return sorted([*LOSSES.names(), INSTANCE])


@dataclass(frozen=True)
class TrainConfig:
    """How to train a :class:`~xmr.models.JointModel` on cached features.

    Attributes:
        loss: a registered loss name: ``infonce``, ``vse0``, ``vse++``.
        margin: hinge margin for the ranking losses (VSE++ paper: 0.2).
        epochs: maximum number of passes over the training pairs.
        batch_size: pairs per step; in-batch negatives come from the same batch.
        lr, weight_decay: AdamW settings.
        warmup_epochs: linear learning-rate warm-up, then cosine decay to zero.
        patience: stop after this many epochs without a better validation rsum (0 = never).
        vse0_warmup_epochs: with a hardest-negative loss, first train this many epochs with the
            sum-over-negatives loss (hardest negatives from a random start collapse easily).
            Warm-up epochs are validated and logged but never chosen as the best checkpoint.
        collapse_epochs: with a hardest-negative loss, stop and report a collapse when the mean
            epoch loss has sat within 1 % of 2 x margin for this many epochs after the warm-up.
        seed: seeds initialisation, shuffling and dropout.
        then: with ``loss="instance"``, the objective after ``stage1_epochs``:
            ``"instance+rank"`` (the dual-path paper's Stage II, Eq. 9 with lam1 = lam2 = lam3 = 1),
            or None (instance loss throughout).
        stage1_epochs: length of Stage I (instance loss only) before ``then``. Stage I epochs are
            validated and logged but never chosen as the best checkpoint when ``then`` is set.
        rank_loss: the registered ranking loss of Stage II (default VSE++, margin ``margin``).
        pseudo_beta: with pseudo pairs (un-annotated images + pseudo-texts, A3VSE Eq. 3): the
            weight beta of the annotated pairs' loss; 1 - beta weights the pseudo-pair hinge.
        pseudo_margin: alpha_vs, the margin of the pseudo-pair VSE++ hinge (A3VSE: 0.3).
        adversarial: add A3VSE's six domain discriminators behind a gradient-reversal layer
            (Eqs. 4-8); pairs whose domains are absent (no pseudo pairs) are skipped.
        adv_weights: lambda of (v_vu, t_s, v_t, vu_s, v_s, vu_t) (A3VSE: 0.2, 0.1, 0.5, 0.5, 0.3, 0.3).
        grl_eta: eta of the GRL schedule gamma(p) = 2 / (1 + exp(-eta p)) - 1, p = step / total steps.
        disc_hidden: hidden width of each discriminator MLP.
        grad_clip: clip the gradient norm to this (0 = off; A3VSE: 2.0).
        steps_per_epoch: optimiser steps per epoch (None: one pass over the annotated pairs);
            sparse corpora have few pairs, so a fixed count keeps epochs comparable.
        ema_decay: average the weights over steps with this decay (e.g. 0.999; 0: off) and
            validate / keep the best checkpoint with the average (:mod:`xmr.training.ema`): a
            steadier epoch choice than the raw weights' jumping validation rsum.
        cross_style: weight of the cross-style image-image term added to the objective
            (:func:`xmr.losses.cross_style.cross_style_loss`): each training image against another
            image of its group, drawn afresh each epoch (0: off). Only images whose group has
            another image take part (the emoji's four styles; an icon is its own group).
        finetune_lr: the learning rate of a fine-tuned image-encoder tail (the run's
            ``finetune_image_blocks``), below the heads' ``lr``; with ``then`` (two stages) the
            tail stays frozen through Stage I and is fine-tuned in Stage II (dual-path Sec. III).
    """

    loss: str = "infonce"
    margin: float = 0.2
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    patience: int = 5
    vse0_warmup_epochs: int = 2
    collapse_epochs: int = 2
    seed: int = 0
    then: str | None = None
    stage1_epochs: int = 0
    rank_loss: str = "vse++"
    pseudo_beta: float = 0.8
    pseudo_margin: float = 0.3
    adversarial: bool = False
    adv_weights: tuple[float, ...] = PAPER_WEIGHTS
    grl_eta: float = 10.0
    disc_hidden: int = 256
    grad_clip: float = 0.0
    steps_per_epoch: int | None = None
    finetune_lr: float = 1e-4
    ema_decay: float = 0.0
    cross_style: float = 0.0

    def __post_init__(self) -> None:
        if self.loss not in train_loss_names():
            raise XmrError(f"unknown loss {self.loss!r}; known: {', '.join(train_loss_names())}")
        LOSSES.get(self.rank_loss)
        if self.then is not None and (self.loss != INSTANCE or self.then != INSTANCE_RANK):
            raise XmrError(f"then={self.then!r}: only loss='instance' has a second stage, "
                             f"and it must be {INSTANCE_RANK!r}")
        if self.then is not None and not 1 <= self.stage1_epochs < self.epochs:
            raise XmrError(f"stage1_epochs ({self.stage1_epochs}) must be in [1, epochs={self.epochs}) "
                             f"with then={self.then!r}")
        checks = {
            "seed": 0 <= self.seed < 2**32, "margin": self.margin >= 0, "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2,
            "lr": self.lr > 0, "weight_decay": self.weight_decay >= 0,
            "warmup_epochs": self.warmup_epochs >= 0, "patience": self.patience >= 0,
            "vse0_warmup_epochs": self.vse0_warmup_epochs >= 0, "collapse_epochs": self.collapse_epochs >= 1,
            "pseudo_beta": 0.0 <= self.pseudo_beta <= 1.0, "pseudo_margin": self.pseudo_margin >= 0,
            "grl_eta": self.grl_eta > 0, "disc_hidden": self.disc_hidden >= 1, "grad_clip": self.grad_clip >= 0,
            "finetune_lr": self.finetune_lr > 0, "ema_decay": 0.0 <= self.ema_decay < 1.0,
            "cross_style": self.cross_style >= 0,
            "steps_per_epoch": self.steps_per_epoch is None or self.steps_per_epoch >= 1,
            "adv_weights": len(self.adv_weights) == len(PAIR_NAMES) and all(w >= 0 for w in self.adv_weights),
        }
        for name, ok in checks.items():
            if not ok:
                raise XmrError(f"invalid {name}: {getattr(self, name)!r}")
        object.__setattr__(self, "adv_weights", tuple(float(w) for w in self.adv_weights))  # JSON lists too
        if self.hardest_negative and self.epochs <= self.vse0_warmup_epochs:
            raise XmrError(f"epochs ({self.epochs}) must exceed vse0_warmup_epochs ({self.vse0_warmup_epochs})")

    @property
    def scores_by_inner_product(self) -> bool:
        """The loss itself scores by the inner product (InfoNCE): no other similarity can be trained with it."""
        return self.loss in LOSSES and loss_capabilities(self.loss).inner_product_only

    @property
    def hardest_negative(self) -> bool:
        return self.loss in HARDEST_NEGATIVE_LOSSES

    @property
    def uses_instances(self) -> bool:
        """True when the model needs the shared instance classifier."""
        return self.loss == INSTANCE

    @property
    def final_objective(self) -> str:
        """The objective whose epochs may become the best checkpoint."""
        return self.then or self.loss

    def loss_kwargs(self, name: str | None = None) -> dict[str, float]:
        """Hyper-parameters of the registered loss ``name`` (default: ``loss``)."""
        return {"margin": self.margin} if loss_capabilities(name or self.loss).takes_margin else {}
