"""Clustered unit vectors streamed in seeded chunks: the galleries of the index benchmarks.

``n_clusters`` seeded unit centres; each vector a centre plus Gaussian noise of norm ~``noise``,
normalised (real embeddings are clustered like this, not uniform). Chunk ``j`` depends only on
``(seed, j)``, so every size is the prefix of the next and any chunk can be made alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

CHUNK = 100_000


def centres(n_clusters: int, dim: int, seed: int) -> np.ndarray:
    """Shape ``(n_clusters, dim)`` unit rows."""
    c = np.random.default_rng([seed, 0]).standard_normal((n_clusters, dim)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def around(c: np.ndarray, n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """``n`` unit vectors, each near a random row of ``c``. Shape ``(n, dim)`` float32."""
    dim = c.shape[1]
    x = c[rng.integers(0, c.shape[0], n)] + rng.standard_normal((n, dim), dtype=np.float32) * (noise / dim**0.5)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def stream(n: int, *, dim: int = 256, n_clusters: int = 1000, noise: float = 1.0, seed: int = 0,
           start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Rows ``start .. n`` in chunks of :data:`CHUNK` (``start`` a multiple of it): ``(vectors, ids)``."""
    c = centres(n_clusters, dim, seed)
    for a in range(start, n, CHUNK):
        size = min(CHUNK, n - a)
        yield around(c, size, np.random.default_rng([seed, 1, a // CHUNK]), noise), np.arange(a, a + size)


def queries(n: int, *, dim: int = 256, n_clusters: int = 1000, noise: float = 1.0, seed: int = 0) -> np.ndarray:
    """``n`` queries from the same distribution, another seed. Shape ``(n, dim)``."""
    return around(centres(n_clusters, dim, seed), n, np.random.default_rng([seed, 2]), noise)
