"""Weights of a torch module as ``model.safetensors``, named by a hash of their content."""

from __future__ import annotations

import hashlib
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from xmr.errors import XmrError
from xmr.utils.io import atomic_save_file

WEIGHTS_FILE = "model.safetensors"


def save_weights(module: nn.Module, directory: str | Path) -> str:
    """Write ``module``'s state atomically to ``<directory>/model.safetensors``; return its id.

    The id is the first 16 hex digits of a SHA-1 over the sorted parameter names and bytes: equal
    weights give equal ids, so indexes and galleries can check which model built them.
    """
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    digest = hashlib.sha1()
    for k in sorted(state):
        digest.update(k.encode())
        digest.update(state[k].numpy().tobytes())
    atomic_save_file(Path(directory) / WEIGHTS_FILE, lambda tmp: save_file(state, tmp))
    return digest.hexdigest()[:16]


def load_weights(module: nn.Module, directory: str | Path) -> None:
    """Load ``<directory>/model.safetensors`` into ``module``; a one-line error if missing or unreadable."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise XmrError(f"{path}: model weights not found")
    try:
        module.load_state_dict(load_file(str(path)))
    except Exception as e:  # safetensors and torch raise their own error types
        raise XmrError(f"{path}: cannot load weights ({str(e).splitlines()[0]})") from None
