"""A FAISS index with ids, checked inputs, one-line errors and a safe on-disk format.

Numpy in, numpy out::

    index = Index(IndexConfig(dim=256, model_id="clip-b32"))
    index.add(image_vectors)                         # ids 0..n-1
    scores, ids = index.search(text_vectors, k=10)   # (nq, 10) float32, (nq, 10) int64
    index.save("runs/coco/index")
    index = load_index("runs/coco/index", expect_model_id="clip-b32", expect_dim=256)

Its parts: the checked inputs (:mod:`xmr.index.inputs`), the slot -> id map
(:mod:`xmr.index.slots`), the files (:mod:`xmr.index.storage`, read back by
:mod:`xmr.index.loading`), the exact vectors of a refined index (:mod:`xmr.index.vector_store`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

from xmr.errors import Param, XmrError
from xmr.index.config import IndexConfig
from xmr.index.faiss_utils import (
    apply_search_params,
    faiss_error_reason,
    ivf_nlist,
    suggest_factory,
)
from xmr.index.inputs import as_float32_rows, check_k
from xmr.index.loading import read_saved_index
from xmr.index.slots import check_new_ids, live_ids, slots_of
from xmr.index.storage import FORMAT, STORE_FILES, VERSION, write_index_files
from xmr.index.vector_store import StoreReads, VectorStore

logger = logging.getLogger(__name__)

_DIRECT_MAP = getattr(faiss, "DirectMap")  # faiss's type stubs leave it out
_NORM_TOLERANCE = 1e-2


class Index:
    """Vectors with int64 ids, searchable by inner product or L2, backed by any FAISS index.

    FAISS labels vectors with *slots* 0, 1, 2... in order of addition; xmr maps slots to the
    ids given to :meth:`add` with a numpy array, and keeps no array at all while the ids are
    exactly the slots (the default). This keeps ``search`` as fast as the raw FAISS index:
    an ``IndexIDMap`` wrapper would add an OpenMP region per call, which costs milliseconds
    on a busy machine. On disk the ids go to ``ids.npy`` beside ``index.faiss`` (see
    :mod:`xmr.index.storage`). IVF/PQ indexes are trained on the first :meth:`add`.

    :meth:`remove` keeps every other id: an IVF index drops the entries from its lists (the
    slot stays, empty), a flat index compacts, any other (HNSW) is rebuilt from its own
    vectors. An index built with ``config.refine`` keeps its exact vectors in a
    :class:`~xmr.index.vector_store.VectorStore` and re-scores each shortlist from it.

    Args:
        config: What to build; see :class:`IndexConfig`.
    """

    def __init__(self, config: IndexConfig) -> None:
        index = faiss.index_factory(config.dim, config.factory, config.faiss_metric)
        store = VectorStore(config.dim, config.store_dtype) if config.refine else None
        self._setup(config, index, ids=None, owner=None, store=store)

    def _setup(self, config: IndexConfig, index: faiss.Index, *, ids: np.ndarray | None,
               owner: faiss.Index | None, store: VectorStore | None = None, next_id: int | None = None,
               read_only: Path | None = None) -> None:
        self.config = config
        self._index = index
        self._owner = owner  # the loaded object that owns (frees) ``index``: keep it alive
        self._ids = ids  # slot -> id (-1: removed); None: the id of each vector is its slot
        self._is_ivf = ivf_nlist(index) is not None
        self._store = store
        self._read_only = read_only  # the folder of a memory-mapped index (adding and removing refuse), or None
        if next_id is None:
            next_id = int(ids.max()) + 1 if ids is not None and ids.size else index.ntotal
        self._next_id = next_id
        self._warned_norm = False
        self._reconstruct_lock = threading.Lock()
        apply_search_params(index, nprobe=config.nprobe, ef_search=config.ef_search,
                            factory=config.factory)

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

    @property
    def n_slots(self) -> int:
        """Slots used so far (vectors added, removed ones included for an IVF index)."""
        return int(self._ids.shape[0]) if self._ids is not None else int(self._index.ntotal)

    @property
    def store(self) -> VectorStore | None:
        """The exact vectors by slot (an index built with ``refine``), else None."""
        return self._store

    def set_search_params(self, *, nprobe: int | None = None, ef_search: int | None = None,
                          refine: int | None = None) -> None:
        """Change the speed/recall knobs of a built index (saved with it by :meth:`save`).

        ``self.config`` is replaced by a validated copy; parameters the index does not use
        (``nprobe`` on HNSW, ``ef_search`` on IVF) are recorded but have no effect. ``refine``
        needs the index's vector store (built with ``refine > 0``); 0 turns re-scoring off.
        """
        if refine and self._store is None:
            raise XmrError("this index keeps no exact vectors to refine with; build it with {fix} > 0",
                           fix=Param("refine"))
        changes = {name: value for name, value in (("nprobe", nprobe), ("ef_search", ef_search))
                   if value is not None}
        config = dataclasses.replace(self.config, **changes)  # type: ignore[arg-type]  # int knobs only
        if refine is not None:  # kept apart: refine=0 on an index with a store keeps the store
            object.__setattr__(config, "refine", int(refine))
        self.config = config
        apply_search_params(self._index, nprobe=config.nprobe, ef_search=config.ef_search,
                            factory=config.factory)

    def ids(self) -> np.ndarray:
        """All ids in the order they were added (removed ones left out). Shape: ``(ntotal,)`` int64 (a copy)."""
        return live_ids(self._ids, len(self))

    def reconstruct(self, ids: npt.ArrayLike) -> np.ndarray:
        """The stored vectors of ``ids`` (exact for flat / HNSW and from the store with refine;
        decoded, hence approximate, for other compressed indexes). Shape: ``(n, dim)`` float32.

        The one way to read vectors back: the FAISS object is private because its positions are
        slots, which after :meth:`remove` are no longer the ids."""
        slots = self._slots_of(ids)
        if self._store is not None:
            return self._store.take(slots)
        if not self._is_ivf:
            return self._index.reconstruct_batch(slots)
        ivf = faiss.extract_index_ivf(self._index)
        # slot -> list entry, as a hash table (after a removal the slots have holes, which an array map
        # refuses); dropped again: remove_ids refuses an index that has one. The map is the index's own
        # state, hence the lock: a service reads vectors from several threads.
        with self._reconstruct_lock:
            ivf.set_direct_map_type(_DIRECT_MAP.Hashtable)
            try:
                return self._index.reconstruct_batch(slots)
            finally:
                ivf.set_direct_map_type(_DIRECT_MAP.NoMap)

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
        x = as_float32_rows(vectors, self.config.dim, "vectors", allow_1d=False)
        n = x.shape[0]
        if n == 0:
            return
        new_ids = self.new_ids(n, ids)
        if self.config.metric == "ip" and not self._warned_norm:
            self._warn_if_not_normalised(x)
        self._check_writable("add to")
        if not self._index.is_trained:
            self._train(x)
        self.add_trained(x, new_ids)

    def add_trained(self, x: np.ndarray, new_ids: np.ndarray) -> None:
        """:meth:`add` for checked float32 rows and new ids, to a trained index (streaming builds)."""
        n, first = x.shape[0], self.n_slots
        slots = np.arange(first, first + n, dtype=np.int64)
        if self._is_ivf:  # explicit labels: after a removal, ntotal is no longer the next slot
            self._index.add_with_ids(x, slots)
        else:
            self._index.add(x)  # FAISS labels the new vectors ntotal .. ntotal + n - 1 = the slots
        if self._store is not None:
            self._store.append(x)
        if self._ids is not None or not np.array_equal(new_ids, slots):
            old = self._ids if self._ids is not None else np.arange(first, dtype=np.int64)
            self._ids = np.concatenate([old, new_ids])
        self._next_id = max(self._next_id, int(new_ids.max()) + 1)

    def new_ids(self, n: int, ids: npt.ArrayLike | None = None) -> np.ndarray:
        """The ids :meth:`add` gives ``n`` new vectors: ``ids`` checked, or the next free ones."""
        if ids is None:
            return np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        return check_new_ids(ids, n, self._ids, len(self))

    # -- removing ---------------------------------------------------------------------------

    def _slots_of(self, ids: npt.ArrayLike) -> np.ndarray:
        """The slot of each id; an id not in the index -> XmrError naming it."""
        return slots_of(self._ids, len(self), ids)

    def _check_writable(self, what: str) -> None:
        if self._read_only is not None:
            raise XmrError("cannot {what} the memory-mapped index at {index}; load it with {fix}",
                           what=what, index=str(self._read_only), fix=Param("mmap", False))

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove the vectors of ``ids``; every other id keeps its vector. Returns how many.

        Raises:
            XmrError: an id that is not in the index (nothing is removed then), duplicates, or a
                memory-mapped (read-only) index.
        """
        a = np.asarray(ids)
        if np.unique(a).size != a.size:
            raise XmrError("ids to remove contain duplicates")
        slots = self._slots_of(a)
        self._check_writable("remove from")
        if slots.size == 0:
            return 0
        ids_now = self._ids if self._ids is not None else np.arange(self.n_slots, dtype=np.int64)
        inner = faiss.downcast_index(self._index)
        if self._is_ivf:  # entries leave their lists; the slots stay, empty
            self._index.remove_ids(faiss.IDSelectorBatch(slots))
            self._ids = ids_now.copy()
            self._ids[slots] = -1
        elif isinstance(inner, faiss.IndexFlatCodes):  # compacts, keeping order
            self._index.remove_ids(faiss.IDSelectorBatch(slots))
            self._ids = np.delete(ids_now, slots)
        else:  # HNSW cannot remove: rebuild the graph from its own vectors
            keep = np.setdiff1d(np.arange(self.n_slots), slots)
            try:
                vectors = self._index.reconstruct_batch(keep) if keep.size else None
            except RuntimeError as e:
                raise XmrError(f"cannot remove from a {self.config.factory!r} index "
                               f"({faiss_error_reason(e)}); rebuild it without those items") from None
            fresh = faiss.index_factory(self.config.dim, self.config.factory, self.config.faiss_metric)
            if vectors is not None:
                fresh.add(vectors)
            self._index, self._owner = fresh, None
            apply_search_params(fresh, nprobe=self.config.nprobe, ef_search=self.config.ef_search,
                                factory=self.config.factory)
            self._ids = ids_now[keep]
        if self._ids is not None and len(self) == self._ids.shape[0] and np.array_equal(
                self._ids, np.arange(self._ids.shape[0])):
            self._ids = None
        return int(slots.size)

    def _warn_if_not_normalised(self, x: np.ndarray) -> None:
        sample = x[:1024]
        norms = np.sqrt(np.einsum("ij,ij->i", sample, sample))
        worst = float(np.abs(norms - 1.0).max())
        if worst > _NORM_TOLERANCE:
            self._warned_norm = True
            logger.warning("metric 'ip' assumes L2-normalised vectors, but added vectors have "
                           "norms up to %.3g away from 1; scores will not be cosine similarities",
                           worst)

    def train(self, vectors: npt.ArrayLike) -> None:
        """Train an IVF / PQ index on ``vectors`` (shape ``(n, dim)``) without adding them."""
        self._train(as_float32_rows(vectors, self.config.dim, "vectors", allow_1d=False))

    def _train(self, x: np.ndarray) -> None:
        n, factory = x.shape[0], self.config.factory
        nlist = ivf_nlist(self._index)
        if nlist is not None and n < nlist:
            raise XmrError(
                f"index {factory!r} has {nlist} IVF lists but the first add has only {n} vectors "
                f"to train them; add at least {nlist} (ideally {39 * nlist}) vectors at once or "
                "use a smaller nlist, e.g. {fix}", fix=Param("factory", suggest_factory(factory, n))
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
        q = as_float32_rows(queries, self.config.dim, "query", allow_1d=True)
        k = min(check_k(k), ntotal)
        if self.config.refine and self._store is not None:
            _, shortlist = self._index.search(q, min(max(k, self.config.refine), ntotal))
            scores, labels = self._store.refine(q, shortlist, k, metric=self.config.metric)
        else:
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
        """Write ``index.faiss``, ``ids.npy``, the vector store and ``index.json`` into ``directory``,
        atomically: every file goes to a temporary name first, ``index.json`` is replaced last; a
        failure never damages a previous index saved there (see :mod:`xmr.index.storage`).
        """
        meta = {"format": FORMAT, "version": VERSION, "config": self.config.to_dict(),
                "ntotal": len(self), "n_slots": self.n_slots, "next_id": self._next_id}
        store = None
        if self._store is not None:
            store = (STORE_FILES[self._store.dtype], self._store.write)
        start = time.perf_counter()
        write_index_files(Path(directory), self._index, meta, ids=self._ids, store=store)
        if self._store is not None:  # the saved file is the store now (a build's spill file may go)
            self._store.rebind(Path(directory) / STORE_FILES[self._store.dtype])
        logger.info("saved %r to %s in %.1fs", self, directory, time.perf_counter() - start)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, expect_dim: int | None = None,
             expect_model_id: str | None = None, mmap: bool = False,
             store_reads: StoreReads = "pread") -> Index:
        """Load an index saved by :meth:`save`, refusing one built for another model.

        Args:
            directory: Folder holding ``index.faiss`` and ``index.json``.
            expect_dim: Dimension of the query model; a different index dim is refused.
            expect_model_id: Id of the query model; a different recorded ``model_id`` is
                refused (an index that records none is accepted with a warning).
            mmap: map the codes, lists and ids from the files instead of reading them into RAM:
                a search process's resident memory grows only with the pages its queries touch.
                Such an index is read-only (:meth:`add` / :meth:`remove` refuse). The vector
                store of a refined index always stays on disk (see ``store_reads``).
            store_reads: how the refine store's rows are read (:data:`~xmr.index.vector_store.STORE_READS`).

        Raises:
            XmrError: missing or corrupt files (named), or a model/dimension mismatch.
        """
        saved = read_saved_index(Path(directory), expect_dim=expect_dim, expect_model_id=expect_model_id,
                                 mmap=mmap, store_reads=store_reads)
        obj = cls.__new__(cls)
        obj._setup(saved.config, saved.index, ids=saved.ids, owner=saved.owner, store=saved.store,
                   next_id=saved.next_id, read_only=saved.read_only)
        logger.info("loaded %r from %s", obj, directory)
        return obj


def load_index(directory: str | os.PathLike[str], *, expect_dim: int | None = None,
               expect_model_id: str | None = None, mmap: bool = False, store_reads: StoreReads = "pread") -> Index:
    """Function form of :meth:`Index.load`."""
    return Index.load(directory, expect_dim=expect_dim, expect_model_id=expect_model_id, mmap=mmap,
                      store_reads=store_reads)
