"""A FAISS index with ids, checked inputs, one-line errors and a safe on-disk format.

Numpy in, numpy out::

    index = Index(IndexConfig(dim=256, model_id="clip-b32"))
    index.add(image_vectors)                         # ids 0..n-1
    scores, ids = index.search(text_vectors, k=10)   # (nq, 10) float32, (nq, 10) int64
    index.save("runs/coco/index")
    index = load_index("runs/coco/index", expect_model_id="clip-b32", expect_dim=256)
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import os
import time
import typing
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

from xmr.errors import XmrError
from xmr.index.config import IndexConfig
from xmr.index.faiss_utils import (
    apply_search_params,
    faiss_error_reason,
    ivf_nlist,
    suggest_factory,
)
from xmr.index.storage import (
    CONFIG_FILE,
    FORMAT,
    INDEX_FILE,
    VERSION,
    read_index_file,
    read_index_meta,
    write_index_files,
)

logger = logging.getLogger(__name__)

_NUMERIC_KINDS = "fiu"
_NORM_TOLERANCE = 1e-2


def _as_float32_rows(x: npt.ArrayLike, dim: int, what: str, *, allow_1d: bool) -> np.ndarray:
    """``x`` as a C-contiguous float32 ``(n, dim)`` array, copying only when it must.

    Args:
        x: Array-like of shape ``(n, dim)`` (or ``(dim,)`` when ``allow_1d``).
        dim: Expected dimension.
        what: How to name ``x`` in errors (``"query"``, ``"vectors"``).
        allow_1d: Accept a single vector and return it as shape ``(1, dim)``.

    Raises:
        XmrError: wrong shape or dimension, non-numeric dtype, NaN or inf values.
    """
    a = x if isinstance(x, np.ndarray) else np.asarray(x)
    plural = what.endswith("s")  # "query has", "vectors have"
    if a.ndim == 1 and allow_1d:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise XmrError(f"{what} must have shape (n, {dim}), got shape {a.shape}")
    if a.shape[1] != dim:
        has = "have" if plural else "has"
        raise XmrError(f"{what} {has} dim {a.shape[1]}, index has dim {dim}")
    if a.dtype != np.float32 or not a.flags.c_contiguous:
        if a.dtype.kind not in _NUMERIC_KINDS:
            raise XmrError(f"{what} must be a float array, got dtype {a.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range -> inf, caught below
            a = np.ascontiguousarray(a, dtype=np.float32)
    # One pass without a temporary: NaN and inf propagate through a sum. Only if it is not
    # finite (or overflowed) pay for the row-by-row check that names the culprit.
    if not np.isfinite(a.sum()):
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
        if bad.size:
            more = f" and {bad.size - 1} more" if bad.size > 1 else ""
            verb = "contain" if plural else "contains"
            raise XmrError(f"{what} {verb} NaN or inf values (row {int(bad[0])}{more})")
    return a


def _check_k(k: int) -> int:
    try:
        k = operator.index(k)
    except TypeError:
        raise XmrError(f"k must be an integer, got {k!r}") from None
    if k < 1:
        raise XmrError(f"k must be >= 1, got {k}")
    return k


def _describe_model(model_id: str | None, dim: int) -> str:
    name = f"model {model_id!r}" if model_id is not None else "an unnamed model"
    return f"{name} (dim {dim})"


class Index:
    """Vectors with int64 ids, searchable by inner product or L2, backed by any FAISS index.

    FAISS numbers vectors 0, 1, 2... in insertion order; xmr maps those positions to the ids
    given to :meth:`add` with a numpy array, and keeps no array at all while the ids are
    exactly the positions (the default). This keeps ``search`` as fast as the raw FAISS index:
    an ``IndexIDMap`` wrapper would add an OpenMP region per call, which costs milliseconds
    on a busy machine. On disk the ids are stored FAISS-style, as an ``IndexIDMap`` in
    ``index.faiss``. IVF/PQ indexes are trained on the first :meth:`add`.

    Args:
        config: What to build; see :class:`IndexConfig`.
    """

    def __init__(self, config: IndexConfig) -> None:
        index = faiss.index_factory(config.dim, config.factory, config.faiss_metric)
        self._setup(config, index, ids=None, owner=None)

    def _setup(self, config: IndexConfig, index: faiss.Index, *, ids: np.ndarray | None,
               owner: faiss.Index | None) -> None:
        self.config = config
        self._index = index
        self._owner = owner  # a loaded IndexIDMap that owns (frees) ``index``: keep it alive
        self._ids = ids  # None: the id of each vector is its position
        self._next_id = int(ids.max()) + 1 if ids is not None and ids.size else index.ntotal
        self._warned_norm = False
        apply_search_params(index, nprobe=config.nprobe, ef_search=config.ef_search,
                            factory=config.factory)

    @property
    def faiss_index(self) -> faiss.Index:
        """The underlying FAISS index; its labels are positions, not ids (see :meth:`ids`)."""
        return self._index

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def is_trained(self) -> bool:
        """False only for IVF/PQ indexes before the first :meth:`add`."""
        return bool(self._index.is_trained)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __repr__(self) -> str:
        c = self.config
        return (f"Index(factory={c.factory!r}, dim={c.dim}, metric={c.metric!r}, "
                f"model_id={c.model_id!r}, ntotal={len(self)})")

    def set_search_params(self, *, nprobe: int | None = None,
                          ef_search: int | None = None) -> None:
        """Change the speed/recall knobs of a built index (saved with it by :meth:`save`).

        ``self.config`` is replaced by a validated copy; parameters the index does not use
        (``nprobe`` on HNSW, ``ef_search`` on IVF) are recorded but have no effect.
        """
        changes = {name: value for name, value in (("nprobe", nprobe), ("ef_search", ef_search))
                   if value is not None}
        config = dataclasses.replace(self.config, **changes)  # type: ignore[arg-type]  # int knobs only
        self.config = config
        apply_search_params(self._index, nprobe=config.nprobe, ef_search=config.ef_search,
                            factory=config.factory)

    def ids(self) -> np.ndarray:
        """All ids in insertion order. Shape: ``(ntotal,)`` int64 (a copy)."""
        if self._ids is None:
            return np.arange(len(self), dtype=np.int64)
        return self._ids.copy()

    # -- adding -----------------------------------------------------------------------------

    def add(self, vectors: npt.ArrayLike, ids: npt.ArrayLike | None = None) -> None:
        """Add vectors, training the index first if it needs it (IVF, PQ).

        Args:
            vectors: Shape ``(n, dim)``, any float dtype (float32 C-contiguous avoids a copy).
                With ``metric="ip"`` they should be L2-normalised; a warning is logged if not.
            ids: Shape ``(n,)`` non-negative integers, unique and not already in the index.
                Default: consecutive ids after the largest id so far (``0..n-1`` at first).

        Raises:
            XmrError: bad shape or dimension, NaN/inf, bad or duplicate ids, too few vectors
                to train an IVF index.
        """
        x = _as_float32_rows(vectors, self.config.dim, "vectors", allow_1d=False)
        n = x.shape[0]
        if n == 0:
            return
        if ids is None:
            new_ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        else:
            new_ids = self._check_new_ids(ids, n)
        if self.config.metric == "ip" and not self._warned_norm:
            self._warn_if_not_normalised(x)
        if not self._index.is_trained:
            self._train(x)
        ntotal = len(self)
        self._index.add(x)  # FAISS labels the new vectors ntotal .. ntotal + n - 1
        if self._ids is not None or not np.array_equal(new_ids, np.arange(ntotal, ntotal + n)):
            old = self._ids if self._ids is not None else np.arange(ntotal, dtype=np.int64)
            self._ids = np.concatenate([old, new_ids])
        self._next_id = max(self._next_id, int(new_ids.max()) + 1)

    def _check_new_ids(self, ids: npt.ArrayLike, n: int) -> np.ndarray:
        a = np.asarray(ids)
        if a.shape != (n,):
            raise XmrError(f"ids must have shape ({n},) to match the vectors, got shape {a.shape}")
        if a.dtype.kind not in "iu":
            raise XmrError(f"ids must be integers, got dtype {a.dtype}")
        if a.dtype == np.uint64 and a.max() > np.iinfo(np.int64).max:
            raise XmrError(f"ids must fit in int64, got {a.max()}")
        a = np.ascontiguousarray(a, dtype=np.int64)
        if a.min() < 0:
            raise XmrError(f"ids must be >= 0 (-1 marks a missing result), got {a.min()}")
        uniq, counts = np.unique(a, return_counts=True)
        if uniq.size < n:
            raise XmrError(f"ids contain duplicates, e.g. {int(uniq[counts > 1][0])}")
        if len(self):
            clash = (uniq[uniq < len(self)] if self._ids is None
                     else np.intersect1d(uniq, self._ids, assume_unique=True))
            if clash.size:
                raise XmrError(f"id {int(clash[0])} is already in the index "
                               f"({clash.size} clashing ids)")
        return a

    def _warn_if_not_normalised(self, x: np.ndarray) -> None:
        sample = x[:1024]
        norms = np.sqrt(np.einsum("ij,ij->i", sample, sample))
        worst = float(np.abs(norms - 1.0).max())
        if worst > _NORM_TOLERANCE:
            self._warned_norm = True
            logger.warning("metric 'ip' assumes L2-normalised vectors, but added vectors have "
                           "norms up to %.3g away from 1; scores will not be cosine similarities",
                           worst)

    def _train(self, x: np.ndarray) -> None:
        n, factory = x.shape[0], self.config.factory
        nlist = ivf_nlist(self._index)
        if nlist is not None and n < nlist:
            raise XmrError(
                f"index {factory!r} has {nlist} IVF lists but the first add has only {n} vectors "
                f"to train them; add at least {nlist} (ideally {39 * nlist}) vectors at once or "
                f"use a smaller nlist, e.g. {suggest_factory(factory, n)!r}"
            )
        start = time.perf_counter()
        try:
            self._index.train(x)
        except RuntimeError as e:
            raise XmrError(f"training index {factory!r} on {n} vectors failed: "
                           f"{faiss_error_reason(e)}") from None
        logger.info("trained %r on %d vectors in %.1fs", factory, n, time.perf_counter() - start)

    # -- searching --------------------------------------------------------------------------

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best vectors for each query, best first.

        ``k`` larger than ``len(self)`` is clipped to ``len(self)``. Approximate indexes (IVF
        with a small ``nprobe``, rarely HNSW) can find fewer than ``k`` results for a query:
        those slots hold id ``-1`` and score ``-inf`` (``"ip"``) or ``+inf`` (``"l2"``), always
        at the end of the row, and trailing columns that are empty for every query are dropped,
        so the returned width may be smaller than ``k``. The exact index never pads.

        Args:
            queries: Shape ``(nq, dim)`` or ``(dim,)`` (treated as ``nq = 1``); float32
                C-contiguous input is used without a copy.
            k: Results per query, >= 1.

        Returns:
            ``(scores, ids)``, both shape ``(nq, min(k, len(self)))``. ``scores`` (float32) are
            inner products (higher is better) for ``"ip"`` or squared L2 distances (lower is
            better) for ``"l2"``; ``ids`` (int64) are the ids given to :meth:`add`.

        Raises:
            XmrError: empty index, wrong dimension, NaN/inf queries, ``k < 1``.
        """
        ntotal = self._index.ntotal
        if ntotal == 0:
            raise XmrError("index is empty: add vectors first")
        q = _as_float32_rows(queries, self.config.dim, "query", allow_1d=True)
        k = min(_check_k(k), ntotal)
        scores, labels = self._index.search(q, k)
        if (labels[:, -1] < 0).any():  # O(nq); true only for approximate indexes
            return self._tidy_padding(scores, labels)
        if self._ids is None:
            return scores, labels
        return scores, self._ids.take(labels)

    def _tidy_padding(self, scores: np.ndarray,
                      labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        missing = labels < 0
        scores[missing] = -np.inf if self.config.metric == "ip" else np.inf
        if self._ids is not None:
            labels = np.where(missing, -1, self._ids.take(np.maximum(labels, 0)))
        width = int((~missing).sum(axis=1).max()) if labels.size else 0
        return scores[:, :width], labels[:, :width]

    # -- persistence ------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``index.faiss`` and ``index.json`` (config) into ``directory``, atomically.

        Both files go to temporary names first; a failure never damages a previous index saved
        there (see :mod:`xmr.index.storage`).
        """
        meta = {"format": FORMAT, "version": VERSION, "config": self.config.to_dict(),
                "ntotal": len(self)}
        start = time.perf_counter()
        write_index_files(Path(directory), self._with_id_map(), meta)
        logger.info("saved %r to %s in %.1fs", self, directory, time.perf_counter() - start)

    def _with_id_map(self) -> faiss.IndexIDMap:
        """A temporary ``IndexIDMap`` view of this index (no copy of the vectors), for saving.

        ``IndexIDMap`` only wraps empty indexes, so it is built around an empty placeholder
        and then pointed at ``self._index``; it does not own (and will not free) it.
        """
        wrapper = faiss.IndexIDMap(faiss.IndexFlat(self.config.dim, self.config.faiss_metric))
        wrapper.index = self._index
        wrapper.ntotal = self._index.ntotal
        wrapper.is_trained = self._index.is_trained
        faiss.copy_array_to_vector(self.ids(), wrapper.id_map)
        return wrapper

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, expect_dim: int | None = None,
             expect_model_id: str | None = None) -> Index:
        """Load an index saved by :meth:`save`, refusing one built for another model.

        Args:
            directory: Folder holding ``index.faiss`` and ``index.json``.
            expect_dim: Dimension of the query model; a different index dim is refused.
            expect_model_id: Id of the query model; a different recorded ``model_id`` is
                refused (an index that records none is accepted with a warning).

        Raises:
            XmrError: missing or corrupt files (named), or a model/dimension mismatch.
        """
        directory = Path(directory)
        meta = read_index_meta(directory)
        json_path = directory / CONFIG_FILE
        try:
            config = IndexConfig.from_dict(meta["config"])  # type: ignore[arg-type]  # a dict: read_index_meta checked
        except (ValueError, TypeError) as e:
            raise XmrError(f"{json_path}: invalid index config ({e})") from None
        _check_expected(directory, config, expect_dim, expect_model_id)
        index = read_index_file(directory, meta)
        _check_loaded(directory, config, index, meta.get("ntotal"))
        mapped = typing.cast(faiss.IndexIDMap, index)  # _check_loaded made sure it is one
        ids: np.ndarray | None = faiss.vector_to_array(mapped.id_map).astype(np.int64, copy=False)
        if ids is not None and np.array_equal(ids, np.arange(ids.size)):
            ids = None
        obj = cls.__new__(cls)
        obj._setup(config, faiss.downcast_index(mapped.index), ids=ids, owner=index)
        logger.info("loaded %r from %s", obj, directory)
        return obj


def _check_expected(directory: Path, config: IndexConfig, expect_dim: int | None,
                    expect_model_id: str | None) -> None:
    """Refuse an index built for another model; one line naming both sides."""
    dim_bad = expect_dim is not None and expect_dim != config.dim
    model_bad = (expect_model_id is not None and config.model_id is not None
                 and expect_model_id != config.model_id)
    if dim_bad or model_bad:
        if expect_model_id is not None:
            dim_part = f" (dim {expect_dim})" if expect_dim is not None else ""
            query = f"is {expect_model_id!r}{dim_part}"
        else:
            query = f"has dim {expect_dim}"
        built = _describe_model(config.model_id, config.dim)
        raise XmrError(f"index at {directory} was built with {built} but the query model {query}")
    if expect_model_id is not None and config.model_id is None:
        logger.warning("index at %s records no model id; cannot check it matches %r",
                       directory, expect_model_id)


def _check_loaded(directory: Path, config: IndexConfig, index: faiss.Index,
                  ntotal: object) -> None:
    """The FAISS file must agree with its config (guards against hand-edited JSON)."""
    where = directory / INDEX_FILE
    if not isinstance(index, faiss.IndexIDMap):
        raise XmrError(f"{where}: not saved by xmr (expected an IndexIDMap, got "
                       f"{type(index).__name__})")
    if index.d != config.dim:
        raise XmrError(f"{where} has dim {index.d} but {CONFIG_FILE} says {config.dim}")
    if index.metric_type != config.faiss_metric:
        raise XmrError(f"{where} uses FAISS metric {index.metric_type} but {CONFIG_FILE} says "
                       f"{config.metric!r}")
    if ntotal != index.ntotal:
        raise XmrError(f"{where} holds {index.ntotal} vectors but {CONFIG_FILE} says {ntotal}")


def load_index(directory: str | os.PathLike[str], *, expect_dim: int | None = None,
               expect_model_id: str | None = None) -> Index:
    """Function form of :meth:`Index.load`."""
    return Index.load(directory, expect_dim=expect_dim, expect_model_id=expect_model_id)
