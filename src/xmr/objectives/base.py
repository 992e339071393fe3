"""What every objective component is: the base class, its registry, and what the trainer hands it.

Modelled on open_clip's ``loss.py``: ``ClipLoss`` owns ``rank``, ``world_size`` and
``gather_features``; ``CoCaLoss(ClipLoss)`` adds its captioning term and returns a dict of named
losses. A run's objective is a list of components built from its
:class:`~xmr.training.TrainConfig`: first the *primary* component, the one that trains the run's
``loss`` (the pair objective, :mod:`xmr.objectives.pair`, or the dual-path instance loss,
:mod:`xmr.objectives.instance`), then each addition whose config is present (the cross-style
term, GXN's generative paths, A3VSE's pseudo pairs and discriminators). Each component owns

* its config: a frozen dataclass in ``TrainConfig.components``, present only when used;
* its trainable modules (:meth:`ObjectiveComponent.modules`, by name), which join the heads'
  optimiser group, the weight average and ``last.pt``;
* its other state (:meth:`~ObjectiveComponent.state_dict`: GXN's discriminator and its optimiser);
* its schedule (:meth:`~ObjectiveComponent.begin_epoch`: VSE0 before VSE++, Stage I before Stage
  II, this epoch's draws);
* its terms of the rank update (:meth:`~ObjectiveComponent.add_terms`) and any update it runs
  before each rank update (:meth:`~ObjectiveComponent.steps_before_rank`: GXN's Algorithm 1);
* :meth:`~ObjectiveComponent.gather`: the features of every process's batch (one process: the
  features as they are).

The trainer builds them (:func:`xmr.objectives.components.build_components`) and loops over them;
it knows no paper.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

from xmr.models import JointModel
from xmr.objectives.gather import gather_features
from xmr.registry import Registry


class TrainSettings(Protocol):
    """The run-wide training settings a component reads (:class:`xmr.training.TrainConfig` has them)."""

    @property
    def loss(self) -> str: ...
    @property
    def margin(self) -> float: ...
    @property
    def epochs(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def grad_clip(self) -> float: ...


class PairArrays(Protocol):
    """Paired features (a :class:`xmr.training.PairSet` is one)."""

    @property
    def image_feats(self) -> np.ndarray: ...
    @property
    def text_feats(self) -> np.ndarray: ...
    @property
    def pairs(self) -> np.ndarray: ...


class RunState(Protocol):
    """The trainer's bookkeeping a component may update after an epoch (:class:`xmr.training.result.TrainState`)."""

    stuck: int
    status: str
    best_epoch: int


@dataclass(frozen=True)
class Fit:
    """What the components of a run are checked against before it trains.

    Attributes:
        similarity: the joint space's registered similarity (``cosine``, ``order``).
        two_branch: the model has GXN's grounded branch.
        inputs: the names of the components the run gives data to (``"sparse"``: pseudo pairs).
    """

    similarity: str
    two_branch: bool
    inputs: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Setup:
    """What the components of one run are built from (once, before the first epoch).

    Attributes:
        model: the joint model being trained.
        train: the run's settings (its :class:`~xmr.training.TrainConfig`).
        image_groups: group id per training image. Shape: (n_images,).
        steps_per_epoch: optimiser steps per epoch.
        total_steps: optimiser steps in the whole run.
        inputs: data beside the training pairs, by component name: A3VSE's pseudo pairs under
            ``"sparse"`` (a :class:`PairArrays`), GXN's captions and images under ``"generative"``.
    """

    model: JointModel
    train: TrainSettings
    image_groups: np.ndarray
    steps_per_epoch: int
    total_steps: int
    inputs: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class EpochData:
    """One epoch as the components see it.

    Attributes:
        epoch: the 0-based epoch.
        n_batches: optimiser steps (batches) in it.
        image_feats: this epoch's training image features (one drawn view per image).
            Shape: (n_images, image_dim).
        text_feats: the training text features. Shape: (n_texts, text_dim).
        groups: group id per training image. Shape: (n_images,).
    """

    epoch: int
    n_batches: int
    image_feats: torch.Tensor
    text_feats: torch.Tensor
    groups: torch.Tensor


@dataclass(frozen=True)
class Batch:
    """One batch of training pairs.

    Attributes:
        index: its position in the epoch (0-based).
        images, texts: the pairs' image and text indices. Shape: (B,) each.
        groups: the images' groups. Shape: (B,).
        image_feats, text_feats: their features. Shape: (B, image_dim), (B, text_dim).
    """

    index: int
    images: torch.Tensor
    texts: torch.Tensor
    groups: torch.Tensor
    image_feats: torch.Tensor
    text_feats: torch.Tensor


@dataclass(frozen=True)
class Step:
    """One rank update as the components' terms see it.

    Attributes:
        batch: the batch.
        img, txt: its joint embeddings. Shape: (B, embed_dim) each.
        global_step: the optimiser steps taken before this one in the run (the scheduler's count).
    """

    batch: Batch
    img: torch.Tensor
    txt: torch.Tensor
    global_step: int


#: an update a component runs before a rank update: (batch, the run's optimiser) -> parts to log
ExtraStep = Callable[[Batch, torch.optim.Optimizer], dict[str, torch.Tensor]]
#: a pair objective's output: ``"loss"`` and its parts
Terms = dict[str, torch.Tensor]


class ObjectiveComponent:
    """One part of a run's objective; subclasses override the hooks they need.

    Class attributes:
        name: its registered name.
        config_field: the field of :class:`~xmr.objectives.components.ComponentConfigs` that
            holds its config (None: it has none).
        about: what it is, in messages ("A3VSE's pseudo pairs and adversarial terms").
        cosine_only: its terms score by cosine: a space of another similarity cannot train it.
        needs_two_branch: it reads GXN's grounded branch.
        cpu_only: it trains on the CPU at fp32 only (state outside :meth:`modules`, tensors made there).
        micro_batches: its terms read the batch's embeddings (and modules' outputs computed in
            :meth:`add_terms`) only, so exact gradient accumulation (GradCache,
            :mod:`xmr.training.execution`) can split the embedding of a batch into micro-batches.
        reads_epoch_features: :meth:`begin_epoch` keeps the epoch's features for its terms (they must
            then be on the device: the trainer does not stream the batches' rows to it).
        config_type: its config's dataclass.
        flat_fields: the name each setting had when ``TrainConfig`` held them all (what older
            files and the CLI's options still use; :meth:`config_from_flat`) -> its config field.

    Attributes:
        rank, world_size: this process and the number of processes (one process: 0, 1);
            :meth:`gather` is where several processes exchange features (the trainer sets them).
        objective_name: the primary component's objective this epoch (``vse0``, ``instance+rank``);
            None for the others.
        final_name: the primary's objective whose epochs may become the best checkpoint.
        frozen_tail_epochs: epochs a fine-tuned encoder tail waits before it trains.
    """

    name: ClassVar[str] = ""
    config_field: ClassVar[str | None] = None
    about: ClassVar[str] = ""
    cosine_only: ClassVar[bool] = False
    needs_two_branch: ClassVar[bool] = False
    cpu_only: ClassVar[bool] = False
    micro_batches: ClassVar[bool] = True
    reads_epoch_features: ClassVar[bool] = False
    config_type: ClassVar[type | None] = None
    flat_fields: ClassVar[Mapping[str, str]] = {}
    rank: int = 0  # (the instance's, set by the trainer; here for a component built without __init__)
    world_size: int = 1

    def __init__(self, setup: Setup, config: Any) -> None:
        self.rank = 0
        self.world_size = 1
        self.objective_name: str | None = None
        self.final_name: str | None = None
        self.frozen_tail_epochs = 0

    @classmethod
    def trains(cls, loss: str) -> bool:
        """True when this is the primary component of a run whose ``TrainConfig.loss`` is ``loss``."""
        return False

    @classmethod
    def losses(cls) -> list[str]:
        """The ``loss`` names this component trains as the primary one (none for an addition)."""
        return []

    @classmethod
    def config_for(cls, loss: str, given: Any) -> Any:
        """Its config for a run of ``loss`` given ``given``: a primary fills in the config its loss needs and
        refuses one its loss does not use; an addition's is ``given``."""
        return given

    @classmethod
    def config_from_flat(cls, flat: Mapping[str, Any], loss: str, inputs: Collection[str]) -> Any:
        """Its config from the flat ``TrainConfig`` fields of older files and of the CLI (None: not used)."""
        return None

    @classmethod
    def settle(cls, config: Any, inputs: Collection[str]) -> Any:
        """The config a run with ``config`` (None: absent) and data for the components named in ``inputs``
        trains this component with; None: the run does not use it."""
        return config

    @classmethod
    def check_fit(cls, config: Any, fit: Fit, train: TrainSettings) -> None:
        """Refuse a model the component cannot train (a similarity, a missing branch); asked of used ones only."""

    def modules(self) -> dict[str, nn.Module]:
        """Its trainable modules by name, in a fixed order (they train with the heads)."""
        return {}

    def begin_epoch(self, epoch: EpochData) -> None:
        """Set this epoch's schedule and draws."""

    def add_terms(self, step: Step, out: Terms) -> Terms:
        """The rank update's objective so far (``out``; empty before the primary) with this component's terms."""
        return out

    def steps_before_rank(self) -> list[ExtraStep]:
        """Updates to run before each rank update of a batch, in order: each is followed by one."""
        return []

    def save_beside(self, directory: Path) -> None:
        """Write what serving needs of this component into a best checkpoint's folder (being written); most
        components need nothing there (W_share and A3VSE's discriminators are for training only)."""

    def after_epoch(self, row: Mapping[str, Any], state: RunState) -> None:
        """Read the finished epoch's history row; may stop the run (``state.status``)."""

    def state_dict(self) -> dict[str, Any]:
        """What ``last.pt`` keeps of it beside its modules' weights."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave."""

    def gather(self, features: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        """Features of every process's batch in rank order (the one-process batch's order), this process's rows
        in their slot with their gradient (:mod:`xmr.objectives.gather`); one process: ``features``."""
        if self.world_size == 1:
            return features
        return gather_features(features, self.rank, self.world_size)


C = TypeVar("C", bound=ObjectiveComponent)

COMPONENTS: Registry[type[ObjectiveComponent]] = Registry("objective component")


def register_component(cls: type[C]) -> type[C]:
    """Class decorator: register an :class:`ObjectiveComponent` subclass under its ``name``."""
    COMPONENTS.add(cls.name, cls)
    return cls


def epoch_order(n: int, steps: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``steps`` batches over ``n`` items: back-to-back permutations, cut to length."""
    reps = -(-steps * batch_size // n)  # ceil
    return np.concatenate([rng.permutation(n) for _ in range(max(1, reps))])[: steps * batch_size]
