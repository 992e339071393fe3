"""Neural-network building blocks shared by the joint models (:mod:`xmr.models`) and the trainable
text encoders (:mod:`xmr.text`); depends on nothing else in xmr but errors."""

from __future__ import annotations

from xmr.layers.attention import ContextAttentionPool
from xmr.layers.gpo import GeneralizedPooling, gpo_pool

__all__ = ["ContextAttentionPool", "GeneralizedPooling", "gpo_pool"]
