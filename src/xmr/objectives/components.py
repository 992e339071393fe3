"""A run's objective components: their configs in one place, the rules they check, and how they are built.

:class:`ComponentConfigs` is ``TrainConfig.components``: one optional config per component, named
as the component's ``config_field``. The primary component of the run's ``loss`` fills its own
config in when the loss needs one (a hardest-negative loss's warm-up, the instance loss's stages);
the others are present when they are on. :func:`build_components` builds the used ones in a fixed
order -- the primary first, then the additions in field order -- which is the order their terms
are added and their modules are created and trained.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from xmr.errors import XmrError
from xmr.objectives.base import COMPONENTS, Fit, ObjectiveComponent, Setup, TrainSettings
from xmr.objectives.cross_style import CrossStyleConfig
from xmr.objectives.generative import GenerativeConfig
from xmr.objectives.instance import InstanceConfig
from xmr.objectives.pair import HardestConfig
from xmr.objectives.sparse import SparseAlignmentConfig


@dataclass(frozen=True)
class ComponentConfigs:
    """Each objective component's config; None where the run does not use the component.

    Attributes:
        hardest: a hardest-negative loss's VSE0 warm-up and collapse watch (the pair objective's;
            filled in with a hardest-negative ``loss``).
        instance: the instance loss's two stages (filled in with ``loss="instance"``).
        cross_style: the cross-style image-image term.
        generative: GXN's generative paths.
        sparse: A3VSE's pseudo pairs and discriminators.
    """

    hardest: HardestConfig | None = None
    instance: InstanceConfig | None = None
    cross_style: CrossStyleConfig | None = None
    generative: GenerativeConfig | None = None
    sparse: SparseAlignmentConfig | None = None

    def present(self) -> Iterator[tuple[type[ObjectiveComponent], Any]]:
        """(component class, config) of every config given, in field order."""
        owners = _owners()
        for f in dataclasses.fields(self):
            config = getattr(self, f.name)
            if config is not None:
                yield owners[f.name], config

    def with_inputs(self, inputs: Collection[str]) -> ComponentConfigs:
        """These configs with a default one for each absent component that the data in ``inputs`` switches on
        (pseudo pairs: A3VSE's terms at their defaults)."""
        filled = {name: cls.settle(None, inputs) for name, cls in _owners().items() if getattr(self, name) is None}
        return dataclasses.replace(self, **{k: v for k, v in filled.items() if v is not None})

    def for_loss(self, loss: str) -> ComponentConfigs:
        """These configs with the primaries' filled in or refused for a run of ``loss``."""
        return dataclasses.replace(self, **{name: cls.config_for(loss, getattr(self, name))
                                            for name, cls in _owners().items()})


def _owners() -> dict[str, type[ObjectiveComponent]]:
    """Config field -> the component class that reads it."""
    owners = {cls.config_field: cls for cls in map(COMPONENTS.get, COMPONENTS.names()) if cls.config_field}
    missing = [f.name for f in dataclasses.fields(ComponentConfigs) if f.name not in owners]
    if missing:
        raise XmrError("no objective component reads the config {names}", names=", ".join(missing))
    return owners


def train_loss_names() -> list[str]:
    """Every valid ``TrainConfig.loss``: the losses the primary components train."""
    return sorted(n for name in COMPONENTS.names() for n in COMPONENTS.get(name).losses())


def primary_component(loss: str) -> type[ObjectiveComponent]:
    """The component that trains ``loss`` (the run's base objective)."""
    for name in COMPONENTS.names():
        cls = COMPONENTS.get(name)
        if cls.trains(loss):
            return cls
    raise XmrError("unknown loss {loss}; known: {known}", loss=repr(loss), known=", ".join(train_loss_names()))


def configs_from_flat(flat: Mapping[str, Any], loss: str, inputs: Collection[str] = ()) -> ComponentConfigs:
    """The component configs that the flat ``TrainConfig`` fields of older files and of the CLI describe.

    Args:
        flat: old field -> value (``vse0_warmup_epochs``, ``then``, ``cross_style``, ``generative``,
            ``pseudo_beta`` ...); fields absent take their defaults.
        loss: the run's loss.
        inputs: the components the run gives data to (``"sparse"``: the run has pseudo pairs).
    """
    owners = _owners()
    return ComponentConfigs(**{name: cls.config_from_flat(flat, loss, inputs) for name, cls in owners.items()})


def flat_fields() -> dict[str, tuple[type, str]]:
    """Every component setting's flat name (:func:`configs_from_flat` reads them) -> (its config class, field)."""
    return {flat: (cls.config_type, name) for cls in _owners().values() if cls.config_type is not None
            for flat, name in cls.flat_fields.items()}


def used_components(configs: ComponentConfigs, loss: str,
                    inputs: Collection[str]) -> list[tuple[type[ObjectiveComponent], Any]]:
    """(class, config) of every component a run uses, in build order: the primary, then the additions."""
    primary = primary_component(loss)
    out: list[tuple[type[ObjectiveComponent], Any]] = [
        (primary, getattr(configs, primary.config_field) if primary.config_field else None)]
    owners = _owners()
    for f in dataclasses.fields(configs):
        cls = owners[f.name]
        if cls.losses():  # a primary's config: read by its primary only
            continue
        config = cls.settle(getattr(configs, f.name), inputs)
        if config is not None:
            out.append((cls, config))
    return out


def check_fit(train: TrainSettings, configs: ComponentConfigs, fit: Fit) -> None:
    """Refuse a run whose components cannot train its model (each rule asked of its component once)."""
    for cls, config in used_components(configs, train.loss, fit.inputs):
        cls.check_fit(config, fit, train)


def build_components(train: TrainSettings, configs: ComponentConfigs, setup: Setup) -> list[ObjectiveComponent]:
    """The run's components, built in order (their modules are created, and draw their initial
    weights, in this order), after checking that they fit the model."""
    mc = setup.model.config
    check_fit(train, configs, Fit(mc.similarity, mc.two_branch is not None, frozenset(setup.inputs)))
    return [cls(setup, config) for cls, config in used_components(configs, train.loss, setup.inputs)]
