"""Weights of a torch module as ``model.safetensors``, named by a hash of their content.

A checkpoint is a folder (weights + JSON + vocabulary) written as one unit with
:func:`xmr.utils.io.atomic_folder`, and its id is checked against the weights on every load:
weights copied in from another run are refused, never served under this run's id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from xmr.errors import XmrError
from xmr.utils.io import atomic_save_file

WEIGHTS_FILE = "model.safetensors"


def weights_id(state: Mapping[str, torch.Tensor]) -> str:
    """First 16 hex digits of a SHA-1 over the sorted parameter names and bytes of ``state``.

    Equal weights give equal ids, so indexes and galleries can check which model built them.
    """
    digest = hashlib.sha1()
    for k in sorted(state):
        digest.update(k.encode())
        digest.update(state[k].detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_weights(module: nn.Module, directory: str | Path) -> str:
    """Write ``module``'s state atomically to ``<directory>/model.safetensors``; return its id."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}  # from any device
    model_id = weights_id(state)
    atomic_save_file(Path(directory) / WEIGHTS_FILE,
                     lambda tmp: save_file(state, tmp, metadata={"xmr_model_id": model_id}))
    return model_id


def load_weights(module: nn.Module, directory: str | Path, *, expect_id: str | None = None) -> str:
    """Load ``<directory>/model.safetensors`` into ``module``; returns the weights' id.

    Raises:
        XmrError: the file is missing or unreadable, does not fit the module, or its content's
            id differs from ``expect_id`` (the id the checkpoint's JSON was written with).
    """
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise XmrError(f"{path}: model weights not found")
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise XmrError(f"{path}: cannot load weights ({str(e).splitlines()[0]})") from None
    model_id = weights_id(state)
    if expect_id is not None and model_id != expect_id:
        raise XmrError(f"{path}: these weights (id {model_id}) are not the ones the checkpoint was saved with "
                       f"(id {expect_id}); restore the run's own weights or retrain")
    try:
        module.load_state_dict(state)
    except Exception as e:  # torch's RuntimeError lists every mismatched tensor; keep the first one
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        first = next((line for line in lines if not line.endswith(":")), lines[0] if lines else type(e).__name__)
        more = f" and {len(lines) - 2} more" if len(lines) > 2 else ""
        raise XmrError(f"{path}: weights do not fit the saved model config ({first}{more})") from None
    return model_id


def saved_model_id(meta: Mapping[str, object], where: str | Path) -> str:
    """The ``model_id`` a checkpoint's JSON was written with; refuse a JSON without one."""
    model_id = meta.get("model_id")
    if not isinstance(model_id, str) or not model_id:
        raise XmrError(f"{where}: no model_id; not an xmr checkpoint")
    return model_id
