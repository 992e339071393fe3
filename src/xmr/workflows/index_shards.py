"""``xmr index RUN --shards DIR``: index the feature shards ``xmr encode --shards`` (or ``--engine ray``)
wrote, one shard at a time: the gallery's vectors are never all in RAM (its metadata is).

The image index is built by :func:`xmr.index.build.build_index` (a seeded training sample drawn
over every shard, then the shards added in order; a refined index's float16 store goes straight
to disk); distinct texts get their ids in order of first appearance, as the in-memory build gives
them. Image ids are the items' order across the shards, so the index equals ``xmr index RUN
--manifest M`` over the same manifest (tested).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from xmr.data.gallery_store import GALLERY_FILE, write_gallery
from xmr.data.manifest import Item
from xmr.errors import Param, XmrError
from xmr.index import Index
from xmr.index.budget import AutoIndexConfig
from xmr.index.build import build_index
from xmr.index.exact import TopK, recall_at_k
from xmr.index.run_record import IndexRun, RecallCheck, SideChoice, save_index_run
from xmr.modality import Target
from xmr.models import JointModel
from xmr.rerank.registry import index_fingerprint
from xmr.runs.config import load_run
from xmr.runtime.device import CPU_FP32, Runtime
from xmr.utils.folders import atomic_folder, exclusive_lock
from xmr.utils.io import check_writable
from xmr.workflows.features import FeatureSet
from xmr.workflows.index import (
    CrossModalCheck,
    IndexJob,
    check_edits,
    check_index_target,
    make_index,
    resolve_factory,
    warn_cross_modal,
)
from xmr.workflows.shards import iter_shards, read_plan

log = logging.getLogger(__name__)


def _check_shard(fs: FeatureSet, p: int, folder: Path, model: JointModel) -> None:
    want = model.config.image_dim, model.config.text_dim
    got = fs.image_feats.shape[1], fs.text_feats.shape[1] if len(fs.texts) else want[1]
    if got != want:
        raise XmrError(f"{folder}/part-{p:05d}.npz holds {got[0]}-d image and {got[1]}-d text features, the run's "
                       f"model takes {want[0]}-d and {want[1]}-d: these shards come from other encoders")


def index_shards(run_dir: str | Path, job: IndexJob, *, runtime: Runtime | None = None) -> Path:
    """Build the run's gallery index from the folder of feature shards ``job.shards``. Returns the index folder.

    Of ``job`` it reads the index (``factory``, ``memory_budget``, ``search_params``, ``check``,
    ``seed``), ``out_dir``, ``edits`` (``"drop"`` replaces an index items were added to or removed
    from; refused otherwise) and ``command``. ``runtime``: the device and precision the model embeds the
    shards' features at (None: the CPU at fp32); the index holds float32 embeddings.

    Raises:
        XmrError: no ``job.shards``, shards of other encoders (named), an unfinished shard folder, a bad
            factory or budget, an edited index without ``edits="drop"``.
    """
    if job.shards is None:
        raise XmrError("{shards}: give the folder of feature shards to index", shards=Param("shards"))
    run_dir, folder = Path(run_dir), Path(job.shards)
    runtime = runtime or CPU_FP32
    cfg, model = load_run(run_dir)
    model.to(runtime.device)
    if cfg.finetune is not None or cfg.text_model is not None:
        raise XmrError("{run} reads trunk activations or word ids, not the frozen features shards hold: index it "
                       "with {manifest}", run=str(run_dir), manifest=Param("manifest"))
    plan = read_plan(folder)
    if (plan.image_encoder, plan.text_encoder) != (cfg.image_encoder, cfg.text_encoder):
        raise XmrError(f"{folder} holds features of {plan.image_encoder!r} + {plan.text_encoder!r}, the run was "
                       f"trained on {cfg.image_encoder!r} + {cfg.text_encoder!r}: encode the gallery with the run's "
                       "encoders")
    out, factory = job.out_folder(run_dir), job.index_factory
    check_index_target(out, run_dir, model.model_id)
    check_edits(out, job.edits)
    check_writable(out.parent, "index folder")
    dim = model.config.embed_dim
    n = plan.bounds[-1][1]

    def shards_checked() -> Iterator[FeatureSet]:
        for p, fs in enumerate(iter_shards(folder)):
            _check_shard(fs, p, folder, model)
            yield fs

    def image_chunks() -> Iterator[tuple[np.ndarray, None]]:
        for fs in shards_checked():
            with runtime.autocast():
                embedded = model.embed_numpy(fs.image_feats, "image")
            yield embedded, None

    def text_chunks() -> Iterator[tuple[np.ndarray, None]]:
        seen: set[str] = set()
        for fs in shards_checked():
            fresh = [j for j, t in enumerate(fs.texts) if t not in seen]
            seen.update(fs.texts[j] for j in fresh)
            if fresh:
                with runtime.autocast():
                    embedded = model.embed_numpy(fs.text_feats[fresh], "text")
                yield embedded, None

    items: dict[int, Item] = {}
    texts: dict[str, int] = {}
    links: dict[int, list[int]] = {}
    skipped: list[dict[str, str]] = []
    for fs in shards_checked():  # metadata only: items, distinct texts, who carries which
        for i, it in enumerate(fs.items):
            row = len(items)
            items[row] = it
            links[row] = [texts.setdefault(fs.texts[j], len(texts)) for j in fs.relevance[i].indices]
        for t in fs.texts:
            texts.setdefault(t, len(texts))
        skipped.extend(fs.skipped)
    if not items:
        raise XmrError(f"{folder}: no readable images in any shard")
    chosen: dict[Target, SideChoice] = {}
    sides: tuple[tuple[Target, int, Callable[[], Iterator[tuple[np.ndarray, None]]]], ...] = (
        ("images", len(items), image_chunks), ("texts", len(texts), text_chunks))
    with exclusive_lock(out.parent / f".{out.name}.lock", f"the index {out}"), atomic_folder(out) as tmp:
        check_edits(out, job.edits)  # again: an add may have ended meanwhile
        built = {}
        for name, count, chunks in sides:
            side_factory, params, chosen[name] = resolve_factory(factory, count, dim, memory_budget=job.memory_budget,
                                                                 search_params=job.search_params)
            config = make_index(side_factory, dim, model.model_id, params).config
            if count == 0:
                built[name] = Index(config)
            else:
                n_train = min(count, AutoIndexConfig().max_train)
                (tmp / name).mkdir()
                built[name] = build_index(chunks, config, n_train=n_train, seed=job.seed,
                                          spill_to=tmp / name / ".vectors.building")
            built[name].save(tmp / name)
            (tmp / name / ".vectors.building").unlink(missing_ok=True)
        checks = _check_streamed(built["images"], image_chunks, text_chunks, job.check)
        write_gallery(tmp / GALLERY_FILE, items, {j: t for t, j in texts.items()}, links)
        save_index_run(tmp, IndexRun(
            run=str(run_dir.resolve()), model_id=model.model_id, shards=str(folder.resolve()), factory=factory,
            chosen=chosen, checks=checks, search_params=dict(job.search_params), n_images=len(items),
            n_texts=len(texts), n_skipped=len(skipped), fingerprint=index_fingerprint(tmp), command=job.command))
    log.info("indexed %d images and %d texts from %d shards (%d items planned) into %s", len(items), len(texts),
             len(plan.bounds), n, out)
    return out


def _check_streamed(index: Index, image_chunks: Callable[[], Iterator[tuple[np.ndarray, None]]],
                    text_chunks: Callable[[], Iterator[tuple[np.ndarray, None]]],
                    check: CrossModalCheck | None) -> RecallCheck | None:
    """The cross-modal recall check over shards: the first ``check.queries`` texts as queries, the
    exact top-k found by streaming every shard's image embeddings once more."""
    c = check or CrossModalCheck()
    if index.config.factory == "Flat":
        return None
    queries = []
    for x, _ in text_chunks():
        queries.append(x)
        if sum(q.shape[0] for q in queries) >= c.queries:
            break
    if not queries:
        return None
    q = np.concatenate(queries)[:c.queries]
    k = min(c.k, len(index))
    top, start = TopK(q, k), 0
    for x, _ in image_chunks():  # image ids are their order across the shards
        top.add(x, np.arange(start, start + x.shape[0]))
        start += x.shape[0]
    recall = recall_at_k(index.search(q, k)[1], top.ids)
    return warn_cross_modal(index, recall, c, q.shape[0])
