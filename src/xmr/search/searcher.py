"""The :class:`Searcher`: a trained model, its encoders and a gallery index, queried by text or image.

    >>> s = Searcher.from_run("runs/emoji-infonce")            # doctest: +SKIP
    >>> [h.id for h in s.search_text("a smiling cat", k=3)]     # doctest: +SKIP
    ['1F63A/twitter', '1F63A/google', '1F638/openmoji-color']

With re-ranking structures built by ``xmr index RUN --rerank diffusion``::

    >>> s = Searcher.from_run("runs/emoji-infonce", rerank="diffusion")   # doctest: +SKIP
    >>> s.search_text("a smiling cat", k=3)                              # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmr.data.gallery_store import GALLERY_FILE, Gallery, ListGallery, open_gallery
from xmr.data.manifest import Item
from xmr.encoders import ImageEncoder, TextEncoder, create_text_encoder
from xmr.encoders.image_io import ImageBytes, blank_png
from xmr.encoders.placement import place_encoder
from xmr.errors import Call, Param, XmrError
from xmr.evaluation.similarity import is_inner_product, score_fn
from xmr.index import Index, load_index
from xmr.index.run_record import INDEX_RUN_FILE, IndexRun, load_index_run, read_index_run
from xmr.modality import DEFAULT_K, TARGETS, Modality, Target, check_modality, check_target, modality_of_target
from xmr.models import JointModel
from xmr.rerank.registry import RERANKERS, index_fingerprint, rerank_dir
from xmr.rerank.reranker import Reranker, load_reranker, order_shortlist
from xmr.runs.config import load_run, run_encoders
from xmr.runtime.device import CPU_FP32, Runtime
from xmr.search.queries import Query

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchHit:
    """One result: rank (1-based), score, and the hit's metadata (an item, or a text)."""

    rank: int
    score: float
    id: str
    text: str | None = None
    image: str | None = None
    label: str | None = None
    group: str | None = None
    style: str | None = None
    item: str | None = None  # a text hit: the id of the first gallery item carrying the text (image: its image)


@dataclass(frozen=True)
class QueryResult:
    """One query of :meth:`Searcher.search_batch`: its hits, or why it could not be answered."""

    query: Query
    hits: list[SearchHit]
    error: str | None = None


class Searcher:
    """Answers text and image queries against an indexed gallery.

    Args:
        model: the trained joint model.
        image_encoder, text_encoder: the frozen encoders the model was trained on.
        image_index, text_index: indexes of the gallery's image and text embeddings.
        items: the gallery's items and texts by index id (a :class:`~xmr.data.gallery_store.Gallery`:
            ``gallery.sqlite``, read per hit), or a list of items (image index id = position)...
        texts: ... with the list of texts (text index id = position).
        index_dir: the index folder, where re-ranking structures are looked up by name.
        rerank: the default re-ranking for every search: a method name (structures loaded from
            ``index_dir``) or a fitted :class:`~xmr.rerank.reranker.Reranker`; None = none.
        rerank_params: query-time parameters to change (e.g. ``{"shortlist": 200}``).
        run_dir: the run folder, only to name it in "index the run again" hints.
        built: the index folder's record (``index_run.json``), for those hints (read from
            ``index_dir`` when needed and not given).
        runtime: the device and precision the model embeds queries at (None: the CPU at fp32; the model
            and the encoders must already be there: :meth:`from_run` places them).
    """

    def __init__(self, model: JointModel, image_encoder: ImageEncoder, text_encoder: TextEncoder,
                 image_index: Index, text_index: Index, items: Sequence[Item] | Gallery,
                 texts: Sequence[str] | None = None, *,
                 index_dir: str | Path | None = None, rerank: str | Reranker | None = None,
                 rerank_params: Mapping[str, object] | None = None, run_dir: str | Path | None = None,
                 built: IndexRun | None = None, runtime: Runtime | None = None) -> None:
        self.model, self.image_encoder, self.text_encoder = model, image_encoder, text_encoder
        self.runtime = runtime or CPU_FP32
        self.indexes = {"images": image_index, "texts": text_index}
        self.metadata = items if isinstance(items, Gallery) else ListGallery(items, list(texts or []))
        self._items: list[Item | None] | None = None
        self._texts: list[str | None] | None = None
        self.index_dir = Path(index_dir) if index_dir is not None else None
        self._run_dir = run_dir
        self._built = built
        self._fingerprint: str | None = None
        self._loaded: dict[tuple[str, str], Reranker] = {}
        self._gallery_vectors: dict[str, np.ndarray] = {}  # for non-inner-product search, read lazily
        self._gallery_ids: dict[str, np.ndarray] = {}  # the id of each row of _gallery_vectors
        self._owners: dict[int, int] | None = None  # text id -> first item carrying it, read lazily
        self.rerank_params = dict(rerank_params or {})
        self.rerank = rerank
        if isinstance(rerank, str):
            self._load_available(rerank)
        elif rerank is not None and rerank.target is not None:
            self._reranker(rerank, rerank.target)  # fail now, not at the first query

    @classmethod
    def from_run(cls, run_dir: str | Path, index_dir: str | Path | None = None, *,
                 rerank: str | Reranker | None = None, rerank_params: Mapping[str, object] | None = None,
                 fast_text: bool = False, mmap: bool = False, runtime: Runtime | None = None) -> Searcher:
        """Load the best model of ``run_dir`` and the index built by ``xmr index``.

        Args:
            run_dir: a folder made by ``xmr train``.
            index_dir: the index folder (default ``<run_dir>/index``).
            rerank: re-rank every search by default: a method name whose structures ``xmr index
                --rerank NAME`` stored in the index, or a fitted re-ranker.
            rerank_params: query-time parameters to change, e.g. ``{"shortlist": 200}``.
            fast_text: encode query texts with the run's text encoder's ``query_stand_in`` (the
                same model, faster: int8 ONNX MiniLM for ``minilm-l6``) when it has one and is
                used frozen; otherwise with the run's own.
            mmap: map the indexes from their files instead of reading them into RAM (a search
                process's memory grows only with the pages its queries touch; read-only).
            runtime: the device and precision the encoders and the model run at (None: the CPU at fp32);
                the query embeddings and the index stay float32 on the CPU.

        Raises:
            XmrError: no index, a damaged ``index_run.json``, an index of another model, or
                ``rerank`` structures missing from the index or built for another index.
        """
        run_dir = Path(run_dir)
        runtime = runtime or CPU_FP32
        cfg, model = load_run(run_dir)
        model.to(runtime.device)
        idx = Path(index_dir) if index_dir else run_dir / "index"
        built = read_index_run(idx, run_dir)
        dim = model.config.embed_dim
        image_index = load_index(idx / "images", expect_dim=dim, expect_model_id=model.model_id, mmap=mmap)
        text_index = load_index(idx / "texts", expect_dim=dim, expect_model_id=model.model_id, mmap=mmap)
        gallery = open_gallery(idx)
        store = idx / GALLERY_FILE
        for what, n_meta, index, path in (
                ("images", gallery.n_items, image_index, store if store.is_file() else idx / "gallery.jsonl"),
                ("texts", gallery.n_texts, text_index, store if store.is_file() else idx / "texts.json")):
            if n_meta != len(index):
                raise XmrError("{path} lists {n_meta} {what} but the index holds {n_index}; the index folder {idx} "
                               "is damaged: rebuild it with {fix}", path=str(path), n_meta=n_meta, what=what,
                               n_index=len(index), idx=str(idx), fix=Call("index_run", Param("run_dir", str(run_dir))))
        encoders = run_encoders(cfg, model.vocab, runtime)
        text_encoder = encoders["text_encoder"]
        if fast_text and text_encoder.query_stand_in is not None:  # a fine-tuned text trunk declares none
            text_encoder = place_encoder(create_text_encoder(text_encoder.query_stand_in), runtime)
        return cls(model, encoders["image_encoder"], text_encoder,
                   image_index, text_index, gallery, index_dir=idx, rerank=rerank,
                   rerank_params=rerank_params, run_dir=run_dir, built=built, runtime=runtime)

    def embed(self, feats: np.ndarray, modality: Modality) -> np.ndarray:
        """The model's joint-space embeddings of encoder features, at the searcher's runtime. Shape: (n, feat_dim)
        -> (n, embed_dim), float32 on the CPU."""
        with self.runtime.autocast():
            return self.model.embed_numpy(feats, modality)

    def text_features(self, texts: list[str]) -> np.ndarray:
        """The text encoder's own features of query texts. Shape: (n, text_dim)."""
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise XmrError(f"query text #{i} is empty")
        return self.text_encoder.encode_batch([t.strip() for t in texts])

    def image_features(self, paths: list[str | Path]) -> np.ndarray:
        """The image encoder's own features of query images. Shape: (n, image_dim)."""
        return self.image_encoder.encode_batch([self.image_encoder.load(p) for p in paths])

    def load_encoder(self, kind: Modality) -> None:
        """Load the query encoder of ``kind`` now, by encoding one tiny input (encoders load their
        weights on first use: a caller timing its queries would count the load as the first query's)."""
        if check_modality(kind, "query kind") == "text":
            self.text_encoder.encode_batch(["warm up"])
        else:
            self.image_encoder.encode_batch([self.image_encoder.load(ImageBytes(blank_png(), "a blank warm-up image"))])

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Joint-space embeddings of query texts. Shape: (n, embed_dim)."""
        return self.embed(self.text_features(texts), "text")

    def embed_images(self, paths: list[str | Path]) -> np.ndarray:
        """Joint-space embeddings of query images. Shape: (n, embed_dim)."""
        return self.embed(self.image_features(paths), "image")

    def search_vectors(self, queries: np.ndarray, k: int = DEFAULT_K, *, target: Target = "images"
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Raw search: (scores, ids), each of shape (n_queries, k')."""
        self.check_searchable(target)
        return self.indexes[target].search(queries, k)

    def check_searchable(self, target: Target) -> None:
        """Refuse a search of ``target`` when its index holds nothing: a folder indexed from bare
        images has no texts; everything may have been removed."""
        if len(self.indexes[check_target(target)]) == 0:
            run = Param("run_dir", str(self._run_dir) if self._run_dir is not None else "RUN")
            if modality_of_target(target) == "image":
                raise XmrError("target {target}: this index holds no images (all removed?); add some with {fix} or "
                               "rebuild it", target=target,
                               fix=Call("add_to_index", run, Param("manifest", "M")))
            raise XmrError("target {target}: this index holds no texts (a gallery of bare images); search its images, "
                           "or index a manifest with texts: {fix}", target=target,
                           fix=Call("index_run", run, Param("manifest", "M")))

    def search_reranked(self, queries: np.ndarray, query_own: np.ndarray | None, k: int = DEFAULT_K, *,
                        target: Target = "images", modality: Modality,
                        rerank: str | Reranker | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw search whose shortlist is re-ordered: (scores, ids), each of shape (n_queries, k').

        The index returns ``max(k, shortlist)`` results per query; the re-ranker re-orders them
        and the best ``k`` are kept. Scores are the re-ranker's (diffusion mass, fused walk
        score, or minus the geodesic distance), not cosines.

        Args:
            queries: joint-space query embeddings. Shape: (n, embed_dim).
            query_own: the queries' own encoder features (bidirectional). Shape: (n, d_own), or None.
            modality: ``"text"`` or ``"image"``, what the queries are.
            rerank: a method name or a fitted re-ranker; None uses the searcher's default.
        """
        self.check_searchable(target)
        rr = self._reranker(rerank, target)
        cross = check_modality(modality, "query modality") != modality_of_target(check_target(target))
        if not is_inner_product(self.model.config.similarity) and cross:
            if rr is not None:
                raise XmrError("re-ranking works on cosine spaces; this model scores by {similarity}",
                               similarity=repr(self.model.config.similarity))
            return self._scored_search(queries, k, target=target, modality=modality)
        if rr is None:
            return self.search_vectors(queries, k, target=target)
        base_scores, base_ids = self.search_vectors(queries, max(k, rr.params.shortlist), target=target)
        scores, scored = rr.shortlist_scores(queries, query_own, base_scores, base_ids, query_modality=modality)
        if not scored.any(axis=1).all():
            log.warning("%s re-ranking scored none of the results of %d query(ies) (unretrievable on the "
                        "manifold); their index order is kept", rr.name, int((~scored.any(axis=1)).sum()))
        scores, ids = order_shortlist(scores, scored, base_ids)
        return scores[:, :k], ids[:, :k]

    def search_text(self, text: str, k: int = DEFAULT_K, *, target: Target = "images",
                    rerank: str | Reranker | None = None) -> list[SearchHit]:
        """The ``k`` gallery images (or texts) closest to ``text``; ``rerank`` as in :meth:`search_reranked`."""
        feats = self.text_features([text])
        q = self.embed(feats, "text")
        return self._hits(*self.search_reranked(q, feats, k, target=target, modality="text", rerank=rerank), target)

    def search_image(self, path: str | Path, k: int = DEFAULT_K, *, target: Target = "images",
                     rerank: str | Reranker | None = None) -> list[SearchHit]:
        """The ``k`` gallery images (other styles included) or texts closest to the image at ``path``."""
        feats = self.image_features([path])
        q = self.embed(feats, "image")
        return self._hits(*self.search_reranked(q, feats, k, target=target, modality="image", rerank=rerank),
                          target)

    def search_batch(self, queries: Sequence[Query], k: int = DEFAULT_K, *, target: Target = "images",
                     rerank: str | Reranker | None = None, chunk: int | None = None) -> list[QueryResult]:
        """The results of :meth:`iter_search_batch`, as a list in query order."""
        return list(self.iter_search_batch(queries, k, target=target, rerank=rerank, chunk=chunk))

    def iter_search_batch(self, queries: Sequence[Query], k: int = DEFAULT_K, *, target: Target = "images",
                          rerank: str | Reranker | None = None, chunk: int | None = None) -> Iterator[QueryResult]:
        """Answer many text and image queries, yielding each result in query order as it is answered.

        The queries are taken a window at a time; in each window the texts and the images are
        encoded and searched in batches of at most ``chunk`` (None: each encoder's
        ``default_batch_size``), and an image is decoded only when its batch is, so memory does
        not grow with the number of queries. The hits of each query are those
        :meth:`search_text` / :meth:`search_image` give for it alone. A query that cannot be
        answered (an unreadable or missing image, an empty text) gets its ``error`` and no hits;
        the others are answered.

        Raises:
            XmrError: an empty ``target`` index (before anything is encoded), a bad ``chunk``.
        """
        self.check_searchable(target)
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise XmrError(f"chunk must be a positive integer, got {chunk!r}")
        size = {"text": chunk or self.text_encoder.default_batch_size,
                "image": chunk or self.image_encoder.default_batch_size}
        window = max(size.values())
        for a in range(0, len(queries), window):
            part = list(enumerate(queries[a:a + window]))
            done: dict[int, QueryResult] = {}
            for kind in ("text", "image"):
                todo = [(i, q) for i, q in part if check_modality(q.kind, "query kind") == kind]
                for b in range(0, len(todo), size[kind]):
                    done.update(self._answer_batch(kind, todo[b:b + size[kind]], k, target, rerank))
            yield from (done[i] for i, _ in part)

    def _answer_batch(self, kind: Modality, batch: list[tuple[int, Query]], k: int, target: Target,
                      rerank: str | Reranker | None) -> dict[int, QueryResult]:
        """One encoder call's worth of queries of one ``kind``: position -> its result."""
        done: dict[int, QueryResult] = {}
        good: list[tuple[int, Query]] = []
        inputs: list[Any] = []
        for i, q in batch:
            try:
                if q.error is not None:
                    raise XmrError(q.error)
                if kind == "text":
                    if not q.value.strip():
                        raise XmrError("empty text")
                    inputs.append(q.value.strip())
                else:
                    inputs.append(self.image_encoder.load(q.value))
            except XmrError as e:
                done[i] = QueryResult(q, [], str(e))
                continue
            good.append((i, q))
        if good:
            feats = (self.text_encoder if kind == "text" else self.image_encoder).encode_batch(inputs)
            del inputs  # the decoded images: free before the search
            emb = self.embed(feats, kind)
            scores, ids = self.search_reranked(emb, feats, k, target=target, modality=kind, rerank=rerank)
            for row, (i, q) in enumerate(good):
                done[i] = QueryResult(q, self._hits_row(scores[row], ids[row], target))
        return done

    def _scored_search(self, queries: np.ndarray, k: int, *, target: Target, modality: Modality
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Exact cross-modal search by the model's own (non-inner-product) similarity.

        FAISS ranks by inner product, which an order-violation space does not use, so the
        gallery vectors are read back from the index by id (:meth:`Index.reconstruct`: after a
        removal ids are not FAISS positions) and every pair is scored (numpy).
        """
        index = self.indexes[target]
        if target not in self._gallery_vectors:  # read back once per searcher, not per query
            ids = index.ids()
            try:
                self._gallery_ids[target], self._gallery_vectors[target] = ids, index.reconstruct(ids)
            except RuntimeError:
                raise XmrError("searching a {similarity} space needs an index whose vectors can be read back "
                               "(build it with {flat} or {hnsw})", similarity=repr(self.model.config.similarity),
                               flat=Param("factory", "Flat"), hnsw=Param("factory", "HNSW32")) from None
        gallery = self._gallery_vectors[target]
        score = score_fn(self.model.config.similarity)
        sims = score(gallery, queries).T if modality == "text" else score(queries, gallery)  # (n_q, n_gallery)
        k = min(k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable"),
                                   axis=1)
        return np.take_along_axis(sims, order, axis=1).astype(np.float32), self._gallery_ids[target][order]

    # -- re-ranking structures ------------------------------------------------------------------

    @property
    def index_record(self) -> IndexRun | None:
        """The index folder's record (``index_run.json``), None without a readable one."""
        if self._built is None and self.index_dir is not None and (self.index_dir / INDEX_RUN_FILE).is_file():
            try:
                self._built = load_index_run(self.index_dir)
            except XmrError:  # only the hints read it here: they do without
                return None
        return self._built

    def _rebuild_hint(self, name: str, target: Target) -> tuple[str, dict[str, object]]:
        """How to rebuild this index with ``name`` structures for ``target``: a text and its field, the
        build as a :class:`~xmr.errors.Call` (the index's source, split and folder kept)."""
        run = Path(self._run_dir) if self._run_dir is not None else None
        params = [Param("run_dir", str(run) if run is not None else "RUN")]
        if self.index_dir is not None:
            built = self.index_record
            if built is not None and built.edits:  # items were added or removed: index the ones it holds
                params.append(Param("edits", "keep"))
            elif built is not None:
                if built.images:
                    params += [Param("images", built.images), *([Param("recursive", True)] if built.recursive else [])]
                if built.split:
                    params.append(Param("split", built.split))
            if run is None or self.index_dir.resolve() != (run / "index").resolve():
                params.append(Param("out_dir", str(self.index_dir)))
        params.append(Param("rerank", (name,)))
        if target != TARGETS[0]:
            params.append(Param("rerank_targets", TARGETS))
        return "rebuild with {rebuild}", {"rebuild": Call("index_run", *params)}

    def _load_available(self, name: str) -> None:
        """Load (and check) every target's ``name`` structures now; none at all is an error."""
        RERANKERS.get(name)
        if self.index_dir is None:
            raise XmrError("re-ranking by name ({name}) needs the index folder; pass a fitted re-ranker instead",
                           name=repr(name))
        targets: list[Target] = [t for t in TARGETS
                                 if (rerank_dir(self.index_dir, name, t) / "rerank.json").is_file()]
        if not targets:
            hint, fields = self._rebuild_hint(name, "images")
            raise XmrError("index at {idx} has no {name} re-ranking structures; " + hint, idx=str(self.index_dir),
                           name=repr(name), **fields)
        for t in targets:
            self._reranker(name, t)

    def _reranker(self, rerank: str | Reranker | None, target: Target) -> Reranker | None:
        """The re-ranker to use for ``target``: loaded, fingerprint-checked and with query-time params."""
        rerank = self.rerank if rerank is None else rerank
        if rerank is None:
            return None
        check_target(target)
        if isinstance(rerank, Reranker):
            rr = rerank
            if rr.target != target:
                raise XmrError("the {name} re-ranker was fit for target {fit}, not {target}", name=rr.name,
                               fit=repr(rr.target), target=repr(target))
            if rr.fingerprint is not None and self.index_dir is not None and rr.fingerprint != self.fingerprint:
                raise XmrError("the {name} re-ranker was built for another index ({theirs}, this index is {ours})",
                               name=rr.name, theirs=rr.fingerprint[:12], ours=self.fingerprint[:12])
        else:
            key = (rerank, target)
            if key not in self._loaded:
                RERANKERS.get(rerank)
                if self.index_dir is None:
                    raise XmrError("re-ranking by name ({name}) needs the index folder", name=repr(rerank))
                folder = rerank_dir(self.index_dir, rerank, target)
                hint, fields = self._rebuild_hint(rerank, target)
                if not (folder / "rerank.json").is_file():
                    raise XmrError("index at {idx} has no {name} re-ranking structures for target {target}; " + hint,
                                   idx=str(self.index_dir), name=repr(rerank), target=target, **fields)
                try:
                    self._loaded[key] = load_reranker(folder, expect_fingerprint=self.fingerprint)
                except XmrError as e:  # its text ends "rebuild them": say how
                    raise e.suffixed(": {rebuild}", **fields) from None
            rr = self._loaded[key]
        if len(self.indexes[target]) != rr.n_gallery:
            hint, fields = self._rebuild_hint(rr.name, target)
            raise XmrError("the {name} re-ranking structures cover {n} {target}, the index {n_index}; " + hint,
                           name=rr.name, n=rr.n_gallery, target=target, n_index=len(self.indexes[target]), **fields)
        return rr.with_params(**self.rerank_params) if self.rerank_params else rr

    @property
    def fingerprint(self) -> str:
        """:func:`~xmr.rerank.registry.index_fingerprint` of the loaded index folder."""
        if self._fingerprint is None:
            if self.index_dir is None:
                raise XmrError("this searcher was not loaded from an index folder")
            self._fingerprint = index_fingerprint(self.index_dir)
        return self._fingerprint

    def _hits(self, scores: np.ndarray, ids: np.ndarray, target: Target) -> list[SearchHit]:
        return self._hits_row(scores[0], ids[0], target)

    def _hits_row(self, scores: np.ndarray, ids: np.ndarray, target: Target) -> list[SearchHit]:
        """The hits of one query's (scores, ids) row, each item read by id; a text hit names the
        first item carrying it."""
        hits = []
        g = self.metadata
        for rank, (s, i) in enumerate(zip(scores, ids), start=1):
            if i < 0:
                continue
            if modality_of_target(target) == "text":
                owner = g.owner(int(i))
                it = g.item(owner) if owner is not None else None
                hits.append(SearchHit(rank, float(s), id=f"text:{i}", text=g.text(int(i)),
                                      image=it.image if it else None, label=it.label if it else None,
                                      group=it.group if it else None, style=it.style if it else None,
                                      item=it.id if it else None))
            else:
                it = g.item(int(i))
                hits.append(SearchHit(rank, float(s), id=it.id, text=it.texts[0] if it.texts else None,
                                      image=it.image, label=it.label, group=it.group, style=it.style))
        return hits

    @property
    def items(self) -> list[Item | None]:
        """Every gallery item at its index id (None where one was removed); read once, on first use."""
        if self._items is None:
            self._items = self.metadata.items_by_id()
        return self._items

    @property
    def texts(self) -> list[str | None]:
        """Every gallery text at its index id (None where one was removed); read once, on first use."""
        if self._texts is None:
            self._texts = self.metadata.texts_by_id()
        return self._texts

    def text_owners(self) -> dict[int, int]:
        """Gallery text id -> the first gallery item (id) that carries the text; read once."""
        if self._owners is None:
            self._owners = self.metadata.owners()
        return self._owners
