"""Training hyper-parameters as a frozen, validated dataclass (saved in ``train.json`` and ``run.json``).

What every run has is a field of :class:`TrainConfig`; what one objective component reads (a
hardest-negative loss's warm-up, the instance loss's stages, the cross-style term, GXN's generative
paths, A3VSE's terms) is that component's config in ``components``
(:class:`~xmr.objectives.ComponentConfigs`), present only when used. Files written before the
components had configs of their own hold every setting flat in ``train``; they load, and match a
new run of the same settings, through :meth:`TrainConfig.upgrade_saved`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from xmr.errors import XmrError
from xmr.objectives import ComponentConfigs, configs_from_flat, primary_component
from xmr.objectives.components import flat_fields
from xmr.objectives.instance import INSTANCE
from xmr.objectives.pair import loss_kwargs
from xmr.utils.io import to_jsonable
from xmr.utils.json_types import fields_by_owner
from xmr.utils.numbers import check_finite_fields

#: the JSON key of the component configs
COMPONENTS_KEY = "components"


@dataclass(frozen=True)
class TrainConfig:
    """How to train a :class:`~xmr.models.JointModel` on cached features.

    Attributes:
        loss: the base objective: a registered pair loss (``infonce``, ``vse0``, ``vse++``) or the
            dual-path ``instance`` loss (:func:`~xmr.objectives.train_loss_names`).
        margin: hinge margin for the ranking losses (VSE++ paper: 0.2).
        epochs: maximum number of passes over the training pairs.
        batch_size: pairs per step; in-batch negatives come from the same batch.
        lr, weight_decay: AdamW settings.
        warmup_epochs: linear learning-rate warm-up, then cosine decay to zero.
        patience: stop after this many epochs without a better validation rsum (0 = never).
        seed: seeds initialisation, shuffling and dropout.
        grad_clip: clip the gradient norm to this (0 = off; A3VSE: 2.0).
        steps_per_epoch: optimiser steps per epoch (None: one pass over the annotated pairs);
            sparse corpora have few pairs, so a fixed count keeps epochs comparable.
        finetune_lr: the learning rate of a fine-tuned encoder tail (the run's
            ``finetune_image_blocks`` / ``finetune_text_layers``), below the heads' ``lr``; with
            the instance loss's two stages the tail stays frozen through Stage I (dual-path Sec. III).
        finetune_lr_decay: layer-wise learning-rate decay of a fine-tuned tail (1: none): its last layer
            group trains at ``finetune_lr``, each one nearer the input at this factor times the next's
            (:func:`xmr.training.trainer.tail_groups`; e.g. 0.65-0.8 for a whole CLIP tower).
        ema_decay: average the weights over steps with this decay (e.g. 0.999; 0: off) and
            validate / keep the best checkpoint with the average (:mod:`xmr.training.ema`): a
            steadier epoch choice than the raw weights' jumping validation rsum.
        components: each objective component's config, None where unused
            (:class:`~xmr.objectives.ComponentConfigs`); the loss's own is filled in when it needs one.
    """

    loss: str = "infonce"
    margin: float = 0.2
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    patience: int = 5
    seed: int = 0
    grad_clip: float = 0.0
    steps_per_epoch: int | None = None
    finetune_lr: float = 1e-4
    finetune_lr_decay: float = 1.0
    ema_decay: float = 0.0
    components: ComponentConfigs = field(default_factory=ComponentConfigs)

    def __post_init__(self) -> None:
        check_finite_fields(self)
        primary_component(self.loss)  # an unknown loss, listing the known ones
        object.__setattr__(self, "components", self.components.for_loss(self.loss))
        checks = {
            "seed": 0 <= self.seed < 2**32, "margin": self.margin >= 0, "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2, "lr": self.lr > 0, "weight_decay": self.weight_decay >= 0,
            "warmup_epochs": self.warmup_epochs >= 0, "patience": self.patience >= 0, "grad_clip": self.grad_clip >= 0,
            "finetune_lr": self.finetune_lr > 0, "finetune_lr_decay": 0 < self.finetune_lr_decay <= 1,
            "ema_decay": 0.0 <= self.ema_decay < 1.0,
            "steps_per_epoch": self.steps_per_epoch is None or self.steps_per_epoch >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise XmrError("invalid {field}: {value}", field=name, value=repr(getattr(self, name)))
        for _, config in self.components.present():
            check = getattr(config, "check_train", None)
            if check is not None:
                check(self)

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any] | None = None, /, *, inputs: Collection[str] = (),
                  **more: Any) -> TrainConfig:
        """The config that flat settings describe: this class's fields plus the components' settings
        under their old flat names (``vse0_warmup_epochs``, ``then``, ``cross_style``, ``generative``,
        ``pseudo_beta`` ...; the CLI's option dests and older files use them). ``inputs`` names the
        components the run gives data to (``"sparse"``: it has pseudo pairs)."""
        values = {**(flat or {}), **more}
        components = configs_from_flat(values, values.get("loss", cls.loss), inputs)
        return cls(**{k: v for k, v in values.items() if k not in flat_fields()}, components=components)

    @classmethod
    def upgrade_saved(cls, saved: Mapping[str, Any], inputs: Collection[str] = ()) -> dict[str, Any]:
        """A saved ``train`` object in today's form: one written with every setting flat (before the
        components had configs) becomes the nested form of the same config; a nested one is unchanged."""
        if COMPONENTS_KEY in saved:
            return dict(saved)
        try:
            components = configs_from_flat(saved, saved.get("loss", cls.loss), inputs)
        except TypeError as e:  # a value of the wrong JSON type for a component's setting
            raise XmrError("not a valid {what} ({e})", what=cls.__name__, e=e) from None
        return {**{k: v for k, v in saved.items() if k not in flat_fields()}, COMPONENTS_KEY: to_jsonable(components)}

    @classmethod
    def fields_by_class(cls, by_dest: Mapping[str, str]) -> dict[type, dict[str, str]]:
        """``{config dataclass: {option dest: field}}`` of options that fill flat settings (``{dest: flat
        name}``, as :meth:`from_flat` reads them): this class's fields, and each component setting's field
        of its component's config class (where the help reads each default)."""
        return fields_by_owner(by_dest, flat_fields(), cls)

    @property
    def final_objective(self) -> str:
        """The objective whose epochs may become the best checkpoint (Stage II with the instance loss's two stages)."""
        instance = self.components.instance
        return (instance.then or INSTANCE) if instance is not None else self.loss

    def loss_kwargs(self, name: str | None = None) -> dict[str, float]:
        """Hyper-parameters of the registered loss ``name`` (default: ``loss``)."""
        return loss_kwargs(name or self.loss, self.margin)
