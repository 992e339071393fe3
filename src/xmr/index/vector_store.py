"""The exact vectors of a compressed index, on disk, read row by row (``pread``) or through a memory map.

A quantised index (IVF-PQ) finds a shortlist; the rows of that shortlist are read back from
this store and scored exactly, so the final top-k (and its scores) are those of exact search
over the shortlist (``IndexConfig.refine``; FAISS's ``IndexRefine`` does the same in RAM).

The file is raw rows (``float16`` by default: half the bytes, scores within ~1e-3 of float32)
with no header: its dtype, dim and row count live in ``index.json``, so a row appended by an
interrupted ``add`` beyond the recorded count is simply not seen, and the next writer cuts it off.
Row ``i`` holds the vector of slot ``i`` (the label FAISS returns).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Literal

import numpy as np

from xmr.errors import XmrError

StoreDtype = Literal["float16", "float32"]
STORE_DTYPES: tuple[StoreDtype, ...] = ("float16", "float32")
StoreReads = Literal["pread", "map"]
#: ``"pread"``: one read per row (~2 us from the page cache; the process's resident memory grows
#: only by the rows asked for); ``"map"``: fancy indexing of the memory map (~4x faster, but the
#: kernel maps ~16 pages around every row touched, so the store's pages pile up in the process's
#: file-backed RSS -- reclaimable page cache, yet counted)
STORE_READS: tuple[StoreReads, ...] = ("pread", "map")


class VectorStore:
    """Rows of ``dim`` values, in RAM while an index is built, memory-mapped once saved.

    Args:
        dim: row length.
        dtype: ``"float16"`` or ``"float32"``.
    """

    def __init__(self, dim: int, dtype: StoreDtype = "float16") -> None:
        if dtype not in STORE_DTYPES:
            raise XmrError(f"vector store dtype must be one of {STORE_DTYPES}, got {dtype!r}")
        self.dim = dim
        self.dtype: StoreDtype = dtype
        self._chunks: list[np.ndarray] = []  # rows added since the last flush / load
        self._base: np.ndarray = np.zeros((0, dim), dtype=dtype)  # saved rows (a memmap once loaded)
        self._path: Path | None = None  # the file ``_base`` maps
        self._spill: IO[bytes] | None = None  # open while rows go straight to ``_path``
        self._spilled = 0  # rows written to the spill file
        self.reads: StoreReads = "pread"  # how a saved file's rows are read, see :data:`STORE_READS`

    def __len__(self) -> int:
        if self._spill is not None:
            return self._spilled
        return int(self._base.shape[0] + sum(c.shape[0] for c in self._chunks))

    @property
    def nbytes(self) -> int:
        return len(self) * self.dim * np.dtype(self.dtype).itemsize

    def append(self, rows: np.ndarray) -> None:
        """Add rows at the end. Shape: ``(n, dim)``, converted to the store's dtype.

        A spilled store (:meth:`spill`) writes them to its file; otherwise they stay in RAM
        until the store is saved."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if self._spill is None:
            self._chunks.append(rows)
            return
        self._spill.write(rows.tobytes())
        self._spilled += rows.shape[0]

    def spill(self, path: Path) -> None:
        """From now on keep the rows in the new file ``path`` instead of RAM (a build of millions of
        vectors); :meth:`write` then hard-links it, and :meth:`close_spill` ends it."""
        self._spill = open(path, "wb")  # noqa: SIM115  # open for the whole build, closed by close_spill
        self._spill.write(np.asarray(self._base).tobytes())
        for c in self._chunks:
            self._spill.write(c.tobytes())
        self._spilled, self._chunks, self._path = len(self), [], path
        self._base = np.zeros((0, self.dim), dtype=self.dtype)

    def _sync_spill(self) -> None:
        if self._spill is not None and self._base.shape[0] != self._spilled:
            self._spill.flush()
            os.fsync(self._spill.fileno())
            assert self._path is not None
            self._base = np.memmap(self._path, dtype=self.dtype, mode="r", shape=(self._spilled, self.dim))

    def close_spill(self) -> None:
        """Stop spilling: the file is flushed and mapped read-only (further rows stay in RAM)."""
        if self._spill is not None:
            self._sync_spill()
            self._spill.close()
            self._spill = None

    def _tail(self) -> np.ndarray:
        """The rows added since the store was saved or loaded, as one array (the saved ones stay mapped)."""
        if len(self._chunks) != 1:
            self._chunks = [np.concatenate(self._chunks) if self._chunks else np.zeros((0, self.dim), self.dtype)]
        return self._chunks[0]

    def take(self, slots: np.ndarray) -> np.ndarray:
        """Rows ``slots`` as float32. Shape: ``slots.shape + (dim,)``."""
        self._sync_spill()
        flat = slots.reshape(-1)
        order = np.argsort(flat, kind="stable")  # read the map in file order: fewer page faults
        ordered = flat[order]
        out = np.empty((flat.size, self.dim), dtype=np.float32)
        n_base = self._base.shape[0]
        split = int(np.searchsorted(ordered, n_base))
        if self._path is not None and self._spill is None and split and self.reads == "pread":
            out[order[:split]] = self._read_rows(ordered[:split])
        else:
            out[order[:split]] = self._base[ordered[:split]]
        if split < ordered.size:
            out[order[split:]] = self._tail()[ordered[split:] - n_base]
        return out.reshape(*slots.shape, self.dim)

    def _read_rows(self, ordered: np.ndarray) -> np.ndarray:
        """Rows of the saved file at sorted slots, by ``pread``: a memory map would fault in ~16
        pages around every row read at random (the kernel's fault-around), so a few thousand
        queries would map the whole store into the process; reads keep its resident memory to the
        rows asked for, at ~2 us a row from the page cache."""
        assert self._path is not None
        rb = self._row_bytes
        uniq, back = np.unique(ordered, return_inverse=True)
        buf = bytearray(rb * uniq.size)
        view = memoryview(buf)
        fd = os.open(self._path, os.O_RDONLY)
        try:
            for k, slot in enumerate(uniq.tolist()):
                if os.preadv(fd, [view[k * rb:(k + 1) * rb]], slot * rb) != rb:
                    raise XmrError(f"{self._path}: row {slot} is past the end of the vector store; the index "
                                   "folder is damaged")
        finally:
            os.close(fd)
        return np.frombuffer(buf, dtype=self.dtype).reshape(uniq.size, self.dim)[back]

    def write(self, path: Path) -> None:
        """Write every row to ``path`` (a new file). When the store maps a saved file, that file is
        hard-linked to ``path`` and only the rows added since are appended: a saved 5 GB store is
        not copied again for an ``add`` (the previous ``index.json`` records fewer rows and never
        reads the appended ones)."""
        self._sync_spill()
        if self._path is not None and self._path.exists():
            _link_or_copy(self._path, path, rows=self._base.shape[0], row_bytes=self._row_bytes)
            mode = "ab"
        else:
            mode = "wb"
        with open(path, mode) as fh:
            if mode == "wb":
                fh.write(np.asarray(self._base).tobytes())
            for c in self._chunks:
                fh.write(c.tobytes())
            fh.flush()
            os.fsync(fh.fileno())

    @property
    def _row_bytes(self) -> int:
        return self.dim * np.dtype(self.dtype).itemsize

    def rebind(self, path: Path) -> None:
        """Map ``path`` (just written by :meth:`write`, so it holds exactly these rows) from now on:
        the rows in RAM are dropped, and a spill file the build wrote may be removed."""
        if self._spill is not None:
            raise XmrError("close the spill before saving the store")
        rows = len(self)
        self._base = (np.memmap(path, dtype=self.dtype, mode="r", shape=(rows, self.dim)) if rows
                      else np.zeros((0, self.dim), dtype=self.dtype))
        self._chunks, self._path = [], path

    @classmethod
    def open(cls, path: Path, *, dim: int, dtype: StoreDtype, rows: int, reads: StoreReads = "pread") -> VectorStore:
        """Map the first ``rows`` rows of ``path`` read-only (trailing bytes are ignored); ``reads``:
        see :data:`STORE_READS`."""
        if reads not in STORE_READS:
            raise XmrError(f"store reads must be one of {STORE_READS}, got {reads!r}")
        store = cls(dim, dtype)
        store.reads = reads
        need = rows * store._row_bytes
        size = path.stat().st_size if path.is_file() else -1
        if size < need:
            raise XmrError(f"{path}: vector store holds {max(size, 0)} bytes, {need} expected "
                           f"({rows} rows of {dim} {dtype}); the index folder is damaged")
        store._base = (np.memmap(path, dtype=dtype, mode="r", shape=(rows, dim)) if rows
                       else np.zeros((0, dim), dtype=dtype))
        store._path = path
        return store

    def refine(self, queries: np.ndarray, slots: np.ndarray, k: int, *,
               metric: Literal["ip", "l2"]) -> tuple[np.ndarray, np.ndarray]:
        """Score each shortlist exactly and keep its best ``k``.

        Args:
            queries: Shape ``(nq, dim)`` float32.
            slots: the compressed index's shortlist, ``-1`` for an empty place. Shape ``(nq, K)``.
            k: results kept per query (``<= K``).
            metric: ``"ip"`` (higher first) or ``"l2"`` (squared distance, lower first).

        Returns:
            ``(scores, slots)`` of shape ``(nq, k)``, best first; empty places keep ``-1`` and
            ``-inf`` (ip) / ``+inf`` (l2) at the end of their row.
        """
        missing = slots < 0
        rows = self.take(np.where(missing, 0, slots))  # (nq, K, dim)
        if metric == "ip":
            scores = np.einsum("qkd,qd->qk", rows, queries)
            scores[missing] = -np.inf
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        else:
            diff = rows - queries[:, None, :]
            scores = np.einsum("qkd,qkd->qk", diff, diff)
            scores[missing] = np.inf
            order = np.argsort(scores, axis=1, kind="stable")[:, :k]
        return (np.take_along_axis(scores, order, axis=1).astype(np.float32),
                np.take_along_axis(slots, order, axis=1))


def _link_or_copy(src: Path, dst: Path, *, rows: int, row_bytes: int) -> None:
    """``dst`` holding exactly the first ``rows`` rows of ``src``: a hard link when the file is
    that long already (extra bytes an interrupted writer left are cut first), else a copy."""
    want = rows * row_bytes
    if src.stat().st_size > want:
        os.truncate(src, want)  # bytes past the recorded rows belong to no saved index
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        with open(src, "rb") as fi, open(dst, "wb") as fo:
            while block := fi.read(1 << 24):
                fo.write(block)
            fo.flush()
            os.fsync(fo.fileno())
