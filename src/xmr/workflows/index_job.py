"""What ``xmr index`` is asked to build: :class:`IndexJob`, the one config of
:func:`xmr.workflows.index.index_run` (and, from feature shards, of
:func:`xmr.workflows.index_shards.index_shards`), holding every default and checking the options
against each other once, when it is made."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from xmr.errors import Param, XmrError
from xmr.index.budget import parse_bytes
from xmr.modality import Target, check_target
from xmr.rerank.registry import RERANKERS, Reranker, create_reranker

#: ``factory=AUTO``: the best index within the memory budget, chosen per side
AUTO = "auto"
#: the exact index, built when no factory and no memory budget is given
FLAT = "Flat"

Edits = Literal["refuse", "keep", "drop"]
EDITS: tuple[Edits, ...] = typing.get_args(Edits)


@dataclass(frozen=True)
class CrossModalCheck:
    """The build-time check of a compressed image index (clip-retrieval#76: a quantised image index
    can ruin text->image recall while image->image looks fine).

    Args:
        min_recall: warn below this text->image recall@k of the built index against exact search.
        k: the recall's cut-off.
        queries: at most this many of the gallery's own texts are the queries (a seeded draw).
        seed: seeds the draw.
    """

    min_recall: float = 0.9
    k: int = 10
    queries: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class IndexJob:
    """One index build of a run's gallery: where the gallery comes from, what index, what beside it.

    Args:
        manifest: the gallery manifest (default: the run's own).
        images: instead of a manifest, a folder of images (:func:`xmr.data.folder.scan_folder`: ids
            are relative paths, texts from optional sidecars); its unreadable files are left out,
            counted and listed in ``skipped.jsonl`` (``skip_bad`` is implied).
        recursive: with ``images``, also its sub-folders.
        shards: instead, a folder of feature shards (:mod:`xmr.workflows.shards`), indexed one
            shard at a time as encoded (no manifest, images, split, texts per item, re-ranking
            or kept edits then).
        split: index only this split (default: every item).
        factory: a FAISS index_factory string; ``"Flat"`` is exact search; ``"auto"``: the best
            index within ``memory_budget``, chosen per side for its count
            (:func:`xmr.workflows.index.resolve_factory`). None: ``"auto"`` when a
            ``memory_budget`` is given, else ``"Flat"`` (:attr:`index_factory`).
        memory_budget: with ``factory="auto"``: bytes or a size such as ``"2GB"`` (default: the
            memory available now).
        search_params: the index's query-time settings, ``ef_search`` (HNSW beam width),
            ``nprobe`` (IVF lists visited) and ``refine`` (shortlist re-scored exactly from a
            memory-mapped store of the vectors; IVF indexes); absent:
            :class:`~xmr.index.config.IndexConfig`'s defaults. Saved with the index, so every
            search of it uses them.
        texts_per_item: index only each item's first texts (e.g. 1: the caption, not keywords).
        out_dir: where to write (default ``<run_dir>/index``).
        rerank: re-ranking methods to build structures for, by name (default parameters) or as
            unfitted re-rankers (:func:`xmr.rerank.registry.create_reranker`); they are fit on the
            gallery's embeddings and the encoders' own features, no re-encoding later.
        rerank_targets: which side each method re-orders: ``"images"`` (text and image queries
            over the images) and/or ``"texts"``.
        tune: choose each re-ranker's parameters on this split (``"val"``) of the run's dataset, or of
            ``manifest`` when given (:mod:`xmr.workflows.tune`), before building its structures; the choice and
            every score go to ``rerank/<name>/<target>/tuning.json``. The test split is refused.
        tune_fixed: parameters the user set: kept, not tuned.
        edits: what becomes of the items added to or removed from the index at ``out_dir`` since
            it was built (:mod:`xmr.workflows.index_edit`): ``"refuse"`` to replace such an index;
            ``"keep"``: index the items it holds now (its source, split and texts per item, the
            edit history kept; no ``manifest``, ``images`` or ``split`` then); ``"drop"``:
            rebuild from the source anyway.
        skip_bad: index around unreadable images (listed in ``skipped.jsonl``) instead of refusing.
        check: the text->image recall check of a non-exact image index: measured at build time,
            recorded in ``index_run.json``, warned about below its threshold.
        seed: seeds the training sample of an index built from ``shards``.
        cache_dir: the feature cache root (default: ``$XMR_CACHE_DIR`` or ``~/.cache/xmr``).
        command: the command line recorded in ``index_run.json``.
        show_progress: progress bars (None: when the output is a terminal).

    Raises:
        XmrError: options that contradict each other (both ``manifest`` and ``images``, ``tune``
            without ``rerank``, a ``memory_budget`` with a factory other than ``"auto"``, ``"keep"``
            edits with a new source, ``shards`` with a gallery selection ...), an unknown re-ranking
            method or target, a bad memory budget.
    """

    manifest: str | None = None
    images: str | Path | None = None
    recursive: bool = False
    shards: str | Path | None = None
    split: str | None = None
    factory: str | None = None
    memory_budget: str | int | None = None
    search_params: Mapping[str, int] = field(default_factory=dict)
    texts_per_item: int | None = None
    out_dir: str | Path | None = None
    rerank: tuple[str | Reranker, ...] = ()
    rerank_targets: tuple[Target, ...] = ("images",)
    tune: str | None = None
    tune_fixed: tuple[str, ...] = ()
    edits: Edits = "refuse"
    skip_bad: bool = False
    check: CrossModalCheck = field(default_factory=CrossModalCheck)
    seed: int = 0
    cache_dir: str | Path | None = None
    command: str | None = None
    show_progress: bool | None = None

    def __post_init__(self) -> None:
        for name in ("rerank", "rerank_targets", "tune_fixed"):  # lists given are kept as tuples
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "search_params", dict(self.search_params))
        if self.images is not None and self.manifest is not None:
            raise XmrError("give a gallery {manifest} or an {images} folder, not both",
                           manifest=Param("manifest"), images=Param("images"))
        for t in self.rerank_targets:
            check_target(t, "re-ranking target")
        for r in self.rerank:
            if isinstance(r, str):
                RERANKERS.get(r)
        if self.texts_per_item is not None and self.texts_per_item < 1:
            raise XmrError("{param} must be >= 1 (or None for all)", param=Param("texts_per_item", self.texts_per_item))
        if self.tune is not None and not self.rerank:
            raise XmrError("{tune} chooses re-ranking parameters: give the method with {rerank}",
                           tune=Param("tune"), rerank=Param("rerank", "NAME"))
        if self.edits not in EDITS:
            raise XmrError("{param} must be one of {choices}", param=Param("edits", self.edits),
                           choices=", ".join(EDITS))
        if self.edits == "keep" and (self.manifest is not None or self.images is not None or self.split is not None):
            raise XmrError("{keep} indexes the items the index holds now: leave out {manifest}, {images} and {split}",
                           keep=Param("edits", "keep"), manifest=Param("manifest"), images=Param("images"),
                           split=Param("split"))
        self._check_shards()
        if self.memory_budget is not None:
            if self.index_factory != AUTO:
                raise XmrError("{budget} chooses the index: give it with {auto}, not {factory}",
                               budget=Param("memory_budget"), auto=Param("factory", AUTO),
                               factory=repr(self.index_factory))
            parse_bytes(self.memory_budget)

    def _check_shards(self) -> None:
        """Shards are indexed as they were encoded: no gallery selection, re-ranking or kept edits."""
        if self.shards is None:
            return
        if (self.manifest is not None or self.images is not None or self.split is not None or self.rerank
                or self.tune is not None or self.texts_per_item is not None or self.edits == "keep"):
            raise XmrError("{shards} indexes the shards as encoded: leave out {manifest}, {images}, {split}, "
                           "{texts_per_item}, {rerank}, {tune} and {keep}",
                           shards=Param("shards"), manifest=Param("manifest"), images=Param("images"),
                           split=Param("split"), texts_per_item=Param("texts_per_item"), rerank=Param("rerank"),
                           tune=Param("tune"), keep=Param("edits", "keep"))

    @property
    def index_factory(self) -> str:
        """The factory built: ``factory`` when given, else ``"auto"`` with a memory budget, else ``"Flat"``."""
        if self.factory is not None:
            return self.factory
        return AUTO if self.memory_budget is not None else FLAT

    def rerankers(self) -> list[Reranker]:
        """``rerank`` as unfitted re-rankers (names with their default parameters)."""
        return [create_reranker(r) if isinstance(r, str) else r for r in self.rerank]

    def out_folder(self, run_dir: str | Path) -> Path:
        """The index folder: ``out_dir``, or ``<run_dir>/index``."""
        return Path(self.out_dir) if self.out_dir else Path(run_dir) / "index"
