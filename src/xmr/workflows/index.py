"""``xmr index``: embed a gallery with a trained run and index its images and texts with FAISS.

Index folder layout (default ``<run>/index``)::

    images/            index.faiss + index.json (IndexConfig with the model id and dimension)
    texts/             the same for the gallery's distinct texts
    gallery.sqlite     the indexed items and texts by index id (:mod:`xmr.data.gallery_store`;
                       folders built before it hold gallery.jsonl + texts.json, still read)
    index_run.json     what built it: run, model id, manifest (or images folder), split, factory,
                       re-ranking, command; ``edits``: what ``xmr index add/remove`` changed since
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
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from xmr.data.folder import scan_folder
from xmr.data.gallery_store import GALLERY_FILE, open_gallery, write_gallery
from xmr.data.manifest import Item, select_split
from xmr.errors import XmrError
from xmr.index import Index, create_index
from xmr.index.budget import choose_index, parse_bytes
from xmr.index.exact import exact_top_k, recall_at_k
from xmr.modality import Modality, Target, check_target
from xmr.models import JointModel
from xmr.rerank.registry import (
    GalleryVectors,
    Reranker,
    create_reranker,
    first_text_pairs,
    index_fingerprint,
    rerank_dir,
)
from xmr.runs.config import load_run, run_encoders, run_items
from xmr.utils.folders import atomic_folder, exclusive_lock
from xmr.utils.io import check_writable, load_json, save_json
from xmr.workflows.features import SKIPPED_FILE, FeatureSet, encode_items, read_skipped, write_skipped
from xmr.workflows.tune import Tuning, save_tuning, tune_reranker

log = logging.getLogger(__name__)

INDEX_RUN_FILE = "index_run.json"


AUTO = "auto"

Edits = Literal["refuse", "keep", "drop"]
EDITS: tuple[Edits, ...] = typing.get_args(Edits)


def read_index_run(idx: Path, run_dir: Path) -> dict[str, object]:
    """The ``index_run.json`` of the index at ``idx``: what built it and what changed it since.

    Raises:
        XmrError: no index there, or a file that is not an index description (naming ``run_dir``'s rebuild).
    """
    if not (idx / INDEX_RUN_FILE).is_file():
        raise XmrError(f"no index at {idx}; build one with `xmr index {run_dir}`")
    built = load_json(idx / INDEX_RUN_FILE)
    if not isinstance(built, dict):
        raise XmrError(f"{idx / INDEX_RUN_FILE}: not an index description; rebuild with `xmr index {run_dir}`")
    return built


def check_edits(out: Path, edits: Edits) -> None:
    """Refuse (``edits="refuse"``) to replace an index that ``xmr index add`` / ``remove`` changed:
    a rebuild from its source would silently lose the added items and bring back the removed ones."""
    if edits != "refuse" or not (out / INDEX_RUN_FILE).is_file():
        return
    built = load_json(out / INDEX_RUN_FILE)
    changes = built.get("edits") if isinstance(built, dict) else None
    if not isinstance(changes, list) or not changes:
        return
    counts = {kind: sum(int(e.get("images", 0)) for e in changes if isinstance(e, dict) and kind in e)
              for kind in ("add", "remove")}
    raise XmrError(f"the index at {out} was changed by `xmr index add/remove` ({counts['add']} item(s) added, "
                   f"{counts['remove']} removed) and a rebuild from its source would undo that: give --keep-edits to "
                   "index the items it holds now (with --rerank for re-ranking structures), or --drop-edits")


def _indexed_items(out: Path, run_dir: Path) -> tuple[list[Item], dict[str, object], list[dict[str, str]]]:
    """The items the index at ``out`` holds now (by id), what ``index_run.json`` says of its source,
    split, texts per item and edits, and the items its builds left out (``skipped.jsonl``)."""
    if not (out / INDEX_RUN_FILE).is_file():
        raise XmrError(f"--keep-edits indexes the items of the index at {out}, but there is none; build one with "
                       f"`xmr index {run_dir}`")
    built = read_index_run(out, run_dir)
    items = [it for it in open_gallery(out, hint=f"rebuild with `xmr index {run_dir}`").items_by_id()
             if it is not None]
    if not items:
        raise XmrError(f"the index at {out} holds no items: nothing to index; add some with `xmr index add` or "
                       f"rebuild it with `xmr index {run_dir} --drop-edits`")
    kept = ("manifest", "images", "recursive", "shards", "split", "texts_per_item", "edits")
    source: dict[str, object] = {k: built[k] for k in kept if k in built}
    return items, source, read_skipped(out / SKIPPED_FILE)


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


def make_index(factory: str, dim: int, model_id: str, search_params: Mapping[str, int] | None = None) -> Index:
    params = dict(search_params or {})
    try:
        if factory == "Flat" and not params.get("refine"):
            return create_index("flat", dim=dim, model_id=model_id)
        return create_index("faiss", dim=dim, factory=factory, model_id=model_id, **params)
    except ValueError as e:  # the config's own check of the factory string
        raise XmrError(f"--factory {factory!r}: {e}; e.g. Flat, HNSW32, IVF1024,Flat, auto") from None


def resolve_factory(factory: str, n: int, dim: int, *, memory_budget: str | int | None,
                    search_params: Mapping[str, int] | None) -> tuple[str, dict[str, int], dict[str, object]]:
    """The factory and search parameters for ``n`` vectors, and what was chosen (for ``index_run.json``).

    ``"auto"`` asks :func:`~xmr.index.budget.choose_index` for the best index within ``memory_budget``
    (default: the machine's available memory); given ``search_params`` win over the choice's, and
    ``refine`` is dropped (with a note) where the choice is not a compressed IVF index.
    """
    params = dict(search_params or {})
    if factory != AUTO:
        return factory, params, {"factory": factory}
    budget = parse_bytes(memory_budget) if memory_budget is not None else available_memory()
    choice = choose_index(max(n, 1), dim, budget)
    params.setdefault("nprobe", choice.nprobe)
    if choice.kind != "ivfpq" and params.pop("refine", 0):
        log.info("--refine left out: %s is exact enough without it", choice.factory)
    return choice.factory, params, {"factory": choice.factory, "auto": True, "budget": budget,
                                    "estimated_bytes": choice.index_bytes, "reason": choice.reason}


def available_memory() -> int:
    """``MemAvailable`` of ``/proc/meminfo`` (bytes), the default budget of ``--factory auto``."""
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


def index_run(run_dir: str | Path, *, manifest: str | None = None, split: str | None = None,
              factory: str = "Flat", texts_per_item: int | None = None, out_dir: str | Path | None = None,
              cache_dir: str | Path | None = None, rerank: Sequence[str | Reranker] = (),
              rerank_targets: Sequence[Target] = ("images",),
              command: str | None = None, show_progress: bool | None = None, skip_bad: bool = False,
              images: str | Path | None = None, recursive: bool = False, tune: str | None = None,
              search_params: Mapping[str, int] | None = None,
              tune_fixed: Collection[str] = (), memory_budget: str | int | None = None,
              check: CrossModalCheck | None = None, edits: Edits = "refuse") -> Path:
    """Build the gallery index of a run. Returns the index folder.

    Args:
        run_dir: a folder made by ``xmr train``.
        manifest: the gallery manifest (default: the run's own).
        images: instead of a manifest, a folder of images (:func:`xmr.data.folder.scan_folder`: ids
            are relative paths, texts from optional sidecars); its unreadable files are left out,
            counted and listed in ``skipped.jsonl`` (``skip_bad`` is implied).
        recursive: with ``images``, also its sub-folders.
        tune: choose each re-ranker's parameters on this split of the run (``"val"``; see
            :mod:`xmr.workflows.tune`) before building its structures; the choice and every score
            go to ``rerank/<name>/<target>/tuning.json``. The test split is refused.
        tune_fixed: parameters the user set (``--rerank-param``): kept, not tuned.
        split: index only this split (default: every item).
        factory: a FAISS index_factory string; ``Flat`` is exact search; ``auto``: the best index
            within ``memory_budget`` (:func:`resolve_factory`), chosen per side for its count.
        memory_budget: with ``factory="auto"``: bytes or a size such as ``"2GB"`` (default: the
            memory available now).
        check: the text->image recall check of a non-exact image index (:class:`CrossModalCheck`):
            measured at build time, recorded in ``index_run.json``, warned about below its threshold.
        search_params: the index's query-time settings, ``ef_search`` (HNSW beam width),
            ``nprobe`` (IVF lists visited) and ``refine`` (shortlist re-scored exactly from a
            memory-mapped store of the vectors; IVF indexes); absent: :class:`~xmr.index.config.IndexConfig`'s defaults.
            Saved with the index, so every search of it (``xmr search``, ``xmr serve``) uses them.
        texts_per_item: index only each item's first texts (e.g. 1: the caption, not keywords).
        out_dir: where to write (default ``<run_dir>/index``).
        rerank: re-ranking methods to build structures for, by name (default parameters) or as
            unfitted re-rankers (see :func:`xmr.rerank.registry.create_reranker`); they are fit
            on the gallery's embeddings and the encoders' own features, no re-encoding later.
        rerank_targets: which side each method re-orders: ``"images"`` (text and image queries
            over the images) and/or ``"texts"``.
        skip_bad: index around unreadable images (listed in ``skipped.jsonl``) instead of refusing.
        edits: what becomes of the items ``xmr index add`` / ``remove`` changed in the index at
            ``out_dir``: ``"refuse"`` to replace such an index, ``"keep"``: index the items it
            holds now (its source, split and texts per item, the edit history kept; no
            ``manifest``, ``images`` or ``split`` then), ``"drop"``: rebuild from the source anyway.

    Raises:
        XmrError: ``out_dir`` holds anything but an index of this run (it is never replaced
            then), or an edited index without ``edits``, a bad factory string or option, an
            unreadable image (without ``skip_bad``).
    """
    run_dir = Path(run_dir)
    if images is not None and manifest is not None:
        raise XmrError("give a gallery --manifest or an --images folder, not both")
    rerankers = [create_reranker(r) if isinstance(r, str) else r for r in rerank]
    for t in rerank_targets:
        check_target(t, "re-ranking target")
    if texts_per_item is not None and texts_per_item < 1:
        raise XmrError(f"texts_per_item must be >= 1 (or None for all), got {texts_per_item}")
    if tune is not None and not rerankers:
        raise XmrError("--tune chooses re-ranking parameters: give the method with --rerank NAME")
    if edits not in EDITS:
        raise XmrError(f"edits must be one of {', '.join(EDITS)}, got {edits!r}")
    if edits == "keep" and (manifest is not None or images is not None or split is not None):
        raise XmrError("--keep-edits indexes the items the index holds now: leave out --manifest, --images and --split")
    cfg, model = load_run(run_dir)
    # a bad factory string or budget fails now, not after encoding
    if factory == AUTO:
        if memory_budget is not None:
            parse_bytes(memory_budget)
    else:
        if memory_budget is not None:
            raise XmrError(f"--memory-budget chooses the index: give it with --factory auto, not {factory!r}")
        make_index(factory, model.config.embed_dim, model.model_id, search_params)
    out = Path(out_dir) if out_dir else run_dir / "index"
    check_index_target(out, run_dir, model.model_id)
    check_edits(out, edits)
    check_writable(out.parent, "index folder")
    scanned_out: tuple[dict[str, str], ...] = ()  # unreadable sub-folders and caption sidecars of --images
    if edits == "keep":  # read under the lock below
        gallery, source = [], {}
    elif images is not None:
        scan = scan_folder(images, recursive=recursive)
        gallery, skip_bad, scanned_out = select_split(scan.items, split), True, scan.skipped
        source = {"images": str(scan.root), "recursive": recursive}
    else:
        gallery = run_items(cfg, manifest=manifest, split=split, skip_bad=skip_bad)
        source = {"manifest": manifest or cfg.manifest}
    tunings: dict[str, dict[Target, Tuning]] = {}
    if tune is not None:  # on the run's own validation split, before the gallery is touched
        for proto in rerankers:
            tunings[proto.name] = tune_reranker(cfg, model, proto, rerank_targets, split=tune, fixed=tune_fixed,
                                                cache_dir=cache_dir, show_progress=show_progress)
    with exclusive_lock(out.parent / f".{out.name}.lock", f"the index {out}"):
        check_edits(out, edits)  # again: an `xmr index add` may have ended meanwhile
        kept: list[dict[str, str]] = [*scanned_out]
        if edits == "keep":
            gallery, source, kept = _indexed_items(out, run_dir)
            split = typing.cast(str | None, source.pop("split", None))
            if texts_per_item is None:
                texts_per_item = typing.cast(int | None, source.pop("texts_per_item", None))
            source.pop("texts_per_item", None)
        fs = encode_items(gallery, **run_encoders(cfg, model.vocab),
                          cache_dir=cache_dir, texts_per_item=texts_per_item, allow_textless=True,
                          show_progress=show_progress, skip_bad=skip_bad)
        if kept:  # what the scan or an earlier build left out stays listed in skipped.jsonl
            fs = dataclasses.replace(fs, skipped=(*kept, *fs.skipped))
        _write_index(out, run_dir, model, fs, factory=factory, source=source, split=split,
                     rerankers=rerankers, rerank_targets=rerank_targets, command=command, tunings=tunings,
                     search_params=search_params, memory_budget=memory_budget, check=check,
                     texts_per_item=texts_per_item)
    log.info("indexed %d images and %d texts into %s%s", len(fs.items), len(fs.texts), out,
             f"; {len(fs.skipped)} unreadable image(s) left out (listed in {out / SKIPPED_FILE})" if fs.skipped else "")
    return out


def _write_index(out: Path, run_dir: Path, model: JointModel, fs: FeatureSet, *, factory: str,
                 source: dict[str, object], split: str | None, rerankers: Sequence[Reranker],
                 rerank_targets: Sequence[Target], command: str | None,
                 tunings: Mapping[str, Mapping[Target, Tuning]] | None = None,
                 search_params: Mapping[str, int] | None = None, memory_budget: str | int | None = None,
                 check: CrossModalCheck | None = None, texts_per_item: int | None = None) -> None:
    """Build the index folder beside ``out`` and swap it in (see the module docstring)."""
    with atomic_folder(out) as tmp:
        dim = model.config.embed_dim
        embedded, chosen, indexes = {}, {}, {}
        sides: tuple[tuple[str, np.ndarray, Modality], ...] = (("images", fs.image_feats, "image"),
                                                               ("texts", fs.text_feats, "text"))
        for name, feats, modality in sides:
            side_factory, params, chosen[name] = resolve_factory(
                factory, len(feats), dim, memory_budget=memory_budget, search_params=search_params)
            index = indexes[name] = make_index(side_factory, dim, model.model_id, params)
            embedded[name] = model.embed_numpy(feats, modality)
            if len(feats):  # a gallery of bare images has an empty text index
                index.add(embedded[name])
            index.save(tmp / name)
        checks = _check_cross_modal(indexes["images"], embedded["images"], embedded["texts"], check)
        write_gallery(tmp / GALLERY_FILE, dict(enumerate(fs.items)), dict(enumerate(fs.texts)),
                      {i: fs.relevance[i].indices.tolist() for i in range(len(fs.items))})
        if fs.skipped:
            write_skipped(tmp / SKIPPED_FILE, fs.skipped)
        built = _build_rerank(tmp, rerankers, rerank_targets, fs, embedded["images"], embedded["texts"],
                              tunings or {}, command)
        save_json(tmp / INDEX_RUN_FILE, {"run": str(run_dir.resolve()), "model_id": model.model_id,
                                         **source, "split": split,
                                         "factory": factory, "chosen": chosen, "checks": checks,
                                         "texts_per_item": texts_per_item, "search_params": dict(search_params or {}),
                                         "n_images": len(fs.items),
                                         "n_texts": len(fs.texts), "n_skipped": len(fs.skipped), "rerank": built,
                                         "fingerprint": index_fingerprint(tmp), "command": command})
        check_index_target(out, run_dir, model.model_id)  # nothing new appeared there meanwhile


def _check_cross_modal(index: Index, images: np.ndarray, texts: np.ndarray,
                       check: CrossModalCheck | None) -> dict[str, object]:
    """Measure a non-exact image index's text->image recall against exact search; warn when it is low."""
    c = check or CrossModalCheck()
    if index.config.factory == "Flat":
        return {}
    got = cross_modal_recall(index, images, texts, c)
    if got is None:
        return {}
    return warn_cross_modal(index, got, c, min(c.queries, len(texts)))


def warn_cross_modal(index: Index, got: float, c: CrossModalCheck, n_queries: int) -> dict[str, object]:
    """Warn (naming a better setting) when the measured recall ``got`` is below ``c.min_recall``;
    the entry ``index_run.json`` records."""
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
    return {f"text_to_image_recall@{c.k}": round(got, 4), "min_recall": c.min_recall, "ok": got >= c.min_recall}


def check_index_target(out: Path, run_dir: Path, model_id: str) -> None:
    """Refuse an ``--out`` whose replacement would lose anything but an old index of this run.

    Allowed: nothing there, an empty folder, or an xmr index folder (``index_run.json``) built
    from this run (same run folder, or same model id). Refused: the run folder itself or a
    folder holding it, a file, a symlink, any other folder, an index of another run.
    """
    where, run = out.resolve(), run_dir.resolve()
    if where == run or where in run.parents:
        what = "is the run folder" if where == run else f"holds the run folder {run_dir}"
        raise XmrError(f"--out {out} {what}: replacing it would delete the run; give the index a folder of its own "
                       f"(default {run_dir / 'index'})")
    if not os.path.lexists(out):
        return
    if out.is_symlink() or not out.is_dir():
        raise XmrError(f"--out {out} exists and is not an xmr index folder; not replacing it")
    if not any(out.iterdir()):
        return
    if not (out / INDEX_RUN_FILE).is_file():
        raise XmrError(f"--out {out} is a folder that is not an xmr index (no {INDEX_RUN_FILE}); "
                       "not replacing it: remove it yourself or pick another folder")
    built = load_json(out / INDEX_RUN_FILE)
    if not isinstance(built, dict):
        raise XmrError(f"--out {out}: {INDEX_RUN_FILE} is not an index description; not replacing the folder: "
                       "remove it yourself or pick another folder")
    if built.get("run") != str(run) and built.get("model_id") != model_id:
        raise XmrError(f"--out {out} holds the index of another run ({built.get('run')}); not replacing it: remove "
                       "it yourself or pick another folder")


def _build_rerank(index_dir: Path, rerankers: Sequence[Reranker], targets: Sequence[Target], fs: FeatureSet,
                  images: np.ndarray, texts: np.ndarray, tunings: Mapping[str, Mapping[Target, Tuning]],
                  command: str | None) -> dict[str, dict[str, object]]:
    """Fit each re-ranker for each target (with its tuned parameters where it was tuned) and save it
    under ``<index_dir>/rerank`` (its ``tuning.json`` beside); what was built."""
    if not rerankers:
        return {}
    fingerprint = index_fingerprint(index_dir)
    gallery = GalleryVectors(images, texts, image_feats=fs.image_feats, text_feats=fs.text_feats,
                             pairs=first_text_pairs([it.texts for it in fs.items], fs.texts))
    built: dict[str, dict[str, object]] = {}
    for proto in rerankers:
        tuned = tunings.get(proto.name, {})
        params: dict[str, object] = {}
        for target in dict.fromkeys(targets):
            chosen = tuned[target].chosen if target in tuned else proto
            rr = chosen.unfitted_copy().fit(gallery, target=target)
            rr.fingerprint = fingerprint
            folder = rr.save(rerank_dir(index_dir, rr.name, target))
            if target in tuned:
                save_tuning(folder, tuned[target], command)
            params[target] = chosen.params
            log.info("built %s re-ranking structures for %d %s", rr.name, rr.n_gallery, target)
        entry: dict[str, object] = {"targets": list(dict.fromkeys(targets)), "params": proto.params}
        if tuned:
            entry["tuned"] = {t: {"split": tu.split, "params": params[t], "score": tu.chosen_score,
                                  "plain": tu.plain["score"], "helps": tu.helps} for t, tu in tuned.items()}
        built[proto.name] = entry
    return built
