"""What a joint-space run trains and keeps for resuming: the model and its components' modules, ``last.pt``.

:class:`TrainedModules` is the joint model plus every objective component's modules under the
component's names (W_share as ``classifier``, A3VSE's as ``discriminators``), in one order: the
optimiser's heads group, gradient clipping, the weight average and ``last.pt`` all see them so.
``last.pt`` holds their weights, the optimiser, the schedule, the RNG, the bookkeeping, the weight
average and each component's own state; one written before components existed (the instance
classifier inside the model's weights, the discriminators and GXN's state under their own keys)
resumes as it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from xmr.errors import Param, XmrError
from xmr.models import JointModel
from xmr.objectives import ObjectiveComponent
from xmr.training.ema import WeightAverage
from xmr.training.result import TrainState
from xmr.utils.io import atomic_save_file


class TrainedModules:
    """The joint model's parameters, then each component's modules as ``<name>.<parameter>``.

    Args:
        model: the joint model (its parameters keep their own names).
        components: the run's objective components, in build order.
    """

    def __init__(self, model: JointModel, components: Sequence[ObjectiveComponent]) -> None:
        self.model = model
        self.parts: dict[str, nn.Module] = {name: m for c in components for name, m in c.modules().items()}

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        yield from self.model.named_parameters()
        for name, module in self.parts.items():
            for n, p in module.named_parameters():
                yield f"{name}.{n}", p

    def train(self) -> None:
        """Training mode for the model and every component's modules (dropout on)."""
        self.model.train()
        for module in self.parts.values():
            module.train()

    def parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_parameters()]

    def state_dict(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = dict(self.model.state_dict())
        for name, module in self.parts.items():
            state.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load what :meth:`state_dict` gave (every module strictly: a missing or extra weight is refused)."""
        own = {k: v for k, v in state.items() if k.split(".", 1)[0] not in self.parts}
        self.model.load_state_dict(own)
        for name, module in self.parts.items():
            module.load_state_dict({k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")})


class Weights(Protocol):
    """What ``last.pt`` keeps the weights of: a module, or :class:`TrainedModules`."""

    def state_dict(self) -> Mapping[str, torch.Tensor]: ...
    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> Any: ...


def save_resume_state(path: Path, trained: Weights, opt: torch.optim.Optimizer,
                      sched: torch.optim.lr_scheduler.LRScheduler, st: TrainState, *,
                      components: Sequence[ObjectiveComponent] = (), ema: WeightAverage | None = None,
                      scaler: torch.amp.GradScaler | None = None) -> None:
    """Write what resuming after this epoch needs (``last.pt``): weights, optimiser, schedule, RNG, bookkeeping,
    each component's own state and fp16's loss scale (``scaler``, when enabled)."""
    state = {"model": trained.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
             "torch_rng": torch.get_rng_state(), "st": st.to_dict(),
             "components": {c.name: c.state_dict() for c in components},
             **({"ema": ema.state_dict()} if ema is not None else {}),
             **({"scaler": scaler.state_dict()} if scaler is not None and scaler.is_enabled() else {})}
    atomic_save_file(path, lambda tmp: torch.save(state, tmp))


def restore_resume_state(path: Path, trained: Weights, opt: torch.optim.Optimizer,
                         sched: torch.optim.lr_scheduler.LRScheduler, *, components: Sequence[ObjectiveComponent] = (),
                         ema: WeightAverage | None = None, map_location: torch.device | str | None = None,
                         scaler: torch.amp.GradScaler | None = None) -> TrainState:
    """Load the state :func:`save_resume_state` wrote (or an older ``last.pt``); returns the bookkeeping.

    ``map_location``: the device the run trains on (None: where the tensors were saved from). ``scaler``:
    fp16's loss scaling, given the saved scale (a ``last.pt`` without one, written before it was kept or by
    a run at another precision: the scaler starts afresh, as it did then)."""
    try:
        # tensors and plain containers: no pickled code runs
        saved = _upgraded(torch.load(path, weights_only=True, map_location=map_location))
        trained.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        torch.set_rng_state(saved["torch_rng"].cpu())  # the CPU generator's state, whatever the device
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        for c in components:
            c.load_state_dict(saved["components"].get(c.name, {}))
        if scaler is not None and scaler.is_enabled() and "scaler" in saved:
            scaler.load_state_dict(saved["scaler"])
        return TrainState.from_dict(saved["st"])
    except Exception as e:  # torch raises many types for a damaged file
        raise XmrError("cannot resume from {path} ({kind}); delete it or pass {fix} to start again", path=str(path),
                       kind=type(e).__name__, fix=Param("overwrite", True)) from None


def _upgraded(saved: dict[str, Any]) -> dict[str, Any]:
    """A ``last.pt`` of today's layout: one written before components existed keeps A3VSE's discriminators
    under ``discriminators`` and GXN's state under ``generative``; its model weights held W_share already
    under the instance component's name (``classifier``)."""
    if "components" in saved:
        return saved
    discriminators = {f"discriminators.{k}": v for k, v in saved.get("discriminators", {}).items()}
    upgraded = {**saved, "model": {**saved["model"], **discriminators},
                "components": {"generative": saved.get("generative", {})}}
    if "ema" in saved:  # the weight average did not cover the discriminators then: start theirs at their weights
        upgraded["ema"] = {**discriminators, **saved["ema"]}
    return upgraded
