"""``xmr index RUN`` (:func:`xmr.workflows.index.index_run`, or
:func:`xmr.workflows.index_shards.index_shards` from feature shards), ``xmr index add`` and
``xmr index remove`` (:mod:`xmr.workflows.index_edit`)."""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from xmr.cli.options import (
    add_cache,
    add_recursive,
    add_rerank,
    add_runtime,
    add_skip_bad,
    command_line,
    given_values,
    library_default,
    positive_int,
    rerankers,
    run_task,
    runtime_from_args,
    shown_default,
)
from xmr.errors import Call, Param, XmrError

if TYPE_CHECKING:
    from xmr.index.run_record import IndexRun
    from xmr.runtime.device import Runtime
    from xmr.workflows.index_job import IndexJob


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("index", help="index a gallery with a run; a folder of images with no run: with a pretrained "
                                     "pair, no training")
    p.add_argument("run", nargs="?", default=None,
                   help="the run to index with; left out with --images FOLDER: the folder's own run, FOLDER/.xmr, "
                        "made from a pretrained pair the first time (no training, no captions)")
    p.add_argument("--manifest", default=None, help="gallery manifest (default: the run's)")
    p.add_argument("--images", default=None, metavar="FOLDER",
                   help="index a folder of images instead (ids = paths relative to it; texts from optional "
                        "sidecar .txt/.json files; unreadable files are skipped, counted and listed)")
    add_recursive(p)
    p.add_argument("--image-encoder", type=_encoder_name, default=None,
                   help="no RUN: the image side of the pair the folder's own run is made from")
    p.add_argument("--text-encoder", type=_encoder_name, default=None,
                   help="no RUN: the text side (its space must be the image side's)")
    p.add_argument("--split", default=None, help="only this split (default: all items)")
    p.add_argument("--shards", default=None, metavar="FOLDER",
                   help="index the feature shards `xmr encode --shards/--engine ray` wrote, one shard at a time "
                        "(the vectors never all in RAM)")
    p.add_argument("--factory", default=None,
                   help="FAISS index_factory string: Flat, HNSW32, IVF1024,Flat, OPQ32,IVF4096,PQ32np ...; "
                        "auto: the best that fits --memory-budget (flat, HNSW or OPQ + IVF-PQ)")
    p.add_argument("--memory-budget", default=None, metavar="SIZE",
                   help="e.g. 2GB: choose the index (implies --factory auto) so building and searching it fit in SIZE "
                        "(default with auto: the memory available now)")
    p.add_argument("--refine", type=positive_int, default=None, metavar="K",
                   help="IVF indexes: keep the exact vectors in a memory-mapped float16 store beside the index and "
                        "re-score each search's best K codes exactly (K >= k; e.g. 100)")
    p.add_argument("--ef-search", type=positive_int, default=None,
                   help="HNSW search beam width, saved with the index (more: closer to exact, slower)")
    p.add_argument("--nprobe", type=positive_int, default=None,
                   help="IVF lists visited per query, saved with the index")
    p.defaults_fn = _index_defaults  # type: ignore[attr-defined]  # read by _Parser.format_help
    p.add_argument("--texts-per-item", type=positive_int, default=None,
                   help="index only each item's first N texts (default: all)")
    add_skip_bad(p)
    p.add_argument("--out", default=None, help="index folder (default: RUN/index)")
    edits = p.add_mutually_exclusive_group()
    edits.add_argument("--keep-edits", dest="edits", action="store_const", const="keep", default=None,
                       help="rebuild an index that `xmr index add/remove` changed from the items it holds now (its "
                            "source, split and history kept; e.g. with --rerank to rebuild re-ranking structures)")
    edits.add_argument("--drop-edits", dest="edits", action="store_const", const="drop",
                       help="rebuild such an index from its source anyway, losing the added items and bringing back "
                            "the removed ones (without either option a rebuild of a changed index is refused)")
    add_rerank(p, many=True)
    p.add_argument("--rerank-target", default=None, choices=["images", "texts", "both"],
                   help="which side the re-ranking structures re-order")
    p.add_argument("--tune", default=None, metavar="SPLIT",
                   help="choose the --rerank method's parameters on this split (val) of the run's dataset, or of "
                        "--manifest M when given (a run made without a dataset needs it): a small grid "
                        "scored by R@1+5+10 of the re-ranked direction; --rerank-param values stay fixed; the "
                        "choice and every score go to rerank/NAME/TARGET/tuning.json (test is refused)")
    add_cache(p)
    add_runtime(p, loader=True)
    p.set_defaults(func=run)

    p = sub.add_parser("index add", help="encode a manifest's items and add them to a run's index (ids kept, atomic)")
    p.add_argument("run")
    p.add_argument("manifest", help="JSONL/CSV manifest of the new items (ids not already in the index)")
    p.add_argument("--index", default=None, metavar="FOLDER", help="the index folder (default: RUN/index)")
    p.add_argument("--split", default=None, help="only this split of the manifest")
    add_skip_bad(p)
    add_cache(p)
    add_runtime(p, loader=True)
    p.set_defaults(func=run_add)

    p = sub.add_parser("index remove", help="remove items from a run's index by their ids (others kept, atomic)")
    p.add_argument("run")
    p.add_argument("ids", nargs="+", metavar="ID", help="item ids (the manifest's id field)")
    p.add_argument("--index", default=None, metavar="FOLDER", help="the index folder (default: RUN/index)")
    p.set_defaults(func=run_remove)


def _index_defaults() -> dict[str, str]:
    """``xmr index``'s defaults for ``--help``: the job's from :class:`~xmr.workflows.index_job.IndexJob`,
    the search parameters' from :class:`~xmr.index.config.IndexConfig`."""
    from xmr.index.config import IndexConfig
    from xmr.workflows.index_job import AUTO, FLAT, IndexJob
    from xmr.workflows.pretrained import DAY_ONE_IMAGE_ENCODER, DAY_ONE_TEXT_ENCODER

    c = IndexConfig(dim=1)
    return {"ef_search": str(c.ef_search), "nprobe": str(c.nprobe), "refine": str(c.refine),
            "image_encoder": f"the run already in FOLDER/.xmr, else {DAY_ONE_IMAGE_ENCODER}",
            "text_encoder": f"the run already in FOLDER/.xmr, else {DAY_ONE_TEXT_ENCODER}",
            "factory": f"{FLAT}; {AUTO} with --memory-budget",
            "rerank_target": shown_default(library_default(IndexJob, "rerank_targets"))}


def join_index_edit(argv: list[str]) -> list[str]:
    """``xmr index add ...`` / ``xmr index remove ...`` -> the commands ``index add`` / ``index remove``
    (``xmr index RUN`` keeps its positional run; a run folder named ``add`` is ``./add``)."""
    for k, token in enumerate(argv):
        if token.startswith("-") or (k and argv[k - 1] in ("--max-image-pixels", "--threads")):
            continue
        if token == "index" and k + 1 < len(argv) and argv[k + 1] in ("add", "remove"):
            return [*argv[:k], f"index {argv[k + 1]}", *argv[k + 2:]]
        break
    return argv


#: options of ``xmr index`` -> the :class:`~xmr.workflows.index_job.IndexJob` field each fills (one not given
#: is left to the field's default)
_JOB_FIELDS = {"manifest": "manifest", "images": "images", "recursive": "recursive", "shards": "shards",
               "split": "split", "factory": "factory", "memory_budget": "memory_budget",
               "texts_per_item": "texts_per_item", "out": "out_dir", "tune": "tune", "edits": "edits",
               "skip_bad": "skip_bad", "cache_dir": "cache_dir"}


def index_job(a: argparse.Namespace) -> IndexJob:
    """The :class:`~xmr.workflows.index_job.IndexJob` of ``xmr index``'s options."""
    from xmr.modality import TARGETS
    from xmr.workflows.index_job import IndexJob

    given = given_values(a, _JOB_FIELDS)
    if a.rerank_target is not None:
        given["rerank_targets"] = TARGETS if a.rerank_target == "both" else (a.rerank_target,)
    search_params = {k: v for k, v in (("ef_search", a.ef_search), ("nprobe", a.nprobe), ("refine", a.refine))
                     if v is not None}
    return IndexJob(**given, search_params=search_params, rerank=tuple(rerankers(a)), command=command_line(a),
                    tune_fixed=tuple(p.partition("=")[0].strip().rpartition(".")[2] for p in a.rerank_param))


def _encoder_name(text: str) -> str:
    from xmr.tasks.options import encoder_name

    return encoder_name(text)


#: ``xmr index``'s options of the pair a folder's own run is made from -> ``index_folder``'s keywords
_PAIR = {"image_encoder": "image_encoder", "text_encoder": "text_encoder"}


def run(a: argparse.Namespace) -> None:
    runtime = runtime_from_args(a)  # resolved once, before anything is read: a missing device fails first
    job = index_job(a)
    if a.run is None:
        _run_folder(a, job, runtime)
        return
    if given_values(a, _PAIR):
        raise XmrError("{image} and {text} choose the pair of a folder's own run (no RUN); {run} has its encoders",
                       image=Param("image_encoder"), text=Param("text_encoder"), run=a.run)
    if a.images is None and _holds_images(a.run):
        raise XmrError("{run} is a folder of images, not a run (no run.json); to index it with a pretrained pair, "
                       "no training: {fix}", run=a.run, fix=Call("index_folder", Param("images", a.run)))
    task = run_task(a)
    task.require("index", a.run)  # a run of a task without an index: one line saying what it is
    _print_built(a, job, task.index(a.run, job, runtime=runtime))


def _holds_images(folder: str) -> bool:
    """``folder`` has no ``run.json`` and holds image files (``xmr index photos`` meant ``--images photos``)."""
    from xmr.data.folder import IMAGE_SUFFIXES
    from xmr.runs.base import RUN_FILE

    path = Path(folder)
    if not path.is_dir() or (path / RUN_FILE).exists():
        return False
    try:
        return any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())
    except OSError:
        return False


def _run_folder(a: argparse.Namespace, job: IndexJob, runtime: Runtime) -> None:
    """``xmr index --images FOLDER`` with no RUN: :func:`~xmr.workflows.pretrained.index_folder`."""
    from xmr.workflows.pretrained import index_folder

    if a.images is None:
        raise XmrError("give the RUN to index with, or a folder with {images} (indexed with a pretrained pair, no "
                       "training)", images=Param("images", "FOLDER"))
    r = index_folder(a.images, job, **given_values(a, _PAIR), runtime=runtime)
    how = "no training" if r.config.pretrained_space is not None else "a trained run"
    print(f"run: {r.run_dir} ({r.config.image_encoder} + {r.config.text_encoder}, {how}"
          f"{'; made now' if r.made else ''})")
    _print_built(a, job, r.index_dir)
    run_dir = shlex.quote(str(r.run_dir))
    index = f" --index {shlex.quote(str(r.index_dir))}" if job.out_dir else ""
    print(f"search it: xmr search {run_dir}{index} --text 'a dog on a beach'  (by text), or --image FILE "
          "(image -> image)")


def _print_built(a: argparse.Namespace, job: IndexJob, out: Path) -> None:
    """What the build made, from its ``index_run.json``."""
    from xmr.index.run_record import load_index_run

    built = load_index_run(out)
    if job.shards is not None:
        print(f"index: {out} ({built.n_images} images, {built.n_texts} texts, from the shards in {a.shards})")
        _print_choice(built)
        return
    skipped = f"; {built.n_skipped} unreadable image(s), caption sidecar(s) or sub-folder(s) left out, listed in " \
        f"{os.path.join(out, 'skipped.jsonl')}" if built.n_skipped else ""
    print(f"index: {out} ({built.n_images} images, {built.n_texts} texts{skipped})")
    _print_choice(built)
    if a.rerank:
        print(f"re-ranking structures ({a.rerank}; {', '.join(job.rerank_targets)}): {os.path.join(out, 'rerank')}")
    if a.tune:
        _print_tuned(out, built)


def _print_choice(built: IndexRun) -> None:
    """What ``--factory auto`` chose per side, and the cross-modal recall check, from ``index_run.json``."""
    from xmr.index.budget import format_bytes

    for side, chosen in built.chosen.items():
        if chosen.auto:
            print(f"{side}: {chosen.factory} ({chosen.reason}; budget {format_bytes(chosen.budget or 0)})")
    c = built.checks
    if c is not None:
        print(f"{c.name} of the image index against exact search: {c.recall:.3f}"
              + ("" if c.ok else f" (below {c.min_recall}: see the warning)"))


def _print_tuned(out: str | os.PathLike[str], built: IndexRun) -> None:
    """Each re-ranker's tuned parameters (the grid's from its ``tuning.json``) and scores."""
    from xmr.utils.io import load_json
    from xmr.workflows.tune import TUNING_FILE

    for name, entry in built.rerank.items():
        for target, t in entry.tuned.items():
            shown = ", ".join(f"{k}={t.params[k]}" for k in load_json(
                os.path.join(out, "rerank", name, target, TUNING_FILE))["grid"])
            print(f"tuned {name} for {target} on {t.split}: {shown or '(nothing to tune)'}; val score "
                  f"{t.score:.1f} vs {t.plain:.1f} without re-ranking"
                  + ("" if t.helps else f" -- it does not help here: search without --rerank {name}"))


def run_add(a: argparse.Namespace) -> None:
    from xmr.workflows.index_edit import add_to_index

    runtime = runtime_from_args(a)  # resolved once, before anything is read: a missing device fails first
    e = add_to_index(a.run, a.manifest, index_dir=a.index, split=a.split, cache_dir=a.cache_dir,
                     skip_bad=a.skip_bad, command=command_line(a), runtime=runtime)
    skipped = f"; {e.skipped} unreadable image(s) left out, listed in {e.index_dir / 'skipped.jsonl'}" \
        if e.skipped else ""
    print(f"index: {e.index_dir}: added {e.images} images and {e.texts} new texts; now {e.n_images} images, "
          f"{e.n_texts} texts{skipped}")
    _print_stale(a, e.rerank_stale)


def run_remove(a: argparse.Namespace) -> None:
    from xmr.workflows.index_edit import remove_from_index

    e = remove_from_index(a.run, a.ids, index_dir=a.index, command=command_line(a))
    print(f"index: {e.index_dir}: removed {e.images} images and {e.texts} texts no other item carries; now "
          f"{e.n_images} images, {e.n_texts} texts")
    _print_stale(a, e.rerank_stale)


def _print_stale(a: argparse.Namespace, stale: Sequence[str]) -> None:
    if stale:
        out = f" --out {a.index}" if a.index else ""
        print(f"re-ranking structures ({', '.join(stale)}) described the old gallery and were left out; build them "
              f"again for the index as it is now with `xmr index {a.run} --keep-edits{out} --rerank {','.join(stale)}`")
