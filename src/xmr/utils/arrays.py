"""Small numpy helpers shared across layers (one copy of each)."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, *, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm; rows of norm below ``eps`` are divided by ``eps``.

    Shape: (n, d) -> (n, d) (any leading shape: the last axis is normalised). The dtype of a
    floating ``x`` is kept; integers become float64.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps).astype(x.dtype, copy=False)
