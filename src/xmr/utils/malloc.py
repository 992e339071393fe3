"""glibc allocator tuning for CNN inference on CPU.

With glibc's default dynamic mmap threshold, every large activation tensor of a convolutional
forward is mmap'ed and unmapped again, and each first touch of its pages is a page fault: on
EfficientNet-Lite0 at batch 32 that is ~1.8M minor faults and ~2.4 s of kernel time per 128
images. Raising the mmap threshold (and the trim threshold, so freed memory is kept for the next
batch) serves those tensors from the already-mapped heap. Measured with
``benchmarks/bench_encode.py``'s probe: 1.44x faster forward (paired runs 1.37-1.50x).

Set ``XMR_NO_MALLOPT=1`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def tune_allocator_for_inference(mmap_threshold: int = 256 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Raise glibc's mmap/trim thresholds once per process. Returns True if applied."""
    if os.environ.get("XMR_NO_MALLOPT"):
        return False
    name = ctypes.util.find_library("c")
    if not name or "libc" not in name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    log.debug("glibc mallopt tuned for inference: %s", ok)
    return ok
