"""W_share: the one instance classifier both modalities are classified by (dual-path Eqs. 5-8).

Zheng et al., "Dual-Path Convolutional Image-Text Embeddings with Instance Loss", Sec. IV-B and
Fig. 2: a "shared-weight W_share classification layer" over the image and the text features,
one class per image/text group. The equations (softmax(W_share^T f)) have no bias, so none by
default. The model owns this parameter; :func:`xmr.losses.instance.instance_loss` takes
``classifier.weight`` (and ``classifier.bias``) and stays a pure function.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from xmr.errors import XmrError


class SharedClassifier(nn.Module):
    """Linear classifier ``logits = f @ W_share^T (+ b)`` shared by images and texts.

    Args:
        n_classes: number of image/text groups (instances) in the training set.
        dim: feature dimension d.
        bias: add a class bias (not in the paper's equations).

    Shape:
        ``forward``: (B, dim) -> (B, n_classes). ``weight``: (n_classes, dim).

    Example::

        >>> clf = SharedClassifier(10, 16)
        >>> tuple(clf(torch.randn(4, 16)).shape)
        (4, 10)
    """

    def __init__(self, n_classes: int, dim: int, *, bias: bool = False) -> None:
        super().__init__()
        if n_classes < 1:
            raise XmrError(f"n_classes must be >= 1, got {n_classes}")
        if dim < 1:
            raise XmrError(f"dim must be >= 1, got {dim}")
        self.n_classes, self.dim = int(n_classes), int(dim)
        self.weight = nn.Parameter(torch.empty(self.n_classes, self.dim))
        self.bias: nn.Parameter | None
        self.register_parameter("bias", nn.Parameter(torch.zeros(self.n_classes)) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the nn.Linear initialisation, so logits start at the scale of an ordinary linear layer
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise XmrError(f"features must be (B, {self.dim}), got {tuple(features.shape)}")
        return nn.functional.linear(features, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"n_classes={self.n_classes}, dim={self.dim}, bias={self.bias is not None}"
