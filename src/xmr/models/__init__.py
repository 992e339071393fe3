"""Projection heads and the joint image-text model built from them."""

from __future__ import annotations

from xmr.layers.attention import ContextAttentionPool
from xmr.models import region_heads  # noqa: F401  (register the region heads)
from xmr.models.discriminator import (
    A3VSE_PAIRS,
    DomainDiscriminator,
    DomainPair,
    adversarial_alignment_loss,
    domain_adversarial_loss,
    make_a3vse_discriminators,
)
from xmr.models.grl import GradientReversal, grad_reverse, grl_schedule
from xmr.models.heads import HEADS, create_head
from xmr.models.joint import JointModel, ModelConfig, load_model
from xmr.models.shared_classifier import SharedClassifier

__all__ = ["HEADS", "create_head", "JointModel", "ModelConfig", "load_model",
           "ContextAttentionPool", "GradientReversal", "grad_reverse", "grl_schedule", "SharedClassifier",
           "A3VSE_PAIRS", "DomainDiscriminator", "DomainPair", "adversarial_alignment_loss",
           "domain_adversarial_loss", "make_a3vse_discriminators"]
