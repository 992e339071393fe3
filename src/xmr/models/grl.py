"""Gradient reversal layer (Ganin & Lempitsky 2015) and its coefficient schedule, as used by A3VSE.

Huang et al., "Annotation Efficient Cross-Modal Retrieval with Adversarial Attentive Alignment"
(A3VSE, ACM MM 2019), Sec. 3.3-3.4 and Sec. 4: the six domain discriminators sit behind a GRL,
which is the identity in the forward pass and multiplies the gradient by ``-gamma`` in the
backward pass, so one ``loss.backward()`` trains the discriminators to separate the domains and
the encoders to confuse them (the min-max of Eq. 10). gamma grows over training as

    gamma(p) = 2 / (1 + exp(-eta p)) - 1,   eta = 10,  p in [0, 1] the training progress.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from xmr.errors import XmrError


class _GradientReversal(torch.autograd.Function):
    """Identity forward; ``-coeff * grad`` backward."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff  # type: ignore[attr-defined]  # autograd ctx objects take any attribute
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coeff * grad, None  # type: ignore[attr-defined]  # set in forward


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; the backward pass multiplies the gradient by ``-coeff``.

    Args:
        x: any tensor. Shape: (*).
        coeff: gamma >= 0, the scale of the reversed gradient.

    Returns:
        ``x`` unchanged (a view). Shape: (*).
    """
    if not coeff >= 0:  # also catches NaN
        raise XmrError(f"gradient reversal coefficient must be >= 0, got {coeff}")
    return _GradientReversal.apply(x, float(coeff))


class GradientReversal(nn.Module):
    """:func:`grad_reverse` as a module with a settable coefficient ``coeff`` (gamma).

    Set ``grl.coeff = grl_schedule(p)`` once per epoch or step. Shape: (*) -> (*).

    Example::

        >>> grl = GradientReversal(0.5)
        >>> x = torch.ones(3, requires_grad=True); grl(x).sum().backward(); x.grad.tolist()
        [-0.5, -0.5, -0.5]
    """

    def __init__(self, coeff: float = 1.0) -> None:
        super().__init__()
        self.coeff = coeff

    @property
    def coeff(self) -> float:
        return self._coeff

    @coeff.setter
    def coeff(self, value: float) -> None:
        if not value >= 0:
            raise XmrError(f"gradient reversal coefficient must be >= 0, got {value}")
        self._coeff = float(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self._coeff)

    def extra_repr(self) -> str:
        return f"coeff={self._coeff:g}"


def grl_schedule(p: float, *, eta: float = 10.0) -> float:
    """The GRL coefficient ``2 / (1 + exp(-eta p)) - 1`` (A3VSE Sec. 4, after Ganin & Lempitsky).

    Args:
        p: training progress in [0, 1] (A3VSE: linear in the epoch).
        eta: steepness (A3VSE: 10).

    Returns:
        gamma in [0, 1): 0 at p = 0, about 0.9999 at p = 1 with eta = 10.
    """
    if not 0.0 <= p <= 1.0:
        raise XmrError(f"training progress p must be in [0, 1], got {p}")
    return 2.0 / (1.0 + math.exp(-eta * p)) - 1.0
