"""An exponential moving average of the weights (Polyak averaging), for a steadier checkpoint choice.

Validation rsum can jump by +-10 between epochs when a small training set is fitted hard; the
averaged weights move less. With ``TrainConfig.ema_decay = d > 0`` every optimiser step updates
``shadow = d * shadow + (1 - d) * weights``; validation and the saved best checkpoint use the
shadow weights, training continues on the raw ones. The shadow is kept in ``last.pt``, so a
resumed run averages exactly as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Protocol

import torch


class HasParameters(Protocol):
    """A module, or several under one set of names (:class:`xmr.training.checkpoint.TrainedModules`)."""

    def named_parameters(self) -> Iterable[tuple[str, torch.nn.Parameter]]: ...


class WeightAverage:
    """The moving average of ``model``'s floating-point parameters.

    Args:
        model: the module(s) whose parameters are averaged (buffers, e.g. frozen BatchNorm statistics, are not).
        decay: d in [0, 1): the weight of the past per step.
    """

    def __init__(self, model: HasParameters, decay: float) -> None:
        self.decay = float(decay)
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype.is_floating_point}

    @torch.no_grad()
    def update(self, model: HasParameters) -> None:
        """One step: ``shadow = d * shadow + (1 - d) * parameter`` for every averaged parameter."""
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self, model: HasParameters) -> Iterator[None]:
        """Inside the block the model holds the averaged weights; its own come back after."""
        params = dict(model.named_parameters())
        kept = {n: params[n].detach().clone() for n in self.shadow}
        with torch.no_grad():
            for n, s in self.shadow.items():
                params[n].copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for n, k in kept.items():
                    params[n].copy_(k)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"weight average without {sorted(missing)[0]!r}")
        for n in self.shadow:
            self.shadow[n].copy_(state[n])
