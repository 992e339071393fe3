"""``xmr index``: embed a gallery with a trained run and index its images and texts with FAISS.

Index folder layout (default ``<run>/index``)::

    images/            index.faiss + index.json (IndexConfig with the model id and dimension)
    texts/             the same for the gallery's distinct texts
    gallery.sqlite     the indexed items and texts by index id (:mod:`xmr.data.gallery_store`;
                       folders built before it hold gallery.jsonl + texts.json, still read)
    index_run.json     what built it and what changed it since (:class:`xmr.index.run_record.IndexRun`)
    skipped.jsonl      with ``skip_bad`` (always for an images folder): the items left out, each
                       with its reason
    rerank/<name>/<target>/   optional re-ranking structures (``--rerank``), with their parameters
                       and the fingerprint of this index (see :mod:`xmr.rerank.registry`);
                       with ``--tune val`` also tuning.json: the grid, every val score, the choice

The folder, re-ranking structures included, is built beside the target and swapped in at the
end, so an interrupted build leaves the previous index intact and structures always belong to
the index beside them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from xmr.data.folder import scan_folder
from xmr.data.gallery_store import GALLERY_FILE, open_gallery, write_gallery
from xmr.data.manifest import Item, select_split
from xmr.errors import Call, Param, XmrError
from xmr.index import Index, create_index
from xmr.index.budget import choose_index, parse_bytes
from xmr.index.exact import exact_top_k, recall_at_k
from xmr.index.run_record import (
    INDEX_RUN_FILE,
    IndexRun,
    RecallCheck,
    RerankBuilt,
    SideChoice,
    TunedRerank,
    load_index_run,
    read_index_run,
    save_index_run,
)
from xmr.modality import Modality, Target
from xmr.models import JointModel
from xmr.rerank.registry import GalleryVectors, Reranker, first_text_pairs, index_fingerprint, rerank_dir
from xmr.rerank.reranker import params_dict
from xmr.runs.config import load_run, run_encoders, run_items
from xmr.runtime.device import CPU_FP32, Runtime
from xmr.utils.folders import atomic_folder, exclusive_lock
from xmr.utils.io import check_writable
from xmr.workflows.features import SKIPPED_FILE, FeatureSet, encode_items, read_skipped, write_skipped
from xmr.workflows.index_job import AUTO, EDITS, FLAT, CrossModalCheck, Edits, IndexJob
from xmr.workflows.tune import Tuning, save_tuning, tune_reranker

__all__ = ["AUTO", "EDITS", "FLAT", "INDEX_RUN_FILE", "CrossModalCheck", "Edits", "IndexJob", "IndexRun",
           "check_edits", "check_index_target", "index_run", "make_index", "read_index_run", "resolve_factory"]

log = logging.getLogger(__name__)


def build_call(run_dir: str | Path, *args: Param) -> Call:
    """The index build of ``run_dir`` with ``args``, as an error's fix (each edge words it: a call, a command)."""
    return Call("index_run", Param("run_dir", str(run_dir)), *args)


def check_edits(out: Path, edits: Edits) -> None:
    """Refuse (``edits="refuse"``) to replace an index that items were added to or removed from
    since its build: a rebuild from its source would silently lose the added items and bring back
    the removed ones."""
    if edits != "refuse" or not (out / INDEX_RUN_FILE).is_file():
        return
    built = load_index_run(out)
    if not built.edits:
        return
    added, removed = built.edit_counts()
    raise XmrError("the index at {out} was changed since its build ({added} item(s) added, {removed} removed) and "
                   "a rebuild from its source would undo that: pass {keep} to index the items it holds now (with "
                   "{rerank} for re-ranking structures), or {drop}", out=str(out), added=added, removed=removed,
                   keep=Param("edits", "keep"), rerank=Param("rerank"), drop=Param("edits", "drop"))


def _indexed_items(out: Path, run_dir: Path) -> tuple[list[Item], IndexRun, list[dict[str, str]]]:
    """The items the index at ``out`` holds now (by id), its record (its source, split, texts per
    item and edits are kept) and the items its builds left out (``skipped.jsonl``)."""
    if not (out / INDEX_RUN_FILE).is_file():
        raise XmrError("{keep} indexes the items of the index at {out}, but there is none; build one with {fix}",
                       keep=Param("edits", "keep"), out=str(out), fix=build_call(run_dir))
    built = read_index_run(out, run_dir)
    items = [it for it in open_gallery(out, hint="rebuild the index").items_by_id() if it is not None]
    if not items:
        raise XmrError("the index at {out} holds no items: nothing to index; add some with {add} or rebuild it with "
                       "{fix}", out=str(out), add=Call("add_to_index", Param("run_dir", str(run_dir)),
                                                         Param("manifest", "M")),
                       fix=build_call(run_dir, Param("edits", "drop")))
    return items, built, read_skipped(out / SKIPPED_FILE)


def make_index(factory: str, dim: int, model_id: str, search_params: Mapping[str, int] | None = None) -> Index:
    params = dict(search_params or {})
    try:
        if factory == FLAT and not params.get("refine"):
            return create_index("flat", dim=dim, model_id=model_id)
        return create_index("faiss", dim=dim, factory=factory, model_id=model_id, **params)
    except ValueError as e:  # the config's own check of the factory string (its fields kept)
        why, fields = (e.template, e.fields) if isinstance(e, XmrError) else ("{_why}", {"_why": str(e)})
        raise XmrError("{_factory} {_value}: " + why + "; e.g. Flat, HNSW32, IVF1024,Flat, auto",
                       _factory=Param("factory"), _value=repr(factory), **fields) from None


def resolve_factory(factory: str, n: int, dim: int, *, memory_budget: str | int | None,
                    search_params: Mapping[str, int] | None) -> tuple[str, dict[str, int], SideChoice]:
    """The factory and search parameters for ``n`` vectors, and what was chosen (for ``index_run.json``).

    ``"auto"`` asks :func:`~xmr.index.budget.choose_index` for the best index within ``memory_budget``
    (default: the machine's available memory); given ``search_params`` win over the choice's, and
    ``refine`` is dropped (with a note) where the choice is not a compressed IVF index.
    """
    params = dict(search_params or {})
    if factory != AUTO:
        return factory, params, SideChoice(factory)
    budget = parse_bytes(memory_budget) if memory_budget is not None else available_memory()
    choice = choose_index(max(n, 1), dim, budget)
    params.setdefault("nprobe", choice.nprobe)
    if choice.kind != "ivfpq" and params.pop("refine", 0):
        log.info("refine left out: %s is exact enough without it", choice.factory)
    return choice.factory, params, SideChoice(choice.factory, auto=True, budget=budget,
                                              estimated_bytes=choice.index_bytes, reason=choice.reason)


def available_memory() -> int:
    """``MemAvailable`` of ``/proc/meminfo`` (bytes), the default budget of ``factory="auto"``."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def cross_modal_recall(index: Index, images: np.ndarray, texts: np.ndarray,
                       check: CrossModalCheck | None = None) -> float | None:
    """Text->image recall@k of ``index`` (over ``images``) against exact inner-product search.

    Args:
        index: the built image index. images: its vectors, shape ``(n, dim)``, id = row.
        texts: query vectors (the gallery's texts), shape ``(m, dim)``.

    Returns:
        The mean overlap of the top-k sets, or None with no texts or images to check.
    """
    c = check or CrossModalCheck()
    if not len(texts) or not len(images):
        return None
    rng = np.random.default_rng(c.seed)
    q = texts[np.sort(rng.choice(len(texts), min(c.queries, len(texts)), replace=False))]
    k = min(c.k, len(images))
    _, exact = exact_top_k([(images, np.arange(len(images)))], q, k)
    return recall_at_k(index.search(q, k)[1], exact)


def index_run(run_dir: str | Path, job: IndexJob | None = None, *, runtime: Runtime | None = None) -> Path:
    """Build the gallery index of a run as ``job`` asks. Returns the index folder.

    Args:
        run_dir: a folder made by ``xmr train``.
        job: what to index and how (:class:`~xmr.workflows.index_job.IndexJob`; default: every item
            of the run's manifest, exact search, into ``<run_dir>/index``). With ``job.shards`` the
            index is built from feature shards (:func:`xmr.workflows.index_shards.index_shards`).
        runtime: the device and precision the encoders and the model run at (None: the CPU at fp32); the
            features and the indexed embeddings stay float32, re-ranking structures are built at fp32.

    Raises:
        XmrError: ``out_dir`` holds anything but an index of this run (it is never replaced
            then), or an edited index with ``edits="refuse"``, a bad factory string, an
            unreadable image (without ``skip_bad``).
    """
    job = job or IndexJob()
    if job.shards is not None:
        from xmr.workflows.index_shards import index_shards  # it builds on this module's helpers

        return index_shards(run_dir, job, runtime=runtime)
    runtime = runtime or CPU_FP32
    run_dir = Path(run_dir)
    rerankers = job.rerankers()
    cfg, model = load_run(run_dir)
    model.to(runtime.device)
    if job.index_factory != AUTO:  # a bad factory string fails now, not after encoding
        make_index(job.index_factory, model.config.embed_dim, model.model_id, job.search_params)
    out = job.out_folder(run_dir)
    check_index_target(out, run_dir, model.model_id)
    check_edits(out, job.edits)
    check_writable(out.parent, "index folder")
    scanned_out: tuple[dict[str, str], ...] = ()  # unreadable sub-folders and caption sidecars of an images folder
    skip_bad, gallery = job.skip_bad, []  # with kept edits: read under the lock below
    source = IndexRun(split=job.split, texts_per_item=job.texts_per_item)  # the fields the build keeps of its source
    if job.images is not None:
        scan = scan_folder(job.images, recursive=job.recursive)
        gallery, skip_bad, scanned_out = select_split(scan.items, job.split), True, scan.skipped
        source = dataclasses.replace(source, images=str(scan.root), recursive=job.recursive)
    elif job.edits != "keep":
        gallery = run_items(cfg, manifest=job.manifest, split=job.split, skip_bad=job.skip_bad)
        source = dataclasses.replace(source, manifest=job.manifest or cfg.manifest)
    tunings: dict[str, dict[Target, Tuning]] = {}
    if job.tune is not None:  # on the validation split of the run's dataset (or of the manifest indexed), first
        if job.images is not None and not cfg.manifest:
            raise XmrError("{tune} chooses re-ranking parameters on a split of the run's dataset, and {run} has none "
                           "(made from a pretrained pair without one; a folder of images is no set of pairs to score): "
                           "build without it (the method's defaults) or tune on a dataset's split: {call}",
                           tune=Param("tune", job.tune), run=str(run_dir),
                           call=Call("index_run", Param("run_dir", "RUN"), Param("manifest", "M"),
                                     Param("rerank", "NAME"), Param("tune", job.tune)))
        for proto in rerankers:
            with runtime.autocast():
                tunings[proto.name] = tune_reranker(cfg, model, proto, job.rerank_targets, split=job.tune,
                                                    fixed=job.tune_fixed, cache_dir=job.cache_dir,
                                                    show_progress=job.show_progress, manifest=job.manifest)
    with exclusive_lock(out.parent / f".{out.name}.lock", f"the index {out}"):
        check_edits(out, job.edits)  # again: an add may have ended meanwhile
        kept: list[dict[str, str]] = [*scanned_out]
        if job.edits == "keep":
            gallery, built, kept = _indexed_items(out, run_dir)
            source = IndexRun(manifest=built.manifest, images=built.images, recursive=built.recursive,
                              shards=built.shards, split=built.split, edits=built.edits,
                              texts_per_item=built.texts_per_item if job.texts_per_item is None else job.texts_per_item)
        fs = encode_items(gallery, **run_encoders(cfg, model.vocab, runtime),
                          cache_dir=job.cache_dir, texts_per_item=source.texts_per_item, allow_textless=True,
                          show_progress=job.show_progress, skip_bad=skip_bad)
        if kept:  # what the scan or an earlier build left out stays listed in skipped.jsonl
            fs = dataclasses.replace(fs, skipped=(*kept, *fs.skipped))
        _write_index(out, run_dir, model, fs, job, source, rerankers, tunings, runtime)
    log.info("indexed %d images and %d texts into %s%s", len(fs.items), len(fs.texts), out,
             f"; {len(fs.skipped)} unreadable image(s) left out (listed in {out / SKIPPED_FILE})" if fs.skipped else "")
    return out


def _write_index(out: Path, run_dir: Path, model: JointModel, fs: FeatureSet, job: IndexJob, source: IndexRun,
                 rerankers: Sequence[Reranker], tunings: Mapping[str, Mapping[Target, Tuning]],
                 runtime: Runtime = CPU_FP32) -> None:
    """Build the index folder beside ``out`` and swap it in (see the module docstring); its record is
    ``source`` (the gallery's source, split, texts per item, edits) with what this build made."""
    with atomic_folder(out) as tmp:
        dim = model.config.embed_dim
        embedded: dict[str, np.ndarray] = {}
        chosen: dict[Target, SideChoice] = {}
        indexes: dict[str, Index] = {}
        sides: tuple[tuple[Target, np.ndarray, Modality], ...] = (("images", fs.image_feats, "image"),
                                                                  ("texts", fs.text_feats, "text"))
        for name, feats, modality in sides:
            side_factory, params, chosen[name] = resolve_factory(
                job.index_factory, len(feats), dim, memory_budget=job.memory_budget, search_params=job.search_params)
            index = indexes[name] = make_index(side_factory, dim, model.model_id, params)
            with runtime.autocast():
                embedded[name] = model.embed_numpy(feats, modality)
            if len(feats):  # a gallery of bare images has an empty text index
                index.add(embedded[name])
            index.save(tmp / name)
        checks = _check_cross_modal(indexes["images"], embedded["images"], embedded["texts"], job.check)
        write_gallery(tmp / GALLERY_FILE, dict(enumerate(fs.items)), dict(enumerate(fs.texts)),
                      {i: fs.relevance[i].indices.tolist() for i in range(len(fs.items))})
        if fs.skipped:
            write_skipped(tmp / SKIPPED_FILE, fs.skipped)
        built = _build_rerank(tmp, rerankers, job.rerank_targets, fs, embedded["images"], embedded["texts"],
                              tunings, job.command)
        save_index_run(tmp, dataclasses.replace(
            source, run=str(run_dir.resolve()), model_id=model.model_id, factory=job.index_factory, chosen=chosen,
            checks=checks, search_params=dict(job.search_params), n_images=len(fs.items), n_texts=len(fs.texts),
            n_skipped=len(fs.skipped), rerank=built, fingerprint=index_fingerprint(tmp), command=job.command))
        check_index_target(out, run_dir, model.model_id)  # nothing new appeared there meanwhile


def _check_cross_modal(index: Index, images: np.ndarray, texts: np.ndarray,
                       check: CrossModalCheck | None) -> RecallCheck | None:
    """Measure a non-exact image index's text->image recall against exact search; warn when it is low."""
    c = check or CrossModalCheck()
    if index.config.factory == FLAT:
        return None
    got = cross_modal_recall(index, images, texts, c)
    if got is None:
        return None
    return warn_cross_modal(index, got, c, min(c.queries, len(texts)))


def warn_cross_modal(index: Index, got: float, c: CrossModalCheck, n_queries: int) -> RecallCheck:
    """Warn (naming a better setting) when the measured recall ``got`` is below ``c.min_recall``;
    the check ``index_run.json`` records."""
    if got < c.min_recall:
        cfg, kind = index.config, index.config.factory.upper()
        if cfg.refine == 0 and "IVF" in kind and ("PQ" in kind or "SQ" in kind):
            better = "rebuild with --refine 100 (exact re-scoring of the shortlist)"
        elif "HNSW" in kind and "IVF" not in kind:
            better = f"rebuild with --ef-search {max(2 * cfg.ef_search, 256)}"
        else:
            more_refine = f" or --refine {2 * cfg.refine}" if cfg.refine else ""
            better = f"rebuild with --nprobe {2 * cfg.nprobe}{more_refine}, or with --factory Flat if it fits"
        log.warning("the %s image index finds only %.2f of the exact text->image top-%d (recall@%d over %d gallery "
                    "texts; a compressed image index can lose the cross-modal neighbours first): %s",
                    cfg.factory, got, c.k, c.k, n_queries, better)
    return RecallCheck(c.k, round(got, 4), c.min_recall, got >= c.min_recall)


def check_index_target(out: Path, run_dir: Path, model_id: str) -> None:
    """Refuse an ``out`` (``IndexJob.out_dir``) whose replacement would lose anything but an old index of this run.

    Allowed: nothing there, an empty folder, or an xmr index folder (``index_run.json``) built
    from this run (same run folder, or same model id). Refused: the run folder itself or a
    folder holding it, a file, a symlink, any other folder, an index of another run.
    """
    where, run, given = out.resolve(), run_dir.resolve(), Param("out_dir", str(out))
    if where == run or where in run.parents:
        what = "is the run folder" if where == run else f"holds the run folder {run_dir}"
        raise XmrError("{out} {what}: replacing it would delete the run; give the index a folder of its own "
                       "(default {default})", out=given, what=what, default=str(run_dir / "index"))
    if not os.path.lexists(out):
        return
    if out.is_symlink() or not out.is_dir():
        raise XmrError("{out} exists and is not an xmr index folder; not replacing it", out=given)
    if not any(out.iterdir()):
        return
    if not (out / INDEX_RUN_FILE).is_file():
        raise XmrError("{out} is a folder that is not an xmr index (no {file}); not replacing it: remove it yourself "
                       "or pick another folder", out=given, file=INDEX_RUN_FILE)
    try:
        built = load_index_run(out)
    except XmrError as e:
        raise e.suffixed("; not replacing the folder {out}: remove it yourself or pick another folder",
                                      out=given) from None
    if built.run != str(run) and built.model_id != model_id:
        raise XmrError("{out} holds the index of another run ({other}); not replacing it: remove it yourself or "
                       "pick another folder", out=given, other=str(built.run))


def _build_rerank(index_dir: Path, rerankers: Sequence[Reranker], targets: Sequence[Target], fs: FeatureSet,
                  images: np.ndarray, texts: np.ndarray, tunings: Mapping[str, Mapping[Target, Tuning]],
                  command: str | None) -> dict[str, RerankBuilt]:
    """Fit each re-ranker for each target (with its tuned parameters where it was tuned) and save it
    under ``<index_dir>/rerank`` (its ``tuning.json`` beside); what was built."""
    if not rerankers:
        return {}
    fingerprint = index_fingerprint(index_dir)
    gallery = GalleryVectors(images, texts, image_feats=fs.image_feats, text_feats=fs.text_feats,
                             pairs=first_text_pairs([it.texts for it in fs.items], fs.texts))
    built: dict[str, RerankBuilt] = {}
    for proto in rerankers:
        tuned = tunings.get(proto.name, {})
        params: dict[Target, dict[str, object]] = {}
        for target in dict.fromkeys(targets):
            chosen = tuned[target].chosen if target in tuned else proto
            rr = chosen.unfitted_copy().fit(gallery, target=target)
            rr.fingerprint = fingerprint
            folder = rr.save(rerank_dir(index_dir, rr.name, target))
            if target in tuned:
                save_tuning(folder, tuned[target], command)
            params[target] = params_dict(chosen.params)
            log.info("built %s re-ranking structures for %d %s", rr.name, rr.n_gallery, target)
        built[proto.name] = RerankBuilt(
            tuple(dict.fromkeys(targets)), params_dict(proto.params),
            {t: TunedRerank(tu.split, params[t], tu.chosen_score, tu.plain["score"], tu.helps)
             for t, tu in tuned.items()})
    return built
