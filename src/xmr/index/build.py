"""Build an index from chunks of vectors that never sit in RAM together (shards, generators).

Two passes over the chunks: the first draws a seeded training sample (each row gets a uniform
key from the seed; the ``n_train`` smallest keys win, so the sample does not depend on how the
rows are cut into chunks), the second trains nothing and adds chunk after chunk; a refined
index's exact vectors go straight to a file beside the output (:meth:`VectorStore.spill`).

    index = build_index(lambda: read_shards(paths), IndexConfig(dim=256, factory="IVF4096,PQ32np",
                        refine=100), n_train=200_000, spill_dir=out)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from xmr.errors import XmrError
from xmr.index.config import IndexConfig
from xmr.index.faiss_index import Index
from xmr.index.inputs import as_float32_rows

log = logging.getLogger(__name__)

Chunks = Callable[[], Iterable[tuple[npt.ArrayLike, npt.ArrayLike | None]]]


def training_sample(chunks: Iterable[tuple[npt.ArrayLike, npt.ArrayLike | None]], n_train: int, dim: int, *,
                    seed: int = 0) -> np.ndarray:
    """``n_train`` rows drawn without replacement from all chunks (all rows if fewer). Shape ``(m, dim)``.

    Row ``j`` of the stream gets key ``u_j`` from ``default_rng(seed)`` drawn in stream order;
    the rows of the smallest keys are kept, so the draw is the same however the stream is cut.
    """
    rng = np.random.default_rng(seed)
    keys = np.zeros(0, dtype=np.float64)
    rows = np.zeros((0, dim), dtype=np.float32)
    for vectors, _ in chunks:
        x = as_float32_rows(vectors, dim, "vectors", allow_1d=False)
        k = rng.random(x.shape[0])
        keys, rows = np.concatenate([keys, k]), np.concatenate([rows, x])
        if keys.size > 2 * n_train:  # keep the buffer at most twice the sample
            keep = np.argpartition(keys, n_train)[:n_train]
            keys, rows = keys[keep], rows[keep]
    if keys.size > n_train:
        keep = np.argpartition(keys, n_train)[:n_train]
        keys, rows = keys[keep], rows[keep]
    return rows[np.argsort(keys, kind="stable")]


def build_index(chunks: Chunks, config: IndexConfig, *, n_train: int = 100_000, seed: int = 0,
                spill_to: str | Path | None = None,
                progress: Callable[[int], None] | None = None) -> Index:
    """An index of every chunk ``chunks()`` yields, trained on a seeded sample, added chunk by chunk.

    Args:
        chunks: called once per pass; yields ``(vectors (n, dim), ids (n,) or None)``.
        config: the index to build (``factory``, ``refine``...).
        n_train: training sample size (ignored by indexes that need no training).
        seed: seeds the sample.
        spill_to: with ``config.refine``, a new file (on the filesystem of the output, so that
            saving hard-links it) where the exact vectors are written as they come; default: kept
            in RAM until saved. The caller removes it once the index is saved.
        progress: called with the number of vectors added after each chunk.

    Raises:
        XmrError: a bad chunk (named by its number), too few vectors to train.
    """
    index = Index(config)
    start = time.perf_counter()
    if not index.is_trained:
        sample = training_sample(chunks(), n_train, config.dim, seed=seed)
        if sample.shape[0] == 0:
            raise XmrError("no vectors to build an index from")
        index.train(sample)
        del sample
        log.info("trained %r in %.1fs", config.factory, time.perf_counter() - start)
    if index.store is not None and spill_to is not None:
        index.store.spill(Path(spill_to))
    added = 0
    try:
        for i, (vectors, ids) in enumerate(chunks()):
            try:
                x = as_float32_rows(vectors, config.dim, "vectors", allow_1d=False)
                if x.shape[0] == 0:
                    continue
                index.add_trained(x, index.new_ids(x.shape[0], ids))
            except XmrError as e:
                raise XmrError(f"chunk {i}: {e}") from None
            added += x.shape[0]
            if progress is not None:
                progress(added)
    finally:
        if index.store is not None:
            index.store.close_spill()
    if added == 0:
        raise XmrError("no vectors to build an index from")
    log.info("built %r from %d vectors in %.1fs", index, added, time.perf_counter() - start)
    return index
