"""A frozen encoder placed on a :class:`~xmr.runtime.device.Runtime`: its network on the runtime's
device, its ``encode_batch`` under the runtime's autocast, its features back as CPU float32 numpy.

:func:`place_encoder` changes nothing on the CPU at fp32 (the same object, the same computation),
so the features of ``--device cpu`` are the features of no option, byte for byte. An encoder whose
class has a ``to_device(device)`` hook moves its network there; one without (numpy encoders:
``toy-text``, the word-id rows; the int8 ONNX stand-in) keeps running on the CPU, which is where its
inputs already are. The feature cache keys stay the encoder id at fp32, whatever device made the
features (a GPU's differ from the CPU's by rounding); features made at a reduced precision are cached
apart, under ``<encoder id>@<precision>`` (:func:`_at_precision`; the encoders with a ``to_device``
hook, the torch networks, the trunk encoders of fine-tuned runs included). ``xmr train`` encodes on
the runtime's device at fp32 (its caches hold fp32 features whatever the heads train at).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from xmr.encoders.base import Encoder
from xmr.encoders.loading import LoaderConfig
from xmr.runtime.device import Runtime

E = TypeVar("E", bound=Encoder)


def place_encoder(encoder: E, runtime: Runtime | None) -> E:
    """``encoder`` running on ``runtime`` (None or the CPU at fp32: untouched); the same object.

    Its ``encode_batch`` keeps its contract: float32 numpy (len(inputs), dim), on the CPU. With
    ``runtime.loader_workers`` its images are read by that many DataLoader processes
    (:mod:`xmr.encoders.loading`), pinned for a CUDA device; the features are the same.
    """
    if runtime is not None and runtime.loader_workers > 0:
        encoder.loader = LoaderConfig(workers=runtime.loader_workers,  # type: ignore[attr-defined]  # read by loader_of
                                      pin_memory=runtime.pin_memory)
    if runtime is None or runtime.is_cpu_fp32:
        return encoder
    move = getattr(encoder, "to_device", None)
    if runtime.device.type != "cpu" and callable(move):
        move(runtime.device)
    if runtime.autocast_dtype is not None:
        # instance attributes: isinstance checks, the encoder id and load() stay the encoder's own
        setattr(encoder, "encode_batch", _under_autocast(encoder.encode_batch, runtime))  # noqa: B010
        if callable(move):  # a torch network runs at the reduced precision: its features are cached apart
            setattr(encoder, "describe", _at_precision(encoder.describe, runtime.precision))  # noqa: B010
    return encoder


def _at_precision(fn: Callable[[], dict[str, object]], precision: str) -> Callable[[], dict[str, object]]:
    """``describe`` of an encoder run at a reduced ``precision``: its features are cached apart from the
    fp32 ones (``<encoder id>@bf16``), so a cache never mixes the two (EfficientNet-Lite0's bf16 features
    are within cosine 0.9996 of its fp32 ones, not 0.9999)."""
    @functools.wraps(fn)
    def describe() -> dict[str, object]:
        d = fn()
        return {**d, "encoder_id": f"{d['encoder_id']}@{precision}", "precision": precision}
    return describe


def _under_autocast(fn: Callable[[Sequence[object]], np.ndarray],
                    runtime: Runtime) -> Callable[[Sequence[object]], np.ndarray]:
    @functools.wraps(fn)
    def encode_batch(inputs: Sequence[object]) -> np.ndarray:
        with runtime.autocast():
            out = fn(inputs)
        return np.asarray(out, dtype=np.float32)
    return encode_batch
