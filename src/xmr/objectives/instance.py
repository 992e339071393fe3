"""The dual-path paper's instance loss and its two-stage schedule, as the primary objective component.

Zheng et al., "Dual-Path Convolutional Image-Text Embeddings with Instance Loss" (TOMM 2020):
every training group is a class of one classifier W_share shared by both modalities (Eqs. 5-8,
:func:`xmr.losses.instance.instance_loss`). Stage I trains the instance loss alone; Stage II
(``then="instance+rank"``) adds a ranking loss, ``lam1 L_rank + lam2 L_img + lam3 L_txt`` with all
weights 1 (Eq. 9). The paper's Stage I also freezes the image CNN: a fine-tuned encoder tail here
waits through Stage I (:attr:`frozen_tail_epochs`); cached frozen features train both heads in both
stages. W_share is this component's: it trains with the heads and lives in ``last.pt``, never in
the served model.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from xmr.errors import XmrError
from xmr.losses import LOSSES, TwoStageSchedule, instance_loss
from xmr.losses.registry import LossFn
from xmr.models.shared_classifier import SharedClassifier
from xmr.objectives.base import (
    EpochData,
    Fit,
    ObjectiveComponent,
    Setup,
    Step,
    Terms,
    TrainSettings,
    register_component,
)
from xmr.objectives.pair import check_loss_similarity, pair_loss
from xmr.utils.numbers import check_finite_fields

#: the dual-path paper's instance loss (a shared classifier over training groups, Eqs. 5-8); not a
#: registered pair loss because it also takes the group labels and the classifier weight
INSTANCE = "instance"
#: Stage II of the dual-path schedule: instance loss + the ranking loss ``rank_loss`` (Eq. 9)
INSTANCE_RANK = "instance+rank"


@dataclass(frozen=True)
class InstanceConfig:
    """The instance loss's schedule (present with ``loss="instance"`` only).

    Attributes:
        then: the objective after ``stage1_epochs``: ``"instance+rank"`` (the dual-path paper's
            Stage II, Eq. 9 with lam1 = lam2 = lam3 = 1), or None (instance loss throughout).
        stage1_epochs: length of Stage I (instance loss only) before ``then``. Stage I epochs are
            validated and logged but never chosen as the best checkpoint when ``then`` is set.
        rank_loss: the registered ranking loss of Stage II (default VSE++, margin ``margin``).
    """

    then: str | None = None
    stage1_epochs: int = 0
    rank_loss: str = "vse++"

    def __post_init__(self) -> None:
        check_finite_fields(self)
        LOSSES.get(self.rank_loss)
        if self.then is not None and self.then != INSTANCE_RANK:
            raise XmrError("then={then}: only loss='instance' has a second stage, and it must be {rank}",
                           then=repr(self.then), rank=repr(INSTANCE_RANK))
        if self.stage1_epochs < 0:
            raise XmrError("invalid {field}: {value}", field="stage1_epochs", value=repr(self.stage1_epochs))

    def check_train(self, train: TrainSettings) -> None:
        """Stage I must leave epochs to Stage II."""
        if self.then is not None and not 1 <= self.stage1_epochs < train.epochs:
            raise XmrError("stage1_epochs ({stage1}) must be in [1, epochs={epochs}) with then={then}",
                           stage1=self.stage1_epochs, epochs=train.epochs, then=repr(self.then))


@register_component
class InstanceObjective(ObjectiveComponent):
    """The instance loss over the training groups (Stage I), plus ``rank_loss`` in Stage II."""

    name = "instance"
    config_field = "instance"
    about = "the instance loss"
    config_type = InstanceConfig
    flat_fields = {"then": "then", "stage1_epochs": "stage1_epochs", "rank_loss": "rank_loss"}

    def __init__(self, setup: Setup, config: InstanceConfig) -> None:
        super().__init__(setup, config)
        n_classes, groups = setup.model.config.n_instances, int(setup.image_groups.max()) + 1
        if n_classes < groups:
            raise XmrError("the instance loss needs a classifier over {groups} training groups; the model config "
                           "has {have}", groups=groups, have=f"n_instances={n_classes}")
        self.config = config
        self.train = setup.train
        self.model = setup.model
        self.classifier = SharedClassifier(n_classes, setup.model.config.embed_dim)  # W_share
        self.schedule = TwoStageSchedule(config.stage1_epochs if config.then else setup.train.epochs)
        self.final_name = config.then or INSTANCE
        self.frozen_tail_epochs = config.stage1_epochs if config.then is not None else 0
        self.weights = self.schedule.weights(0)
        self.rank_loss_fn: LossFn | None = None

    @classmethod
    def trains(cls, loss: str) -> bool:
        return loss == INSTANCE

    @classmethod
    def losses(cls) -> list[str]:
        return [INSTANCE]

    @classmethod
    def config_for(cls, loss: str, given: InstanceConfig | None) -> InstanceConfig | None:
        """Its config for a run of ``loss``: ``given`` (default settings if None) with the instance
        loss, else None; settings for another loss are refused."""
        if loss == INSTANCE:
            return given or InstanceConfig()
        if given is not None:
            raise XmrError("only loss='instance' takes the instance settings (then, stage1_epochs, rank_loss), "
                           "not loss={loss}", loss=repr(loss))
        return None

    @classmethod
    def config_from_flat(cls, flat: Mapping[str, Any], loss: str, inputs: Collection[str]) -> InstanceConfig | None:
        """Its config from the flat ``TrainConfig`` fields of older files and of the CLI (a second stage
        given to another loss is refused, as it always was)."""
        if "rank_loss" in flat:
            LOSSES.get(flat["rank_loss"])
        if loss != INSTANCE and flat.get("then") is None:
            return None
        return InstanceConfig(**{k: flat[k] for k in cls.flat_fields if k in flat})

    @classmethod
    def check_fit(cls, config: InstanceConfig, fit: Fit, train: TrainSettings) -> None:
        if config.then is not None:
            check_loss_similarity(config.rank_loss, fit.similarity)

    def modules(self) -> dict[str, nn.Module]:
        return {"classifier": self.classifier}

    def begin_epoch(self, epoch: EpochData) -> None:
        self.weights = self.schedule.weights(epoch.epoch)
        self.rank_loss_fn = (pair_loss(self.config.rank_loss, self.train, self.model.config.similarity)
                             if self.weights.lambda_rank > 0 else None)
        self.objective_name = INSTANCE if self.rank_loss_fn is None else INSTANCE_RANK

    def add_terms(self, step: Step, out: Terms) -> Terms:
        f = self.gather({"img": step.img, "txt": step.txt, "groups": step.batch.groups, "texts": step.batch.texts})
        w = self.weights
        inst = instance_loss(f["img"], f["txt"], f["groups"], self.classifier.weight)
        total = w.lambda_img * inst["loss_img"] + w.lambda_txt * inst["loss_txt"]
        parts = {"instance_img": inst["loss_img"], "instance_txt": inst["loss_txt"],
                 "acc_img": inst["acc_img"], "acc_txt": inst["acc_txt"]}
        if self.rank_loss_fn is not None:
            r = self.rank_loss_fn(f["img"], f["txt"], logit_scale=self.model.logit_scale, groups=f["groups"],
                                  text_ids=f["texts"])
            total = total + w.lambda_rank * r["loss"]
            parts["rank"] = r["loss"]
        return {**out, "loss": total, **parts}
