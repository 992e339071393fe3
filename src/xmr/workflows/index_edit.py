"""``xmr index add`` / ``xmr index remove``: change a built index without rebuilding it.

Both keep every other item's id (image index id = gallery row id, never reused) and are atomic:
the new folder is assembled beside the old one -- unchanged files hard-linked, the indexes and
``gallery.sqlite`` written anew (a refined index's vector store is linked and extended, see
:mod:`xmr.index.vector_store`) -- and swapped in at the end, so a crash (``kill -9``) at any
point leaves the previous index whole and loadable. Everything an edit reads of the index
(``index_run.json``, the gallery, the vectors) is read under the lock ``xmr index`` writes it
under, so an edit racing a rebuild extends the index that is there. Re-ranking structures
describe the old gallery: they are left out of the new folder and named in ``index_run.json``
(``rerank_stale``); ``xmr index RUN --keep-edits --rerank NAME`` builds them again over the items
the index holds (:func:`xmr.workflows.index.index_run` with ``IndexJob(edits="keep", rerank=...)``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmr.data.gallery_store import GALLERY_FILE, open_gallery, write_gallery
from xmr.errors import Call, Param, XmrError
from xmr.index import Index, load_index
from xmr.index.run_record import INDEX_RUN_FILE, IndexChange, IndexRun, save_index_run
from xmr.rerank.registry import index_fingerprint
from xmr.runs.config import load_run, run_encoders, run_items
from xmr.runtime.device import CPU_FP32, Runtime
from xmr.utils.faults import crash_point
from xmr.utils.folders import atomic_folder, exclusive_lock
from xmr.workflows.features import SKIPPED_FILE, encode_items, read_skipped, write_skipped
from xmr.workflows.index import build_call, read_index_run

log = logging.getLogger(__name__)

_REWRITTEN = {"images", "texts", GALLERY_FILE, "gallery.jsonl", "texts.json", INDEX_RUN_FILE, "rerank"}


@dataclass(frozen=True)
class IndexEdit:
    """What an add or remove changed: counts before and after, and the re-rankers left stale."""

    index_dir: Path
    images: int
    texts: int
    n_images: int
    n_texts: int
    rerank_stale: tuple[str, ...]
    skipped: int = 0


def _open(run_dir: Path, index_dir: str | Path | None, model_id: str | None = None) -> tuple[Path, IndexRun]:
    """The index folder and its record; with ``model_id``, refused unless the index is that model's."""
    idx = Path(index_dir) if index_dir else run_dir / "index"
    built = read_index_run(idx, run_dir)
    if model_id is not None and built.model_id not in (None, model_id):
        raise XmrError("the index at {idx} was built with model {theirs} (run {other}), the run {run}'s is {ours}: "
                       "name the index's own run, or rebuild the index with {fix}", idx=str(idx),
                       theirs=repr(built.model_id), other=str(built.run), run=str(run_dir), ours=repr(model_id),
                       fix=build_call(run_dir))
    return idx, built


def _lock(idx: Path) -> contextlib.AbstractContextManager[None]:
    """The lock ``xmr index`` holds while it builds ``idx``: an edit reads and writes the index under it."""
    return exclusive_lock(idx.parent / f".{idx.name}.lock", f"the index {idx}")


def _link_tree(src: Path, dst: Path) -> None:
    """Hard links in ``dst`` of every file under ``src`` but the ones an edit rewrites."""
    for name in os.listdir(src):
        if name in _REWRITTEN or name.startswith("."):
            continue
        s, d = src / name, dst / name
        if s.is_dir():
            d.mkdir()
            _link_tree(s, d)
        else:
            try:
                os.link(s, d)
            except OSError:  # another filesystem, or links not allowed: a copy
                shutil.copy2(s, d)


def _finish(tmp: Path, idx: Path, built: IndexRun, images: Index, texts: Index, edit: IndexChange,
            skipped: Sequence[dict[str, str]] = ()) -> None:
    """Save the edited indexes and the record (the edit appended, the re-rankers named stale) into ``tmp``."""
    images.save(tmp / "images")
    texts.save(tmp / "texts")
    if skipped:  # listed after the build's own: a new file in the new folder, the old one's link untouched
        write_skipped(tmp / SKIPPED_FILE, [*read_skipped(idx / SKIPPED_FILE), *skipped])
    save_index_run(tmp, dataclasses.replace(
        built, n_images=len(images), n_texts=len(texts), rerank={},
        rerank_stale=tuple(sorted({*built.rerank, *built.rerank_stale})), edits=(*built.edits, edit),
        n_skipped=built.n_skipped + len(skipped), fingerprint=index_fingerprint(tmp)))
    crash_point("index-edit-before-swap")


def add_to_index(run_dir: str | Path, manifest: str, *, index_dir: str | Path | None = None,
                 split: str | None = None, cache_dir: str | Path | None = None, skip_bad: bool = False,
                 command: str | None = None, show_progress: bool | None = None,
                 runtime: Runtime | None = None) -> IndexEdit:
    """Encode the items of ``manifest`` with the run and add them to its index.

    ``runtime``: the device and precision the encoders and the model run at (None: the CPU at fp32); the
    index's embeddings stay float32.

    New items get the next free image ids; their texts not yet in the gallery get new text ids
    (texts already there are shared). The index keeps its structure (an IVF index is not
    retrained: its lists were trained on the first gallery).

    Raises:
        XmrError: no index, an index of another model, an item id already in the gallery (named),
            an unreadable image (without ``skip_bad``).
    """
    run_dir, runtime = Path(run_dir), runtime or CPU_FP32
    cfg, model = load_run(run_dir)
    model.to(runtime.device)
    idx, _ = _open(run_dir, index_dir, model.model_id)  # fail fast; read again under the lock
    items = run_items(cfg, manifest=manifest, split=split, skip_bad=skip_bad)
    with _lock(idx):  # what the index is, is read under the lock it is written under (a rebuild may just have ended)
        idx, built = _open(run_dir, index_dir, model.model_id)
        gallery = open_gallery(idx, hint="rebuild the index")
        there = [it.id for it in items if gallery.position(it.id) is not None]
        if there:
            more = f" and {len(there) - 1} more" if len(there) > 1 else ""
            raise XmrError("item {item}{more} of {manifest} is already in the index at {idx}; remove it first "
                           "({fix}) or leave it out", item=repr(there[0]), more=more, manifest=str(manifest),
                           idx=str(idx), fix=Call("remove_from_index", Param("run_dir", str(run_dir)),
                                                  Param("item_ids", (there[0],))))
        fs = encode_items(items, **run_encoders(cfg, model.vocab, runtime), cache_dir=cache_dir,
                          texts_per_item=built.texts_per_item, allow_textless=True,
                          show_progress=show_progress, skip_bad=skip_bad)
        dim = model.config.embed_dim
        images = load_index(idx / "images", expect_dim=dim, expect_model_id=model.model_id)
        texts = load_index(idx / "texts", expect_dim=dim, expect_model_id=model.model_id)
        image_ids = images.new_ids(len(fs.items))
        known = {t: j for j, t in enumerate(gallery.texts_by_id()) if t is not None}
        fresh = [j for j, t in enumerate(fs.texts) if t not in known]
        text_ids = texts.new_ids(len(fresh))
        new_text_id = {fs.texts[j]: int(i) for j, i in zip(fresh, text_ids, strict=True)}
        item_texts = {int(image_ids[i]): [known.get(fs.texts[j], new_text_id.get(fs.texts[j], -1))
                                          for j in fs.relevance[i].indices] for i in range(len(fs.items))}
        stale = tuple(built.rerank)
        with atomic_folder(idx) as tmp:
            _link_tree(idx, tmp)
            with runtime.autocast():
                embedded = (model.embed_numpy(fs.image_feats, "image") if len(fs.items) else None,
                            model.embed_numpy(fs.text_feats[fresh], "text") if fresh else None)
            if embedded[0] is not None:
                images.add(embedded[0], ids=image_ids)
            if embedded[1] is not None:
                texts.add(embedded[1], ids=text_ids)
            base = idx / GALLERY_FILE if (idx / GALLERY_FILE).is_file() else None
            old_items, old_texts = ({}, {}) if base else (
                {i: it for i, it in enumerate(gallery.items_by_id()) if it is not None},
                {j: t for j, t in enumerate(gallery.texts_by_id()) if t is not None})
            old_links = {} if base else gallery.item_texts()
            write_gallery(tmp / GALLERY_FILE,
                          {**old_items, **{int(i): it for i, it in zip(image_ids, fs.items, strict=True)}},
                          {**old_texts, **{i: t for t, i in new_text_id.items()}},
                          {**old_links, **item_texts}, base=base)
            _finish(tmp, idx, built, images, texts, IndexChange("add", str(manifest), len(fs.items), len(fresh),
                                                                skipped=len(fs.skipped), command=command),
                    fs.skipped)
    log.info("added %d images and %d texts to %s%s", len(fs.items), len(fresh), idx,
             f"; {len(fs.skipped)} unreadable image(s) left out (listed in {idx / SKIPPED_FILE})" if fs.skipped else "")
    return IndexEdit(idx, len(fs.items), len(fresh), len(images), len(texts), stale, len(fs.skipped))


def remove_from_index(run_dir: str | Path, item_ids: Sequence[str], *, index_dir: str | Path | None = None,
                      command: str | None = None) -> IndexEdit:
    """Remove the items named ``item_ids`` (their ``id`` field) from the run's index, with every
    text no remaining item carries.

    Raises:
        XmrError: no run, no index, an index of another model than the run's, no ids, an id that is
            not in the index (named; nothing is removed).
    """
    run_dir = Path(run_dir)
    if not item_ids:
        raise XmrError("name the items to remove by their ids")
    if len(set(item_ids)) != len(item_ids):
        dup = next(i for i in item_ids if list(item_ids).count(i) > 1)
        raise XmrError("item {item} is named twice", item=repr(dup))
    _, model = load_run(run_dir)  # the run named must be the index's: its model built the vectors
    idx, _ = _open(run_dir, index_dir, model.model_id)
    with _lock(idx):  # read under the lock it is written under (a rebuild may just have ended)
        idx, built = _open(run_dir, index_dir, model.model_id)
        gallery = open_gallery(idx, hint="rebuild the index")
        positions = [gallery.position(i) for i in item_ids]
        missing = [i for i, p in zip(item_ids, positions, strict=True) if p is None]
        if missing:
            more = f" ({len(missing)} of {len(item_ids)} are not)" if len(missing) > 1 else ""
            raise XmrError("item {item} is not in the index at {idx}{more}; nothing was removed",
                           item=repr(missing[0]), idx=str(idx), more=more)
        gone = {int(p) for p in positions if p is not None}
        links = gallery.item_texts()
        carried = {j for i, js in links.items() if i not in gone for j in js}
        texts_gone = sorted({j for i in gone for j in links.get(i, ())} - carried)
        stale = tuple(built.rerank)
        dim = model.config.embed_dim
        images = load_index(idx / "images", expect_dim=dim, expect_model_id=model.model_id)
        texts = load_index(idx / "texts", expect_dim=dim, expect_model_id=model.model_id)
        with atomic_folder(idx) as tmp:
            _link_tree(idx, tmp)
            images.remove(np.array(sorted(gone), dtype=np.int64))
            if texts_gone:
                texts.remove(np.array(texts_gone, dtype=np.int64))
            base = idx / GALLERY_FILE if (idx / GALLERY_FILE).is_file() else None
            if base is not None:
                write_gallery(tmp / GALLERY_FILE, {}, {}, {}, base=base, remove_items=gone, remove_texts=texts_gone)
            else:  # a folder from before the store: written as one now
                write_gallery(tmp / GALLERY_FILE,
                              {i: it for i, it in enumerate(gallery.items_by_id()) if it is not None and i not in gone},
                              {j: t for j, t in enumerate(gallery.texts_by_id())
                               if t is not None and j not in set(texts_gone)},
                              {i: js for i, js in links.items() if i not in gone})
            _finish(tmp, idx, built, images, texts,
                    IndexChange("remove", tuple(item_ids), len(gone), len(texts_gone), command=command))
    log.info("removed %d images and %d texts from %s", len(gone), len(texts_gone), idx)
    return IndexEdit(idx, len(gone), len(texts_gone), len(images), len(texts), stale)
