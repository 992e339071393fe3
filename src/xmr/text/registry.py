"""The registry of trainable word-level text encoders (``textcnn``, ``bigru``)."""

from __future__ import annotations

from torch import nn

from xmr.registry import Registry

TEXT_MODELS: Registry[type[nn.Module]] = Registry("text model")
