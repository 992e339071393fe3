"""The loss registry: ``create_loss(name, **hyper)`` returns ``fn(img, txt, **runtime) -> dict``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from xmr.registry import Registry

LossFn = Callable[..., dict[str, torch.Tensor]]

LOSSES: Registry[LossFn] = Registry("loss")


def create_loss(name: str, **hyper: float | bool) -> LossFn:
    """The registered loss ``name`` with its hyper-parameters bound (e.g. ``margin=0.2``)."""
    fn = LOSSES.get(name)
    return functools.partial(fn, **hyper) if hyper else fn
