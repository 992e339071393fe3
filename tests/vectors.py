"""Seeded vectors shared by the index tests."""

from __future__ import annotations

import numpy as np

DIM = 32


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """Seeded random L2-normalised float32 vectors. Shape: (n, dim)."""
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
