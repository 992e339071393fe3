"""The search behind ``xmr serve``, without the web framework: queries in, ranked results out.

Everything a query needs is loaded once (:meth:`SearchService.load`): the model and encoders,
the FAISS indexes, the re-ranking structures, the gallery's metadata (in memory; a hit never
reads a file). Text-query embeddings are kept in an LRU cache. Filters are boolean masks over
the gallery, built once per (field, value); concurrent text queries are encoded together
(:class:`~xmr.serve.batching.MicroBatcher`); a filtered query widens its FAISS search until
enough hits pass (or the whole gallery was scored), so paging and filters give exactly the
ranking of the unfiltered list restricted to the matching entries.

:class:`SearchService` is the ``retrieval`` task's service: a retrieval run answers text, image,
gallery-item and vector queries against images or texts; ``image`` + ``text`` is composed in its
joint space by adding the two unit embeddings (the training-free baseline of the composed-query
papers). Each task's service is a :class:`GalleryService`, loaded by the task
(:meth:`xmr.tasks.Task.service`; :func:`xmr.tasks.load_service` for any run folder): the
``composed`` task's answers image + text with its learnt composition, over its gallery.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import itertools
import logging
import mimetypes
import os
import stat
import threading
import time
import typing
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np

from xmr.data.manifest import Item
from xmr.encoders.image_io import ImageBytes, UnreadableImage, blank_png, load_rgb
from xmr.errors import Call, Param
from xmr.evaluation.similarity import is_inner_product
from xmr.modality import Modality, Target
from xmr.rerank.registry import RERANKERS
from xmr.runs.base import read_task_name
from xmr.runtime.device import Runtime, resolve
from xmr.search import Searcher
from xmr.serve.batching import MicroBatcher
from xmr.serve.config import ServeConfig
from xmr.serve.query import NotFound, Query, ServiceError, Stages, TooLarge
from xmr.utils.arrays import l2_normalize

log = logging.getLogger(__name__)

#: the gallery fields a query may filter on
FILTER_FIELDS = ("style", "label", "group", "split")
#: how much wider each filtered FAISS round searches than the last
WIDEN = 4


class GalleryService(abc.ABC):
    """What every service holds: the gallery's items in memory, filters over them, their images."""

    composed = "add"  # how an image + text query is composed: "add" (the unit embeddings) or "learnt"
    rerankers: list[str] = []

    def __init__(self, items: Sequence[Item | None], *, run_dir: str | Path, model_id: str,
                 max_upload_bytes: int = 10 * 2 ** 20, max_decodes: int = 2) -> None:
        # by index id; None where `xmr index remove` took an item out (the index never returns it)
        self.items: list[Item | None] = list(items)
        self.run_dir, self.model_id = Path(run_dir), model_id
        self.task = read_task_name(run_dir)  # what /info reports
        self.by_id = {it.id: i for i, it in enumerate(self.items) if it is not None}
        self.max_upload_bytes = max_upload_bytes
        # per filter field: its value -> code, and each item's code (-1: none); at most one per field,
        # whatever values queries name (a mask per value asked for grew without bound)
        self._codes: dict[str, tuple[dict[str, int], np.ndarray]] = {}
        self._codes_lock = threading.Lock()
        # index id -> (the identity of the file checked: device, inode, size, mtime; whether it decoded)
        self._image_ok: dict[int, tuple[tuple[int, int, int, int], bool]] = {}
        self._decodes = threading.BoundedSemaphore(max_decodes)  # image decodes at once (their pixels in memory)
        fields = {f: sorted({str(getattr(it, f)) for it in self.items if it is not None and getattr(it, f) is not None})
                  for f in FILTER_FIELDS}
        self.fields = {f: v for f, v in fields.items() if v}

    @property
    def n_texts(self) -> int:
        return 0

    @property
    def text_encoder_id(self) -> str:
        """What encodes query texts (its ``encoder_id``)."""
        return "the run's text model"

    def observe_batches(self, observe: Callable[[str, int], None]) -> None:
        """Call ``observe(batcher, size)`` after each micro-batch (``text``, ``search_images``, ...);
        a service that joins no requests (a composed run's) never calls it."""

    @abc.abstractmethod
    def warm_up(self) -> None:
        """Load every lazily loaded weight now (encoders load on first use), so the first query is fast."""

    @abc.abstractmethod
    def search(self, q: Query, stages: Stages | None = None) -> tuple[list[dict[str, object]], int]:
        """The ranked results of ``q`` (``offset`` skipped, ``k`` kept) and how many entries pass its filters."""

    def item_index(self, item_id: str) -> int:
        i = self.by_id.get(item_id)
        if i is None:
            raise NotFound(f"no gallery item {item_id!r}")
        return i

    def at(self, i: int) -> Item:
        """The item of index id ``i`` (one the index returned, or :meth:`item_index` found)."""
        it = self.items[i]
        if it is None:
            raise NotFound(f"no gallery item at index id {i}")
        return it

    def item_mask(self, filters: Mapping[str, str | Sequence[str]]) -> np.ndarray | None:
        """Which items pass ``filters`` (field -> value or values; None: no filter). Shape: (n_items,).

        One pass over the field's item codes per field, however many values are named; a value no
        item has matches nothing and leaves nothing behind.
        """
        if not filters:
            return None
        keep = np.ones(len(self.items), dtype=bool)
        for name, wanted in filters.items():
            if name not in FILTER_FIELDS:
                raise ServiceError(f"filters: unknown field {name!r}; the gallery has {', '.join(FILTER_FIELDS)}")
            code_of, codes = self._field_codes(name)
            passes = np.zeros(len(code_of) + 1, dtype=bool)  # by code; the last entry is code -1 (no value)
            for v in [wanted] if isinstance(wanted, str) else wanted:
                c = code_of.get(str(v))
                if c is not None:
                    passes[c] = True
            keep &= passes[codes]
        return keep

    def _field_codes(self, name: str) -> tuple[dict[str, int], np.ndarray]:
        """(value -> code, each item's code (n_items,) int32, -1 where it has none) of one filter field, built once."""
        with self._codes_lock:
            if name not in self._codes:
                code_of = {v: c for c, v in enumerate(self.fields.get(name, ()))}
                codes = np.fromiter((-1 if it is None or getattr(it, name) is None else code_of[str(getattr(it, name))]
                                     for it in self.items), dtype=np.int32, count=len(self.items))
                self._codes[name] = (code_of, codes)
            return self._codes[name]

    def image_url(self, item_id: str) -> str:
        return "/images/" + quote(item_id, safe="")

    def item_fields(self, it: Item) -> dict[str, str | None]:
        return {f: getattr(it, f) for f in FILTER_FIELDS}

    def item(self, item_id: str) -> dict[str, object]:
        it = self.at(self.item_index(item_id))
        return {"id": it.id, "texts": list(it.texts), "image_url": self.image_url(it.id),
                "fields": self.item_fields(it)}

    def open_image(self, item_id: str) -> tuple[Iterator[bytes], str]:
        """The gallery image of ``item_id`` as chunks of bytes, and its media type — only a regular
        file that decodes as an image.

        A manifest row may point anywhere (``/etc/passwd``); the service hands out a file only
        when PIL reads it as an image within the pixel limit. The check reads the opened file,
        the one then served, and is remembered for that file only (device, inode, size, mtime):
        a file swapped in afterwards (a symlink re-pointed elsewhere) is checked again, and a
        file gone is a :class:`NotFound`, as is a FIFO or a device (opened without blocking).
        """
        i = self.item_index(item_id)
        path = self.at(i).image
        missing = NotFound(f"item {item_id!r} has no readable image")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            raise missing from None
        f = os.fdopen(fd, "rb")
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise missing
            identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            known = self._image_ok.get(i)
            if known is None or known[0] != identity:
                try:
                    with self._decodes:
                        load_rgb(ImageBytes(f.read(), str(path)), min_side=8)
                    known = (identity, True)
                except UnreadableImage:
                    known = (identity, False)
                self._image_ok[i] = known
                f.seek(0)
            if not known[1]:
                raise missing
        except BaseException:
            f.close()
            raise
        return _chunks(f), mimetypes.guess_type(str(path))[0] or "application/octet-stream"


def _chunks(f: typing.BinaryIO, size: int = 1 << 16) -> Iterator[bytes]:
    """The bytes of an open file, ``size`` at a time; the file is closed at the end (or when dropped)."""
    with f:
        while chunk := f.read(size):
            yield chunk


class SearchService(GalleryService):
    """One indexed retrieval run, ready to answer (see the module docstring)."""

    def __init__(self, searcher: Searcher, *, run_dir: str | Path, cache_size: int = 1024,
                 max_upload_bytes: int = 10 * 2 ** 20, max_batch: int = 32, max_wait: float = 0.002,
                 text_workers: int = 2, max_decodes: int = 2) -> None:
        super().__init__(searcher.items, run_dir=run_dir, model_id=searcher.model.model_id,
                         max_upload_bytes=max_upload_bytes, max_decodes=max_decodes)
        self.searcher = searcher
        self.dim = searcher.model.config.embed_dim
        # every (text, item carrying it) pair, sorted by text then item: (text ids, item ids), built once
        self._carriers: tuple[np.ndarray, np.ndarray] | None = None
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # the LRU, shared by the request threads
        self._encoder_lock = threading.Lock()  # one encoder call at a time (torch uses every core)
        # a text encoder that runs in several threads at once gets text_workers batches in parallel
        parallel = searcher.text_encoder.thread_safe
        self._text_lock = contextlib.nullcontext() if parallel else self._encoder_lock
        self._texts: MicroBatcher[str, tuple[np.ndarray, np.ndarray]] = MicroBatcher(
            self._encode_texts, max_batch=max_batch, max_wait=max_wait, workers=text_workers if parallel else 1)
        self.rerankers = self._built_rerankers()
        # an inner-product space is searched by FAISS directly: concurrent searches of one target
        # are joined into one call (one pass over the vectors for the whole batch)
        self._plain_search = is_inner_product(searcher.model.config.similarity)
        self._faiss: dict[str, MicroBatcher[tuple[np.ndarray, int], tuple[np.ndarray, np.ndarray]]] = {
            t: MicroBatcher(functools.partial(self._search_many, t), max_batch=max_batch, max_wait=max_wait)
            for t in ("images", "texts")}

    @classmethod
    def load(cls, run_dir: str | Path, index_dir: str | Path | None = None, *, fast_text: bool = False,
             runtime: Runtime | None = None, **kw: object) -> SearchService:
        """Load the run's model, encoders and index (``xmr index`` must have built it); ``fast_text`` and
        ``runtime`` (None: the CPU at fp32) as in :meth:`xmr.search.Searcher.from_run`."""
        searcher = Searcher.from_run(run_dir, index_dir, fast_text=fast_text, runtime=runtime)
        return cls(searcher, run_dir=run_dir, **kw)  # type: ignore[arg-type]

    @classmethod
    def serving(cls, run_dir: str | Path, index_dir: str | Path | None = None,
                config: ServeConfig | None = None) -> SearchService:
        """:meth:`load` with ``config``'s settings, as ``xmr serve`` serves a retrieval run."""
        c = config or ServeConfig()
        return cls.load(run_dir, index_dir, fast_text=c.fast_text, runtime=resolve(c.runtime), cache_size=c.cache_size,
                        max_upload_bytes=c.max_upload_bytes, text_workers=c.text_workers, max_decodes=c.max_decodes)

    def warm_up(self) -> None:
        self._encode_texts(["warm up"])
        self._image_embedding(blank_png())

    def observe_batches(self, observe: Callable[[str, int], None]) -> None:
        self._texts.on_batch = functools.partial(observe, "text")
        for target, batcher in self._faiss.items():
            batcher.on_batch = functools.partial(observe, f"search_{target}")

    def _built_rerankers(self) -> list[str]:
        """The re-ranking methods the index's record (``index_run.json``) says it holds structures for."""
        built = self.searcher.index_record
        return [] if built is None else [name for name in RERANKERS.names() if name in built.rerank]

    @property
    def n_texts(self) -> int:
        return len(self.searcher.texts)

    @property
    def text_encoder_id(self) -> str:
        return self.searcher.text_encoder.encoder_id

    # -- queries --------------------------------------------------------------------------------

    def _text_embedding(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(joint embedding (1, d), own features (1, d_own)) of a text, from the LRU when seen before."""
        text = text.strip()
        if not text:
            raise ServiceError("text: empty")
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        emb, feats = self._texts(text)  # with other requests' texts, in one encoder call
        with self._lock:
            if self._cache_size:
                self._cache[text] = (emb, feats)
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return emb, feats

    def _encode_texts(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """One encoder call for a micro-batch of texts: per text (joint (1, d), own (1, d_own))."""
        with self._text_lock:
            feats = self.searcher.text_features(texts)
            emb = self.searcher.embed(feats, "text")
        return [(emb[i:i + 1], feats[i:i + 1]) for i in range(len(texts))]

    def _search_many(self, target: Target, batch: list[tuple[np.ndarray, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """One FAISS call for a micro-batch of (query (1, d), results wanted): per query (scores, ids)."""
        width = max(f for _, f in batch)
        scores, ids = self.searcher.search_vectors(np.vstack([e for e, _ in batch]), width, target=target)
        return [(scores[i, :f], ids[i, :f]) for i, (_, f) in enumerate(batch)]

    def _image_embedding(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        if len(data) > self.max_upload_bytes:
            raise TooLarge(f"the image is larger than the upload limit ({self.max_upload_bytes / 2 ** 20:g} MB)")
        enc = self.searcher.image_encoder
        try:
            with self._decodes:  # decoded outside the encoder lock, a few at a time
                pixels = enc.load(ImageBytes(data, "the uploaded image"))
        except UnreadableImage as e:
            raise ServiceError(f"image: {e.reason}") from None
        with self._encoder_lock:
            feats = enc.encode_batch([pixels])
            return self.searcher.embed(feats, "image"), feats

    def _item_embedding(self, item_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        i = self.item_index(item_id)
        index = self.searcher.indexes["images"]
        try:  # by id: after `xmr index remove` an id is no longer a FAISS position
            vec = np.asarray(index.reconstruct(np.array([i], dtype=np.int64)), dtype=np.float32).reshape(1, -1)
            return vec, None  # the own features are needed by bidirectional only
        except RuntimeError:  # an index that cannot give its vectors back: encode the file
            feats = self._item_features(item_id)
            return self.searcher.embed(feats, "image"), feats

    def _item_features(self, item_id: str) -> np.ndarray:
        enc = self.searcher.image_encoder
        with self._decodes:
            pixels = enc.load(self.at(self.item_index(item_id)).image)
        with self._encoder_lock:
            return enc.encode_batch([pixels])

    def _vector(self, values: Sequence[float]) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64).reshape(1, -1)
        if v.shape[1] != self.dim:
            raise ServiceError(f"vector: {v.shape[1]} values, the run's space has {self.dim}")
        if not np.isfinite(v).all() or not np.linalg.norm(v) > 0:
            raise ServiceError("vector: must be finite and not all zero")
        return l2_normalize(v / np.abs(v).max()).astype(np.float32)  # scaled first: no float32 overflow

    def _mask(self, target: Target, keep: np.ndarray | None) -> np.ndarray | None:
        """Which entries of ``target`` pass, given the items that do (``keep``, (n_items,); None: no
        filter). A text passes when any item carrying it passes, not only the first."""
        if keep is None or target == "images":
            return keep
        texts, carriers = self._text_carriers()
        passes = np.zeros(self.n_texts, dtype=bool)
        passes[texts[keep[carriers]]] = True
        return passes

    def _text_carriers(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (text id, id of an item carrying it) pair, sorted by text then item: two (n_pairs,)
        int64 arrays, read from the gallery once."""
        if self._carriers is None:
            by_item = self.searcher.metadata.item_texts()
            counts = np.fromiter((len(js) for js in by_item.values()), dtype=np.int64, count=len(by_item))
            items = np.repeat(np.fromiter(by_item.keys(), dtype=np.int64, count=len(by_item)), counts)
            texts = np.fromiter(itertools.chain.from_iterable(by_item.values()), dtype=np.int64,
                                count=int(counts.sum()))
            order = np.lexsort((items, texts))
            self._carriers = (texts[order], items[order])
        return self._carriers

    def _carrier(self, j: int, keep: np.ndarray | None) -> Item | None:
        """The item shown with text ``j``: the first that carries it (and passes ``keep``, when given)."""
        if keep is None:
            owner = self.searcher.text_owners().get(j)
            return self.items[owner] if owner is not None else None
        texts, carriers = self._text_carriers()
        lo, hi = np.searchsorted(texts, [j, j + 1])
        passing = carriers[lo:hi][keep[carriers[lo:hi]]]
        return self.items[int(passing[0])] if len(passing) else None

    def search(self, q: Query, stages: Stages | None = None) -> tuple[list[dict[str, object]], int]:
        """The ranked results of ``q`` (``offset`` skipped, ``k`` kept) and how many entries pass its filters."""
        stages = stages if stages is not None else Stages()
        t = time.perf_counter()
        kind = q.kind
        if q.target == "texts" and self.n_texts == 0:
            raise ServiceError("target texts: this index holds no texts (a gallery of bare images); index a "
                               "manifest with texts: {fix}",
                               fix=Call("index_run", Param("run_dir", str(self.run_dir)), Param("manifest", "M")))
        if q.rerank is not None and q.rerank not in self.rerankers:
            built = ", ".join(self.rerankers) or "none"
            raise ServiceError(f"rerank {q.rerank!r}: not built for this index (built: {built}); build it with "
                               f"`xmr index {self.run_dir} --rerank {q.rerank}`")
        modality: Modality
        own: np.ndarray | None
        if kind == "text":
            emb, own = self._text_embedding(str(q.text))
            modality = "text"
        elif kind == "image":
            emb, own = self._image_embedding(bytes(q.image or b""))
            modality = "image"
        elif kind == "image_id":
            emb, own = self._item_embedding(str(q.image_id))
            if own is None and q.rerank is not None:  # a re-ranker may walk the encoder's own space
                own = self._item_features(str(q.image_id))
            modality = "image"
        elif kind == "vector":
            emb, own, modality = self._vector(q.vector or []), None, "text"
        else:  # composed: image (or a gallery item) + text, added in the joint space
            img, _ = self._item_embedding(q.image_id) if q.image_id is not None else \
                self._image_embedding(bytes(q.image or b""))
            txt, _ = self._text_embedding(str(q.text))
            emb, own, modality = l2_normalize(img + txt), None, "image"
        t = stages.add("encode", t)
        items_pass = self.item_mask(q.filters)
        mask = self._mask(q.target, items_pass)
        n = len(self.searcher.indexes[q.target])
        total = int(mask.sum()) if mask is not None else n
        need = q.offset + q.k
        fetch = min(n, need if mask is None else max(need * WIDEN, 64))
        while True:
            if q.rerank is None and self._plain_search:  # joined with other requests' searches
                scores, ids = self._faiss[q.target]((emb, fetch))
            else:
                scores, ids = self.searcher.search_reranked(emb, own, fetch, target=q.target, modality=modality,
                                                            rerank=q.rerank)
                scores, ids = scores[0], ids[0]
            keep = ids >= 0
            if mask is not None:
                keep &= mask[np.clip(ids, 0, None)]
            if keep.sum() >= need or fetch >= n:
                break
            fetch = min(n, fetch * WIDEN)
        t = stages.add("rerank" if q.rerank else "search", t)
        hits = [(float(s), int(i)) for s, i in zip(scores[keep], ids[keep])][q.offset:need]
        results = [self._result(q.target, i, s, q.offset + r + 1, items_pass) for r, (s, i) in enumerate(hits)]
        stages.add("metadata", t)
        return results, total

    def _result(self, target: Target, i: int, score: float, rank: int,
                items_pass: np.ndarray | None = None) -> dict[str, object]:
        if target == "images":
            it = self.at(i)
            return {"id": it.id, "score": score, "rank": rank, "texts": list(it.texts),
                    "image_url": self.image_url(it.id), "fields": self.item_fields(it)}
        of = self._carrier(i, items_pass)  # an item that passed the filters, for a filtered query
        fields = {"item": of.id if of else None, **(self.item_fields(of) if of else {})}
        return {"id": f"text:{i}", "score": score, "rank": rank, "texts": [self.searcher.texts[i]],
                "image_url": self.image_url(of.id) if of else None, "fields": fields}
