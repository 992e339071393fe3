"""The loss registry: ``create_loss(name, **hyper)`` returns ``fn(img, txt, **runtime) -> dict``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from xmr.registry import Registry

LossFn = Callable[..., dict[str, torch.Tensor]]

LOSSES: Registry[LossFn] = Registry("loss")


@dataclass(frozen=True)
class LossCapabilities:
    """What a registered pair loss needs and takes (set with :func:`declare`, read with :func:`capabilities`).

    Attributes:
        inner_product_only: the loss scores pairs by the inner product itself (InfoNCE's
            logits), so it cannot train a space scored by another similarity (GXN's order).
        takes_margin: the loss has a hinge ``margin`` (the ranking losses).
        hardest_negative: the loss keeps only the hardest in-batch negative (VSE++): trained
            from a random start it collapses easily, so the pair objective warms up with the
            sum-over-negatives VSE0 first and watches for a collapse
            (:class:`xmr.objectives.pair.HardestConfig`).
    """

    inner_product_only: bool = False
    takes_margin: bool = True
    hardest_negative: bool = False


_CAPABILITIES_ATTR = "__xmr_loss_capabilities__"


def declare(**capabilities: bool) -> Callable[[LossFn], LossFn]:
    """Decorator: attach :class:`LossCapabilities` to a loss function (before registering it)."""
    caps = LossCapabilities(**capabilities)

    def deco(fn: LossFn) -> LossFn:
        setattr(fn, _CAPABILITIES_ATTR, caps)
        return fn

    return deco


def capabilities(name: str) -> LossCapabilities:
    """The :class:`LossCapabilities` of the registered loss ``name`` (defaults: a margin loss, any similarity)."""
    return getattr(LOSSES.get(name), _CAPABILITIES_ATTR, LossCapabilities())


def create_loss(name: str, **hyper: float | bool) -> LossFn:
    """The registered loss ``name`` with its hyper-parameters bound (e.g. ``margin=0.2``)."""
    fn = LOSSES.get(name)
    return functools.partial(fn, **hyper) if hyper else fn
