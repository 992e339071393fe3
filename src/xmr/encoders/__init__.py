"""Frozen pretrained encoders, their registry and the on-disk feature cache."""

from __future__ import annotations

from xmr.encoders import (  # noqa: F401  (register the built-ins)
           conse,
           conse_tags,
           efficientnet,
           efficientnet_onnx,
           fne,
           hf_clip,
           minilm,
           minilm_int8,
           openclip,
           regions,  # noqa: E402,F401,I001  (register the region encoders; needs the pipeline)
           sentence,
           toy,
)
from xmr.encoders.base import (
           ENCODERS,
           Encoder,
           EncoderFamily,
           ImageEncoder,
           TextEncoder,
           canonical_encoder_name,
           create_encoder,
           create_image_encoder,
           create_text_encoder,
           is_encoder_name,
           register_encoder_family,
           resolve_encoder,
)
from xmr.encoders.cache import FeatureCache
from xmr.encoders.pipeline import EncodeResult, encode_images, encode_texts
from xmr.encoders.text_trunk import SplittableTextEncoder, TextTail, TextTrunkEncoder, check_tail_layers
from xmr.encoders.trunk import ImageTail, SplittableEncoder, TrunkEncoder, check_tail_blocks

__all__ = ["ENCODERS", "Encoder", "EncoderFamily", "ImageEncoder", "TextEncoder", "canonical_encoder_name",
           "create_encoder", "create_image_encoder", "create_text_encoder", "is_encoder_name",
           "register_encoder_family", "resolve_encoder", "FeatureCache",
           "EncodeResult", "encode_images", "encode_texts",
           "ImageTail", "SplittableEncoder", "TrunkEncoder", "check_tail_blocks",
           "SplittableTextEncoder", "TextTail", "TextTrunkEncoder", "check_tail_layers"]
