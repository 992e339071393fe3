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


def resolve(config: RuntimeConfig | None = None, local_rank: int | None = None) -> Runtime:
    """The :class:`Runtime` of ``config`` on this machine (None: the defaults).

    ``local_rank``: this process among several training processes on its machine (torchrun's
    ``LOCAL_RANK``; None: one process). With it, ``auto`` and ``cuda`` (no index) give each process
    the GPU of its local rank, ``cuda:LOCAL_RANK`` (:func:`process_device`); ``cuda:N`` stays as named.

    Raises:
        XmrError: a device that is not a known kind or that torch does not see here, an unknown
            precision, or fp16 on a device other than CUDA (each naming the setting).
    """
    config = config or RuntimeConfig()
    if config.precision not in PRECISIONS:
        raise XmrError("unknown precision {precision}; one of {known}",
                       precision=Param("precision", config.precision), known=", ".join(PRECISIONS))
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = torch.device(process_device(config.device, cuda_count=cuda_count, mps=_mps_available(),
                                         local_rank=local_rank))
    if config.precision == "fp16" and device.type != "cuda":
        raise XmrError("{precision} runs on CUDA only, not on {device}; use bf16 there",
                       precision=Param("precision", config.precision), device=str(device))
    return Runtime(device, config.precision, picked=config.device == "auto", loader_workers=config.loader_workers)


def process_device(name: str, *, cuda_count: int, mps: bool = False, local_rank: int | None = None) -> str:
    """The device ``name`` names on a machine with ``cuda_count`` CUDA devices (and MPS when ``mps``),
    checked to be present (a pure function: the tests give the machine).

    ``auto``: CUDA, then MPS, else the CPU. With ``local_rank`` (one of several processes on this
    machine), ``auto`` on a CUDA machine and ``cuda`` are ``cuda:<local_rank>``: one GPU per process,
    as DistributedDataParallel expects; a process whose local rank has no GPU is refused.
    """
    if name == "auto":
        if cuda_count:
            return "cuda" if local_rank is None else _rank_gpu(name, local_rank, cuda_count)
        return "mps" if mps else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "mps":
        if not mps:
            raise XmrError("{device} is not available on this machine (torch sees no MPS device)",
                           device=Param("device", name))
        return "mps"
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if m is None:
        raise XmrError("unknown device {device}; one of auto, cpu, cuda, cuda:N, mps", device=Param("device", name))
    index = int(m.group(1)) if m.group(1) is not None else None
    if cuda_count == 0 or (index is not None and index >= cuda_count):
        raise XmrError("{device} is not available on this machine (torch sees {n} CUDA device(s))",
                       device=Param("device", name), n=cuda_count)
    if index is None and local_rank is not None:
        return _rank_gpu(name, local_rank, cuda_count)
    return name


def _rank_gpu(name: str, local_rank: int, cuda_count: int) -> str:
    """``cuda:<local_rank>``, refused when this machine has no GPU of that index."""
    if local_rank >= cuda_count:
        raise XmrError("{device}: the training process of local rank {local_rank} has no GPU of its own (torch "
                       "sees {n} CUDA device(s)); start at most {n} processes per machine",
                       device=Param("device", name), local_rank=local_rank, n=cuda_count)
    return f"cuda:{local_rank}"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A tensor on any device, at any floating precision, as a float32 numpy array (no gradient)."""
    return tensor.detach().float().cpu().numpy()
