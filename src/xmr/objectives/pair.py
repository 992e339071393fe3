"""The base pair objective: a registered pair loss (InfoNCE, VSE0, VSE++) on the batch's embeddings.

The loss scores pairs by the space's similarity (cosine, or GXN's order violation for the ranking
losses). A hardest-negative loss (VSE++, Faghri et al. 2018) trained from a random start collapses
easily -- every embedding one point, the hinge stuck at 2 x margin -- so its component first
trains ``vse0_warmup_epochs`` epochs with VSE0 (the sum over negatives) and afterwards watches the
epoch's hinge: ``collapse_epochs`` epochs within 1 % of 2 x margin stop the run as collapsed.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from xmr.errors import Param, XmrError
from xmr.evaluation.similarity import is_inner_product
from xmr.losses import LOSSES, create_loss
from xmr.losses.registry import LossFn
from xmr.losses.registry import capabilities as loss_capabilities
from xmr.objectives.base import (
    EpochData,
    Fit,
    ObjectiveComponent,
    RunState,
    Setup,
    Step,
    Terms,
    TrainSettings,
    register_component,
)
from xmr.utils.numbers import check_finite_fields

log = logging.getLogger(__name__)

#: the loss a hardest-negative loss warms up with
WARMUP_LOSS = "vse0"


@dataclass(frozen=True)
class HardestConfig:
    """A hardest-negative loss's warm-up and collapse watch (present with such a loss only).

    Attributes:
        vse0_warmup_epochs: first train this many epochs with the sum-over-negatives VSE0.
            Warm-up epochs are validated and logged but never chosen as the best checkpoint.
        collapse_epochs: stop and report a collapse when the mean epoch hinge has sat within 1 %
            of 2 x margin for this many epochs after the warm-up.
    """

    vse0_warmup_epochs: int = 2
    collapse_epochs: int = 2

    def __post_init__(self) -> None:
        check_finite_fields(self)
        if self.vse0_warmup_epochs < 0:
            raise XmrError("invalid {field}: {value}", field="vse0_warmup_epochs", value=repr(self.vse0_warmup_epochs))
        if self.collapse_epochs < 1:
            raise XmrError("invalid {field}: {value}", field="collapse_epochs", value=repr(self.collapse_epochs))

    def check_train(self, train: TrainSettings) -> None:
        """The warm-up must leave epochs to train the loss itself."""
        if train.epochs <= self.vse0_warmup_epochs:
            raise XmrError("epochs ({epochs}) must exceed vse0_warmup_epochs ({warmup})", epochs=train.epochs,
                           warmup=self.vse0_warmup_epochs)


def is_hardest_negative(loss: str) -> bool:
    """True for a registered pair loss that keeps only the hardest negative (it warms up first)."""
    return loss in LOSSES and loss_capabilities(loss).hardest_negative


def loss_kwargs(name: str, margin: float) -> dict[str, float]:
    """The hyper-parameters of the registered loss ``name``: ``margin`` where it takes one."""
    return {"margin": margin} if loss_capabilities(name).takes_margin else {}


def pair_loss(name: str, train: TrainSettings, similarity: str) -> LossFn:
    """The registered loss ``name`` with its hyper-parameters (``margin`` where it takes one); a ranking
    loss scores by ``similarity`` (that the loss can, :func:`check_loss_similarity` checked before the run)."""
    kwargs: dict[str, object] = dict(loss_kwargs(name, train.margin))
    if not is_inner_product(similarity):
        kwargs["similarity"] = similarity
    return create_loss(name, **kwargs)  # type: ignore[arg-type]  # margin (float) and similarity (str)


def check_loss_similarity(name: str, similarity: str) -> None:
    """Refuse a loss that scores by the inner product itself (InfoNCE) in a space of another similarity."""
    if not is_inner_product(similarity) and loss_capabilities(name).inner_product_only:
        raise XmrError("similarity {similarity} needs a ranking loss such as {fix}; {loss} scores by the inner "
                       "product", similarity=repr(similarity), fix=Param("loss", "vse++"), loss=name)


@register_component
class PairObjective(ObjectiveComponent):
    """The run's registered pair loss (the primary component of every loss but ``instance``)."""

    name = "pair"
    config_field = "hardest"
    about = "the pair loss"
    config_type = HardestConfig
    flat_fields = {"vse0_warmup_epochs": "vse0_warmup_epochs", "collapse_epochs": "collapse_epochs"}

    def __init__(self, setup: Setup, config: HardestConfig | None) -> None:
        super().__init__(setup, config)
        self.train = setup.train
        self.config = config
        self.model = setup.model
        self.similarity = setup.model.config.similarity
        self.final_name = setup.train.loss
        self.loss_fn: LossFn | None = None

    @classmethod
    def trains(cls, loss: str) -> bool:
        return loss in LOSSES

    @classmethod
    def losses(cls) -> list[str]:
        return LOSSES.names()

    @classmethod
    def config_for(cls, loss: str, given: HardestConfig | None) -> HardestConfig | None:
        """Its config for a run of ``loss``: ``given`` (default settings if None) with a hardest-negative
        loss, else None; settings for another loss are refused."""
        if is_hardest_negative(loss):
            return given or HardestConfig()
        if given is not None:
            raise XmrError("the warm-up and collapse settings (vse0_warmup_epochs, collapse_epochs) are for a "
                           "hardest-negative loss, not loss={loss}", loss=repr(loss))
        return None

    @classmethod
    def config_from_flat(cls, flat: Mapping[str, Any], loss: str, inputs: Collection[str]) -> HardestConfig | None:
        """Its config from the flat ``TrainConfig`` fields of older files and of the CLI."""
        if not is_hardest_negative(loss):
            return None
        return HardestConfig(**{k: flat[k] for k in cls.flat_fields if k in flat})

    @classmethod
    def check_fit(cls, config: Any, fit: Fit, train: TrainSettings) -> None:
        check_loss_similarity(train.loss, fit.similarity)

    def begin_epoch(self, epoch: EpochData) -> None:
        warming = self.config is not None and epoch.epoch < self.config.vse0_warmup_epochs
        self.objective_name = WARMUP_LOSS if warming else self.train.loss
        self.loss_fn = pair_loss(self.objective_name, self.train, self.similarity)

    def add_terms(self, step: Step, out: Terms) -> Terms:
        assert self.loss_fn is not None  # set by begin_epoch
        f = self.gather({"img": step.img, "txt": step.txt, "groups": step.batch.groups, "texts": step.batch.texts})
        return self.loss_fn(f["img"], f["txt"], logit_scale=self.model.logit_scale, groups=f["groups"],
                            text_ids=f["texts"])

    def after_epoch(self, row: Mapping[str, Any], state: RunState) -> None:
        """The collapse watch of a hardest-negative loss: the hinge alone (without additions' terms)."""
        if self.config is None or row["loss_name"] != self.train.loss:
            return
        margin = self.train.margin
        hinge = row.get("train_pair_loss", row["train_loss"])
        stuck = abs(hinge - 2 * margin) <= 0.01 * margin
        state.stuck = state.stuck + 1 if stuck else 0
        if state.stuck >= self.config.collapse_epochs:
            log.error("COLLAPSE: the %s loss has sat at 2 x margin = %.3f for %d epochs — every embedding "
                      "is (nearly) the same point. Stopping; the best checkpoint is from epoch %d. Try a longer "
                      "vse0 warm-up, a lower lr or the infonce loss.", self.train.loss, 2 * margin,
                      state.stuck, state.best_epoch)
            state.status = "collapsed"
