"""The encoder interface and registry.

An encoder turns raw inputs of one modality into fixed-size feature vectors with a frozen,
pretrained network. xmr never fine-tunes encoders: it caches their features
(:mod:`xmr.encoders.cache`) and learns projection heads on top.

Add your own (say a CLIP you have on disk) by registering a factory::

    from xmr.encoders import ENCODERS, TextEncoder

    @ENCODERS.register("my-clip-text")
    def _make(**kw):
        return MyClipText(**kw)      # subclass of TextEncoder

    xmr.encoders.create_encoder("my-clip-text")
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from xmr.errors import XmrError
from xmr.modality import Modality
from xmr.registry import Registry


class Encoder(abc.ABC):
    """A frozen feature extractor. Subclasses set ``modality``, ``dim`` and ``encoder_id``.

    ``encoder_id`` names the weights *and* the preprocessing: two encoders whose outputs could
    differ must have different ids, since the feature cache is keyed by it.
    """

    modality: ClassVar[Modality]
    dim: int
    encoder_id: str
    default_batch_size: int = 32

    @abc.abstractmethod
    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        """Encode one batch of already-loaded inputs. Returns float32 (len(inputs), dim)."""

    def describe(self) -> dict[str, object]:
        """What to save next to cached features (the cache refuses a mismatch)."""
        return {"encoder_id": self.encoder_id, "modality": self.modality, "dim": self.dim}


class TextEncoder(Encoder):
    """Encodes strings. ``encode_batch`` receives a list of non-empty strings."""

    modality: ClassVar[Modality] = "text"

    def load(self, text: str) -> str:
        return text


class ImageEncoder(Encoder):
    """Encodes images. ``load`` turns a path into the model input; ``encode_batch`` stacks them."""

    modality: ClassVar[Modality] = "image"

    @abc.abstractmethod
    def load(self, path: str | Path) -> np.ndarray:
        """Read and preprocess one image; raise XmrError naming the path if it is unusable."""


ENCODERS: Registry[Callable[..., Encoder]] = Registry("encoder")  # classes, or factories (region encoders)


def create_encoder(name: str, **kwargs: object) -> Encoder:
    """Instantiate the encoder registered as ``name`` (weights load on first use)."""
    return ENCODERS.get(name)(**kwargs)


def create_image_encoder(name: str, **kwargs: object) -> ImageEncoder:
    """:func:`create_encoder` for an image encoder; a text encoder's name is refused by name."""
    enc = create_encoder(name, **kwargs)
    if not isinstance(enc, ImageEncoder):
        raise XmrError(f"encoder {name!r} encodes {enc.modality}s, not images; give an image encoder (xmr list)")
    return enc


def create_text_encoder(name: str, **kwargs: object) -> TextEncoder:
    """:func:`create_encoder` for a text encoder; an image encoder's name is refused by name."""
    enc = create_encoder(name, **kwargs)
    if not isinstance(enc, TextEncoder):
        raise XmrError(f"encoder {name!r} encodes {enc.modality}s, not texts; give a text encoder (xmr list)")
    return enc
