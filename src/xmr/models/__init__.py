"""Projection heads and the joint image-text model built from them."""

from __future__ import annotations

from xmr.models.heads import HEADS, create_head
from xmr.models.joint import JointModel, ModelConfig, load_model

__all__ = ["HEADS", "create_head", "JointModel", "ModelConfig", "load_model"]
