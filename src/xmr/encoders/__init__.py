"""Frozen pretrained encoders, their registry and the on-disk feature cache."""

from __future__ import annotations

from xmr.encoders import efficientnet, minilm, toy  # noqa: F401  (register the built-ins)
from xmr.encoders.base import ENCODERS, Encoder, ImageEncoder, TextEncoder, create_encoder
from xmr.encoders.cache import FeatureCache
from xmr.encoders.pipeline import EncodeResult, encode_images, encode_texts
from xmr.encoders import regions  # noqa: E402,F401,I001  (register the region encoders; needs the pipeline)

__all__ = ["ENCODERS", "Encoder", "ImageEncoder", "TextEncoder", "create_encoder", "FeatureCache",
           "EncodeResult", "encode_images", "encode_texts"]
