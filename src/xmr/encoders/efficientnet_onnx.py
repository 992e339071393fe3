"""EfficientNet-Lite0 image features on ONNX Runtime: ``efficientnet-lite0-onnx``, the CPU fast path.

The torch model of :mod:`xmr.encoders.efficientnet` (same weights, same preprocessing) is exported
once with torch's TorchScript-based ONNX exporter (``dynamo=False``: no ``onnx`` / ``onnxscript``
package needed, see :func:`export_graph`) to ``<cache dir>/onnx/<encoder id>.v<N>.onnx`` (the cache root
the features go to: ``--cache-dir``, told by :func:`xmr.workflows.features.encode_items` through
:meth:`EfficientNetLite0Onnx.use_cache_root`; else :func:`~xmr.utils.paths.default_cache_dir`), written
atomically, and run by onnxruntime at the command's heavy-work thread count
(:mod:`xmr.utils.threads`), its idle threads spinning only when ``OMP_WAIT_POLICY`` is ACTIVE. A later
call, in this process or another, loads the cached graph (no torch model is built); a cached graph
onnxruntime cannot load (a damaged file) is exported again, with a warning.

Its ``encoder_id`` is the torch encoder's: the features agree within cosine 1 - 1e-5 (min over seeded
images, ``tests/test_efficientnet_onnx.py``; the issue's bound is 0.9999) -- the same kind of
difference as torch at another thread count, which shares one id too -- so a feature cache filled by
either serves both, and a run trained on torch features encodes new images here. Only
``encode_batch`` runs on onnxruntime; ``forward``, the trunk / tail split and region features stay
the torch model's (they load it on first use).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmr.encoders.base import ENCODERS
from xmr.encoders.efficientnet import MEAN, STD, EfficientNetLite0
from xmr.errors import XmrError
from xmr.utils import threads
from xmr.utils.io import atomic_save_file
from xmr.utils.paths import default_cache_dir

log = logging.getLogger(__name__)

#: bump when the exported graph changes for the same encoder id (names a new cache file)
GRAPH_VERSION = 1
OPSET = 17


def graph_path(encoder_id: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the ONNX graph of ``encoder_id`` is cached: ``<cache_dir>/onnx/<id>.v<N>.onnx``
    (``cache_dir`` default: :func:`xmr.utils.paths.default_cache_dir`)."""
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in encoder_id)
    return Path(cache_dir or default_cache_dir()) / "onnx" / f"{safe}.v{GRAPH_VERSION}.onnx"


class _Pooled(torch.nn.Module):
    """What is exported: normalised batch -> pooled features. Shape: (B, 3, S, S) -> (B, 1280)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))  # type: ignore[operator]


@contextlib.contextmanager
def _without_onnx_package() -> Iterator[None]:
    """The TorchScript exporter re-reads its finished graph with the ``onnx`` package only to insert
    custom onnxscript functions, which this graph has none of; where ``onnx`` is not installed, that
    step is skipped (the bytes pass through unchanged). With ``onnx`` installed: nothing changes."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        pass
    else:
        yield
        return
    module: Any = None
    for name in ("torch.onnx._internal.torchscript_exporter.onnx_proto_utils",  # torch >= 2.9
                 "torch.onnx._internal.onnx_proto_utils"):  # older torch
        with contextlib.suppress(ImportError):
            module = __import__(name, fromlist=["_add_onnxscript_fn"])
            break
    if module is None or not hasattr(module, "_add_onnxscript_fn"):
        yield
        return
    original = module._add_onnxscript_fn

    def passthrough(model_bytes: bytes, custom_opsets: Any) -> bytes:
        if custom_opsets:
            return original(model_bytes, custom_opsets)
        return model_bytes

    module._add_onnxscript_fn = passthrough
    try:
        yield
    finally:
        module._add_onnxscript_fn = original


def export_graph(net: torch.nn.Module, path: Path, image_size: int) -> None:
    """Export ``net`` (an EfficientNet in eval mode) as pooled features with a dynamic batch axis to
    ``path``, atomically. Graph: input ``x`` (B, 3, S, S) float32 -> output ``features`` (B, 1280)."""
    dummy = torch.zeros(1, 3, image_size, image_size)

    def write(tmp: str) -> None:
        with warnings.catch_warnings(), _without_onnx_package(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's tracer warnings are not the user's business
            torch.onnx.export(_Pooled(net).eval(), (dummy,), tmp, dynamo=False, opset_version=OPSET,
                              input_names=["x"], output_names=["features"],
                              dynamic_axes={"x": {0: "batch"}, "features": {0: "batch"}})

    try:
        atomic_save_file(path, write)
    except XmrError:
        raise
    except Exception as e:  # the exporter's own errors (a torch without a working exporter)
        raise XmrError(f"cannot export the EfficientNet-Lite0 graph to ONNX ({type(e).__name__}: {e}); "
                       "use the torch encoder efficientnet-lite0") from None


@ENCODERS.register("efficientnet-lite0-onnx")
class EfficientNetLite0Onnx(EfficientNetLite0):
    """EfficientNet-Lite0 on onnxruntime (see the module docstring). 1280-d, the torch encoder's id.

    Args:
        image_size: as :class:`~xmr.encoders.efficientnet.EfficientNetLite0`.
        cache_dir: where the exported graph is cached (None: the xmr cache dir, read when first used).
    """

    thread_safe = True  # one onnxruntime session per thread count; its run() may be called concurrently

    def __init__(self, *, image_size: int = 224, cache_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__(image_size=image_size)
        self.cache_dir = cache_dir
        self._sessions: dict[tuple[int, bool], Any] = {}
        self._lock = threading.Lock()
        #: how many times this encoder exported its graph (0 when it loaded a cached one)
        self.exports = 0

    def use_cache_root(self, root: str | os.PathLike[str]) -> None:
        """Cache the graph under ``root`` (the command's cache root) unless a ``cache_dir`` was given."""
        if self.cache_dir is None:
            self.cache_dir = root

    @property
    def graph_path(self) -> Path:
        """The cached graph's path (:func:`graph_path` of this encoder's id)."""
        return graph_path(self.encoder_id, self.cache_dir)

    def session(self) -> Any:
        """The onnxruntime session at the command's heavy-work thread count, its idle threads spinning
        only under ``OMP_WAIT_POLICY=ACTIVE`` (made on first use, one per count and policy)."""
        config = threads.current_config()
        policy = os.environ.get(threads.WAIT_POLICY_ENV, config.wait_policy)  # as OpenMP's threads wait
        key = (config.for_work("heavy"), policy.strip().upper() == "ACTIVE")
        with self._lock:
            if key not in self._sessions:
                self._sessions[key] = self._open(*key)
            return self._sessions[key]

    def _open(self, n_threads: int, spin: bool) -> Any:
        try:
            import onnxruntime as ort
        except ImportError:
            raise XmrError("efficientnet-lite0-onnx needs onnxruntime; reinstall xmr with its dependencies") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = n_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if not spin:  # like OpenMP's PASSIVE wait policy (xmr.utils.threads): idle threads sleep
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = self.graph_path
        if path.is_file():
            try:
                return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own exception types for a damaged file
                log.warning("cached ONNX graph %s cannot be loaded (%s); exporting it again",
                            path, str(e).splitlines()[0] if str(e) else type(e).__name__)
        log.info("exporting %s to ONNX: %s", self.encoder_id, path)
        export_graph(self.model, path, self.image_size)
        self.exports += 1
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        """Shape: B uint8 (S, S, 3) arrays (from :meth:`load`) -> (B, 1280) float32."""
        if not inputs:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = np.stack(inputs).astype(np.float32).transpose(0, 3, 1, 2)  # type: ignore[arg-type]
        x = (x / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)
        out = self.session().run(None, {"x": np.ascontiguousarray(x)})[0]
        return np.asarray(out, dtype=np.float32)
