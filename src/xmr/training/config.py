"""Training hyper-parameters as a frozen, validated dataclass (saved as ``train.json``)."""

from __future__ import annotations

from dataclasses import dataclass

from xmr.errors import XmrError
from xmr.losses import LOSSES
from xmr.losses.registry import capabilities as loss_capabilities
from xmr.training.sparse_objective import PAIR_NAMES, PAPER_WEIGHTS
from xmr.utils.numbers import check_finite_fields

HARDEST_NEGATIVE_LOSSES = ("vse++",)
#: the dual-path paper's instance loss (a shared classifier over training groups, Eqs. 5-8); not a
#: registered pair loss because it also takes the group labels and the classifier weight
INSTANCE = "instance"
#: GXN's generative training paths (Algorithm 1): caption decoding from v_l, image generation from t_l
GENERATIVE_PATHS = ("i2t", "t2i")
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
        generative: GXN's generative paths on the grounded branch (Algorithm 1): ``"i2t"`` decodes
            the caption from v_l (Sec. 3.3), ``"t2i"`` generates the image from t_l (Sec. 3.4);
            each step runs a path's update and then the rank update of Eq. 3. Needs a two-branch model.
        caption_rl: after ``caption_xe_epochs`` XE-only epochs, train the decoder on the mixed loss
            (1 - gamma) L_xe + gamma L_rl (Eq. 7), L_rl self-critical with a CIDEr-D reward and the
            greedy decode's reward as baseline (Eqs. 5-6); False: cross-entropy throughout ("i2t, xe").
        caption_xe_epochs: XE-only epochs before the mixed loss.
        rl_gamma: gamma of Eq. 7 at the first and last mixed epoch, linear in between (GXN: 0.05 -> 0.95).
        scheduled_sampling: the highest probability that a decoder step reads its own sampled
            word instead of the ground truth (Algorithm 1, Gen_i2t line 2).
        scheduled_sampling_step: that probability's rise per epoch (0, step, 2 step, ... up to the highest).
        gan_beta_f, gan_beta_w: weights of the fake-image and wrong-caption terms of D's loss (Eq. 11; GXN 0.5, 0.5).
        gan_beta_s: weight of the conditioning-augmentation KL in G's loss (Eq. 12; GXN 2).
        gan_lr: Adam learning rate of the discriminator (betas 0.5, 0.999; GXN: 2e-4).
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
    generative: tuple[str, ...] = ()
    caption_rl: bool = True
    caption_xe_epochs: int = 1
    rl_gamma: tuple[float, float] = (0.05, 0.95)
    scheduled_sampling: float = 0.25
    scheduled_sampling_step: float = 0.05
    gan_beta_f: float = 0.5
    gan_beta_w: float = 0.5
    gan_beta_s: float = 2.0
    gan_lr: float = 2e-4

    def __post_init__(self) -> None:
        check_finite_fields(self)
        if self.loss not in train_loss_names():
            raise XmrError(f"unknown loss {self.loss!r}; known: {', '.join(train_loss_names())}")
        LOSSES.get(self.rank_loss)
        if self.then is not None and (self.loss != INSTANCE or self.then != INSTANCE_RANK):
            raise XmrError(f"then={self.then!r}: only loss='instance' has a second stage, "
                             f"and it must be {INSTANCE_RANK!r}")
        if self.then is not None and not 1 <= self.stage1_epochs < self.epochs:
            raise XmrError(f"stage1_epochs ({self.stage1_epochs}) must be in [1, epochs={self.epochs}) "
                             f"with then={self.then!r}")
        object.__setattr__(self, "generative", tuple(self.generative))  # JSON lists too
        object.__setattr__(self, "rl_gamma", tuple(float(g) for g in self.rl_gamma))
        bad = [p for p in self.generative if p not in GENERATIVE_PATHS]
        if bad or len(set(self.generative)) != len(self.generative):
            raise XmrError(f"generative paths must be distinct names of {', '.join(GENERATIVE_PATHS)}, "
                           f"got {','.join(self.generative)}")
        checks = {
            "seed": 0 <= self.seed < 2**32, "margin": self.margin >= 0, "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2,
            "lr": self.lr > 0, "weight_decay": self.weight_decay >= 0,
            "warmup_epochs": self.warmup_epochs >= 0, "patience": self.patience >= 0,
            "vse0_warmup_epochs": self.vse0_warmup_epochs >= 0, "collapse_epochs": self.collapse_epochs >= 1,
            "pseudo_beta": 0.0 <= self.pseudo_beta <= 1.0, "pseudo_margin": self.pseudo_margin >= 0,
            "grl_eta": self.grl_eta > 0, "disc_hidden": self.disc_hidden >= 1, "grad_clip": self.grad_clip >= 0,
            "finetune_lr": self.finetune_lr > 0, "ema_decay": 0.0 <= self.ema_decay < 1.0,
            "cross_style": self.cross_style >= 0, "caption_xe_epochs": self.caption_xe_epochs >= 0,
            "rl_gamma": len(self.rl_gamma) == 2 and all(0.0 <= g <= 1.0 for g in self.rl_gamma),
            "scheduled_sampling": 0.0 <= self.scheduled_sampling <= 1.0,
            "scheduled_sampling_step": self.scheduled_sampling_step >= 0,
            "gan_beta_f": self.gan_beta_f >= 0, "gan_beta_w": self.gan_beta_w >= 0, "gan_beta_s": self.gan_beta_s >= 0,
            "gan_lr": self.gan_lr > 0,
            "steps_per_epoch": self.steps_per_epoch is None or self.steps_per_epoch >= 1,
            "adv_weights": len(self.adv_weights) == len(PAIR_NAMES) and all(w >= 0 for w in self.adv_weights),
        }
        for name, ok in checks.items():
            if not ok:
                raise XmrError(f"invalid {name}: {getattr(self, name)!r}")
        object.__setattr__(self, "adv_weights", tuple(float(w) for w in self.adv_weights))  # JSON lists too
        if self.hardest_negative and self.epochs <= self.vse0_warmup_epochs:
            raise XmrError(f"epochs ({self.epochs}) must exceed vse0_warmup_epochs ({self.vse0_warmup_epochs})")

    def caption_gamma(self, epoch: int) -> float:
        """Eq. 7's gamma in 0-based ``epoch``: 0 in the XE-only epochs (and without ``caption_rl``),
        then linear from ``rl_gamma[0]`` at the first mixed epoch to ``rl_gamma[1]`` at the last."""
        if not self.caption_rl or epoch < self.caption_xe_epochs:
            return 0.0
        span = max(1, self.epochs - 1 - self.caption_xe_epochs)
        lo, hi = self.rl_gamma
        return lo + (hi - lo) * min(1.0, (epoch - self.caption_xe_epochs) / span)

    def sampling_prob(self, epoch: int) -> float:
        """Scheduled sampling's probability in 0-based ``epoch``: ``step x epoch``, capped at ``scheduled_sampling``."""
        return min(self.scheduled_sampling, self.scheduled_sampling_step * epoch)

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
