"""Reading an index folder saved by :meth:`~xmr.index.faiss_index.Index.save`, checked against its
config and against the query model; every mismatch one line naming the file (see
:mod:`xmr.index.storage` for the files).

Two layouts load: version 1 (the ids inside an ``IndexIDMap``) and the current one (slots as
FAISS labels, the ids in ``ids.npy``, the slot count and next id in ``index.json``).
"""

from __future__ import annotations

import logging
import typing
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from xmr.errors import XmrError
from xmr.index.config import IndexConfig
from xmr.index.storage import (
    CONFIG_FILE,
    INDEX_FILE,
    read_ids,
    read_index_file,
    read_index_meta,
    store_path,
)
from xmr.index.vector_store import StoreReads, VectorStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedIndex:
    """What an :class:`~xmr.index.faiss_index.Index` is set up from when it is loaded.

    Attributes:
        config: the saved :class:`IndexConfig`.
        index: the searchable FAISS index, labelled by slot.
        owner: the object read from the file, which owns ``index``'s memory (keep it alive).
        ids: slot -> id (``-1``: removed), or None while every id is its slot.
        store: the exact vectors of a refined index, else None.
        next_id: the id the next added vector gets by default (None: after the largest id).
        read_only: the folder of a memory-mapped index (adding and removing refuse it), else None.
    """

    config: IndexConfig
    index: faiss.Index
    owner: faiss.Index
    ids: np.ndarray | None
    store: VectorStore | None = None
    next_id: int | None = None
    read_only: Path | None = None


def read_saved_index(directory: Path, *, expect_dim: int | None = None, expect_model_id: str | None = None,
                     mmap: bool = False, store_reads: StoreReads = "pread") -> SavedIndex:
    """Read the index in ``directory``; the arguments are :meth:`~xmr.index.faiss_index.Index.load`'s.

    Raises:
        XmrError: missing or corrupt files (named), or a model/dimension mismatch.
    """
    meta = read_index_meta(directory)
    json_path = directory / CONFIG_FILE
    try:
        config = IndexConfig.from_dict(meta["config"])  # type: ignore[arg-type]  # a dict: read_index_meta checked
    except (ValueError, TypeError) as e:
        raise XmrError(f"{json_path}: invalid index config ({e})") from None
    _check_expected(directory, config, expect_dim, expect_model_id)
    index = read_index_file(directory, meta, mmap=mmap)
    _check_loaded(directory, config, index, meta)
    read_only = directory if mmap else None
    if meta["version"] == 1:
        mapped = typing.cast(faiss.IndexIDMap, index)  # _check_loaded made sure it is one
        ids: np.ndarray | None = faiss.vector_to_array(mapped.id_map).astype(np.int64, copy=False)
        if ids is not None and np.array_equal(ids, np.arange(ids.size)):
            ids = None
        return SavedIndex(config, faiss.downcast_index(mapped.index), index, ids, read_only=read_only)
    ids = read_ids(directory, meta, mmap=mmap)
    n_slots = typing.cast(int, meta["n_slots"])  # _check_loaded made sure it is an int
    if ids is not None and ids.shape[0] != n_slots:
        raise XmrError(f"{directory / 'ids.npy'} holds {ids.shape[0]} ids but {CONFIG_FILE} says {n_slots}")
    path = store_path(directory, meta)
    store = (VectorStore.open(path, dim=config.dim, dtype=config.store_dtype, rows=n_slots, reads=store_reads)
             if path is not None else None)
    if config.refine and store is None:
        raise XmrError(f"{json_path}: refine is set but the index has no vector store; rebuild it")
    next_id = meta.get("next_id")
    return SavedIndex(config, faiss.downcast_index(index), index, ids, store=store,
                      next_id=next_id if isinstance(next_id, int) else None, read_only=read_only)


def _describe_model(model_id: str | None, dim: int) -> str:
    name = f"model {model_id!r}" if model_id is not None else "an unnamed model"
    return f"{name} (dim {dim})"


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
                  meta: dict[str, object]) -> None:
    """The FAISS file must agree with its config (guards against hand-edited JSON)."""
    where = directory / INDEX_FILE
    if meta["version"] == 1 and not isinstance(index, faiss.IndexIDMap):
        raise XmrError(f"{where}: not saved by xmr (expected an IndexIDMap, got "
                       f"{type(index).__name__})")
    if index.d != config.dim:
        raise XmrError(f"{where} has dim {index.d} but {CONFIG_FILE} says {config.dim}")
    if index.metric_type != config.faiss_metric:
        raise XmrError(f"{where} uses FAISS metric {index.metric_type} but {CONFIG_FILE} says "
                       f"{config.metric!r}")
    if meta.get("ntotal") != index.ntotal:
        raise XmrError(f"{where} holds {index.ntotal} vectors but {CONFIG_FILE} says {meta.get('ntotal')}")
    if meta["version"] != 1 and not isinstance(meta.get("n_slots"), int):
        raise XmrError(f"{directory / CONFIG_FILE}: no slot count ('n_slots'); rebuild the index")
