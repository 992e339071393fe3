"""Frozen pretrained encoders, their registry and the on-disk feature cache."""

from __future__ import annotations

from xmr.encoders import (  # noqa: F401  (register the built-ins)
           efficientnet,
           minilm,
           regions,  # noqa: E402,F401,I001  (register the region encoders; needs the pipeline)
           toy,
)
from xmr.encoders.base import (
           ENCODERS,
           Encoder,
           ImageEncoder,
           TextEncoder,
           create_encoder,
           create_image_encoder,
           create_text_encoder,
)
from xmr.encoders.cache import FeatureCache
from xmr.encoders.pipeline import EncodeResult, encode_images, encode_texts

__all__ = ["ENCODERS", "Encoder", "ImageEncoder", "TextEncoder", "create_encoder", "create_image_encoder",
           "create_text_encoder", "FeatureCache",
           "EncodeResult", "encode_images", "encode_texts"]
