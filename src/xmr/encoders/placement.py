"""A frozen encoder placed on a :class:`~xmr.runtime.device.Runtime`: its network on the runtime's
device, its ``encode_batch`` under the runtime's autocast, its features back as CPU float32 numpy.

:func:`place_encoder` changes nothing on the CPU at fp32 (the same object, the same computation),
so the features of ``--device cpu`` are the features of no option, byte for byte. An encoder whose
class has a ``to_device(device)`` hook moves its network there; one without (numpy encoders:
``toy-text``, the word-id rows; the int8 ONNX stand-in) keeps running on the CPU, which is where its
inputs already are. The feature cache keys stay the encoder id: features are cached whatever device
and precision made them (a GPU's features differ from the CPU's by rounding; bf16 ones stay within
the cosine ``tests/test_runtime_commands.py`` states). The trunk encoders of a fine-tuned run have no
hook: they run on the CPU, under the autocast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from xmr.encoders.base import Encoder
from xmr.runtime.device import Runtime

E = TypeVar("E", bound=Encoder)


def place_encoder(encoder: E, runtime: Runtime | None) -> E:
    """``encoder`` running on ``runtime`` (None or the CPU at fp32: untouched); the same object.

    Its ``encode_batch`` keeps its contract: float32 numpy (len(inputs), dim), on the CPU.
    """
    if runtime is None or runtime.is_cpu_fp32:
        return encoder
    move = getattr(encoder, "to_device", None)
    if runtime.device.type != "cpu" and callable(move):
        move(runtime.device)
    if runtime.autocast_dtype is not None:
        # an instance attribute: isinstance checks, the encoder id and load() stay the encoder's own
        setattr(encoder, "encode_batch", _under_autocast(encoder.encode_batch, runtime))  # noqa: B010
    return encoder


def _under_autocast(fn: Callable[[Sequence[object]], np.ndarray],
                    runtime: Runtime) -> Callable[[Sequence[object]], np.ndarray]:
    @functools.wraps(fn)
    def encode_batch(inputs: Sequence[object]) -> np.ndarray:
        with runtime.autocast():
            out = fn(inputs)
        return np.asarray(out, dtype=np.float32)
    return encode_batch
