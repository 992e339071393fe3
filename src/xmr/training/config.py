"""Training hyper-parameters as a frozen, validated dataclass (saved as ``train.json``)."""

from __future__ import annotations

from dataclasses import dataclass

from xmr.losses import LOSSES

HARDEST_NEGATIVE_LOSSES = ("vse++",)


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

    def __post_init__(self) -> None:
        LOSSES.get(self.loss)  # unknown loss -> XmrError listing the known ones
        checks = {
            "margin": self.margin >= 0, "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 2,
            "lr": self.lr > 0, "weight_decay": self.weight_decay >= 0,
            "warmup_epochs": self.warmup_epochs >= 0, "patience": self.patience >= 0,
            "vse0_warmup_epochs": self.vse0_warmup_epochs >= 0, "collapse_epochs": self.collapse_epochs >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"invalid {name}: {getattr(self, name)!r}")
        if self.hardest_negative and self.epochs <= self.vse0_warmup_epochs:
            raise ValueError(f"epochs ({self.epochs}) must exceed vse0_warmup_epochs ({self.vse0_warmup_epochs})")

    @property
    def hardest_negative(self) -> bool:
        return self.loss in HARDEST_NEGATIVE_LOSSES

    def loss_kwargs(self) -> dict[str, float]:
        return {} if self.loss == "infonce" else {"margin": self.margin}
