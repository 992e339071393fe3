"""The device and precision settings: a frozen dataclass, the one source of their defaults (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass

from xmr.errors import Param, XmrError

#: the device kinds ``device`` may name (``cuda`` also as ``cuda:N``)
DEVICES = ("auto", "cpu", "cuda", "mps")
#: the precisions: fp32 everywhere; bf16 autocast on CPU and GPUs; fp16 autocast on CUDA only
PRECISIONS = ("fp32", "bf16", "fp16")
#: the collective backends of several training processes: ``auto`` (``nccl`` when the runtime's device is
#: CUDA, else ``gloo``), or one forced (``gloo`` also moves CUDA tensors, slower; ``nccl`` needs CUDA)
PROCESS_BACKENDS = ("auto", "gloo", "nccl")
#: the default of :attr:`xmr.training.distributed.DistributedConfig.backend` (here: the CLI shows it torch-free)
DEFAULT_PROCESS_BACKEND = "auto"


@dataclass(frozen=True)
class RuntimeConfig:
    """Where a command's models run, and at which precision.

    Attributes:
        device: ``auto`` (CUDA, then MPS, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``fp32``; ``bf16`` (autocast on the CPU and GPUs) or ``fp16`` (autocast on CUDA),
            where the weights, the optimiser's state and the loss's logit scale stay fp32.
        loader_workers: processes that read images (decode, resize, augment: ``encoder.load``) for
            the encoders, through a ``torch.utils.data.DataLoader`` with pinned memory on CUDA
            (:mod:`xmr.encoders.loading`); 0: read in this process (two threads ahead of the encoder).
            The features are the same either way, byte for byte.
    """

    device: str = "auto"
    precision: str = "fp32"
    loader_workers: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.loader_workers, bool) or not isinstance(self.loader_workers, int) \
                or self.loader_workers < 0:
            raise XmrError("{workers} must be a whole number >= 0",
                           workers=Param("loader_workers", self.loader_workers))
