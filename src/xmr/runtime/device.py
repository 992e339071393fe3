"""A :class:`~xmr.runtime.RuntimeConfig` resolved against the torch of this machine, once.

:func:`resolve` picks the device (``auto``: CUDA, then MPS, else the CPU) and refuses, in one
error naming it, a device that is not there, an unknown precision and fp16 off CUDA.
:meth:`Runtime.autocast` is the mixed-precision context of the forward passes (a null context at
fp32, so fp32 runs are the same computation as without it); :func:`to_numpy` is the numpy
boundary of a tensor on any device and at any precision.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xmr.errors import Param, XmrError
from xmr.runtime.config import PRECISIONS, RuntimeConfig

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """A resolved device and precision.

    Attributes:
        device: where the models and the batches live.
        precision: ``fp32``, ``bf16`` or ``fp16`` (checked against the device).
        picked: the device was picked (``auto``), not named: a job that runs only on the CPU may
            run there instead of refusing it.
        loader_workers: processes reading images for the encoders (:attr:`RuntimeConfig.loader_workers`;
            0: this process).
    """

    device: torch.device
    precision: str = "fp32"
    picked: bool = False
    loader_workers: int = 0

    @property
    def pin_memory(self) -> bool:
        """Whether batches bound for the device are staged in page-locked host memory (CUDA only)."""
        return self.device.type == "cuda"

    @property
    def is_cpu_fp32(self) -> bool:
        """True on the CPU at fp32 (what a job that knows no other runtime runs at)."""
        return self.device.type == "cpu" and self.precision == "fp32"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype autocast computes in (None: fp32, no autocast)."""
        return _DTYPES.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The context of a mixed-precision forward pass (fp32: a null context). Parameters stay fp32."""
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)


#: CPU at fp32: what every library function does when given no runtime
CPU_FP32 = Runtime(torch.device("cpu"), "fp32")


def resolve(config: RuntimeConfig | None = None) -> Runtime:
    """The :class:`Runtime` of ``config`` on this machine (None: the defaults).

    Raises:
        XmrError: a device that is not a known kind or that torch does not see here, an unknown
            precision, or fp16 on a device other than CUDA (each naming the setting).
    """
    config = config or RuntimeConfig()
    if config.precision not in PRECISIONS:
        raise XmrError("unknown precision {precision}; one of {known}",
                       precision=Param("precision", config.precision), known=", ".join(PRECISIONS))
    device = _device(config.device)
    if config.precision == "fp16" and device.type != "cuda":
        raise XmrError("{precision} runs on CUDA only, not on {device}; use bf16 there",
                       precision=Param("precision", config.precision), device=str(device))
    return Runtime(device, config.precision, picked=config.device == "auto", loader_workers=config.loader_workers)


def _device(name: str) -> torch.device:
    """The torch device ``name`` names, checked to be present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise XmrError("{device} is not available on this machine (torch sees no MPS device)",
                           device=Param("device", name))
        return torch.device("mps")
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if m is None:
        raise XmrError("unknown device {device}; one of auto, cpu, cuda, cuda:N, mps", device=Param("device", name))
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(m.group(1)) if m.group(1) is not None else None
    if n == 0 or (index is not None and index >= n):
        raise XmrError("{device} is not available on this machine (torch sees {n} CUDA device(s))",
                       device=Param("device", name), n=n)
    return torch.device(name)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A tensor on any device, at any floating precision, as a float32 numpy array (no gradient)."""
    return tensor.detach().float().cpu().numpy()
