"""Several index shards searched as one: each answers its top-k, the answers merge by score.

Shards built by different workers or machines (each an :class:`~xmr.index.Index` over its own
ids) need no rebuild: the merged top-k is exactly the top-k one index over the union would give
(for exact shards; for approximate ones, each shard's own recall). An index folder may be a
shard set: ``shards.json`` listing the shard folders (relative to it), loaded by
:func:`load_sharded`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from xmr.errors import XmrError
from xmr.index.config import IndexConfig
from xmr.index.faiss_index import Index, load_index
from xmr.utils.io import load_json, save_json

SHARDS_FILE = "shards.json"


class ShardedIndex:
    """``search`` over several :class:`Index` shards of one model, as if they were one.

    Args:
        shards: indexes of the same dimension, metric and model, with disjoint ids.
        names: how to name each shard in errors (default ``shard 0``, ``shard 1``...).

    Raises:
        XmrError: no shards, a shard of another dimension, metric or model, or an id in two shards.
    """

    def __init__(self, shards: Sequence[Index], names: Sequence[str] | None = None) -> None:
        if not shards:
            raise XmrError("a sharded index needs at least one shard")
        names = list(names) if names is not None else [f"shard {i}" for i in range(len(shards))]
        first = shards[0].config
        for name, shard in zip(names, shards, strict=True):
            c = shard.config
            if (c.dim, c.metric, c.model_id) != (first.dim, first.metric, first.model_id):
                raise XmrError(f"{name} holds vectors of model {c.model_id!r} (dim {c.dim}, metric {c.metric!r}) "
                               f"but {names[0]} of model {first.model_id!r} (dim {first.dim}, metric "
                               f"{first.metric!r}); shards must come from one model")
        all_ids = np.concatenate([s.ids() for s in shards])
        uniq, counts = np.unique(all_ids, return_counts=True)
        if uniq.size < all_ids.size:
            dup = int(uniq[counts > 1][0])
            holders = [n for n, s in zip(names, shards, strict=True) if np.isin(dup, s.ids())]
            raise XmrError(f"id {dup} is in {' and '.join(holders)}: shards must hold disjoint ids")
        self.shards = list(shards)
        self.names = names

    @property
    def config(self) -> IndexConfig:
        """The first shard's config (dimension, metric and model are the same in every shard)."""
        return self.shards[0].config

    @property
    def dim(self) -> int:
        return self.config.dim

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    def ids(self) -> np.ndarray:
        """Every shard's ids, shard after shard. Shape: ``(ntotal,)`` int64."""
        return np.concatenate([s.ids() for s in self.shards])

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best over all shards, best first; as :meth:`Index.search` (same padding rule)."""
        parts = [s.search(queries, k) for s in self.shards if len(s)]
        if not parts:
            raise XmrError("index is empty: add vectors first")
        scores = np.concatenate([p[0] for p in parts], axis=1)
        ids = np.concatenate([p[1] for p in parts], axis=1)
        key = -scores if self.config.metric == "ip" else scores  # padding: -inf (ip) / +inf (l2) sorts last
        width = min(k, scores.shape[1])
        order = np.argsort(key, axis=1, kind="stable")[:, :width]
        scores, ids = np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)
        filled = int((ids >= 0).sum(axis=1).max()) if ids.size else 0
        return scores[:, :filled], ids[:, :filled]


def save_shard_set(directory: str | os.PathLike[str], shard_dirs: Sequence[str | os.PathLike[str]]) -> Path:
    """Write ``directory/shards.json`` naming ``shard_dirs`` (stored relative to ``directory``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = [os.path.relpath(Path(d).resolve(), directory.resolve()) for d in shard_dirs]
    save_json(directory / SHARDS_FILE, {"format": "xmr.shards", "version": 1, "shards": names})
    return directory


def load_sharded(directory: str | os.PathLike[str], *, expect_dim: int | None = None,
                 expect_model_id: str | None = None, mmap: bool = False) -> ShardedIndex:
    """The shard set at ``directory`` (``shards.json``), every shard checked as :func:`load_index` does."""
    directory = Path(directory)
    meta = load_json(directory / SHARDS_FILE)
    if not isinstance(meta, dict) or meta.get("format") != "xmr.shards" or not isinstance(meta.get("shards"), list):
        raise XmrError(f"{directory / SHARDS_FILE}: not an xmr shard list")
    names = [str(n) for n in meta["shards"]]
    shards = [load_index(directory / n, expect_dim=expect_dim, expect_model_id=expect_model_id, mmap=mmap)
              for n in names]
    return ShardedIndex(shards, names=[str(directory / n) for n in names])
