"""The ``xmr`` command line. Each subcommand is a thin wrapper over one library function.

    xmr data fetch emoji           xmr.data.fetch_dataset
    xmr data manifest DIR --out M  xmr.workflows.folder.write_folder_manifest
    xmr encode MANIFEST            xmr.workflows.features.encode_items
    xmr train MANIFEST --out RUN   the task's train (xmr.tasks; retrieval: xmr.workflows.train.train_run)
    xmr index RUN                  xmr.workflows.index.index_run
    xmr search RUN --text "..."    the run's task's search (retrieval: xmr.search.Searcher)
    xmr eval RUN                   the run's task's evaluate (retrieval: xmr.workflows.evaluate.evaluate_run)
    xmr demo                       xmr.workflows.demo.run_demo
    xmr serve RUN                  xmr.serve.serve (the search service and its page)
    xmr list                       the registered tasks, encoders, losses, similarities, heads, indexes, re-rankers,
                                   datasets

User errors print one line (``xmr: error: ...``) and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import threading
import typing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from xmr.errors import NO_VALUE, Param, XmrError
from xmr.utils.io import os_error_reason
from xmr.utils.terminal import terminal_safe

if TYPE_CHECKING:
    from xmr.data.manifest import Item
    from xmr.modality import Target
    from xmr.rerank.reranker import Reranker
    from xmr.tasks import Task

log = logging.getLogger("xmr")


def _command(a: argparse.Namespace) -> str:
    """The command line as typed, stored beside every number it produced."""
    return "xmr " + " ".join(shlex.quote(x) for x in a.argv)


def _cmd_fetch(a: argparse.Namespace) -> None:
    from xmr.data import fetch_dataset
    from xmr.data.manifest import read_manifest

    path = fetch_dataset(a.name, a.cache_dir)
    items = read_manifest(path)
    print(f"{a.name}: {len(items)} items; manifest: {path}")
    splits = sorted({str(it.split) for it in items})
    for split in splits:
        sub = [it for it in items if str(it.split) == split]
        print(f"  {split:>5}: {len(sub):>6} items, {len({it.group or it.id for it in sub}):>5} groups, "
              f"{len({it.label for it in sub}):>3} labels")


def _cmd_manifest(a: argparse.Namespace) -> None:
    from xmr.data.folder import parse_split_fractions
    from xmr.workflows.folder import write_folder_manifest

    fractions = parse_split_fractions(a.split) if a.split else None
    print(write_folder_manifest(a.folder, a.out, recursive=a.recursive, captions=a.captions,
                                split_fractions=fractions, seed=a.seed, overwrite=a.overwrite).summary())


def _cmd_encode(a: argparse.Namespace) -> None:
    from xmr.data.folder import scan_folder
    from xmr.data.manifest import select_split
    from xmr.data.readers import read_items
    from xmr.encoders import create_image_encoder, create_text_encoder
    from xmr.runs.config import RunConfig
    from xmr.workflows.features import encode_items, feature_cache_dir, skipped_list_path, write_skipped

    if (a.manifest is None) == (a.images is None):
        raise XmrError("give a manifest or --images FOLDER (one of them)")
    source, skip_bad = (a.manifest, a.skip_bad) if a.images is None else (a.images, True)
    scan = scan_folder(a.images, recursive=a.recursive) if a.images is not None else None
    items = scan.items if scan is not None else read_items(a.manifest, image_root=a.image_root, skip_bad=a.skip_bad)
    items = select_split(items, a.split)
    image_encoder, text_encoder = a.image_encoder or RunConfig.image_encoder, a.text_encoder or RunConfig.text_encoder
    if a.engine == "ray" or a.shards is not None:
        return _encode_partitions(a, items, image_encoder, text_encoder, allow_textless=a.images is not None)
    fs = encode_items(items, image_encoder=create_image_encoder(image_encoder),
                      text_encoder=create_text_encoder(text_encoder),
                      cache_dir=a.cache_dir, skip_bad=skip_bad, allow_textless=a.images is not None)
    print(f"encoded {len(fs.items)} images ({fs.image_feats.shape[1]}-d) and {len(fs.texts)} texts "
          f"({fs.text_feats.shape[1]}-d); cache: {feature_cache_dir(a.cache_dir)}")
    skipped = (*(scan.skipped if scan is not None else ()), *fs.skipped)  # + unlistable folders, bad sidecars
    if skipped:
        listed = write_skipped(skipped_list_path(source, a.cache_dir), skipped)
        print(f"skipped {len(skipped)} unreadable image(s), caption sidecar(s) or sub-folder(s); listed in {listed}")


def _encode_partitions(a: argparse.Namespace, items: list[Item], image_encoder: str, text_encoder: str, *,
                       allow_textless: bool) -> None:
    """``xmr encode --engine ray`` (or ``--shards`` in this process): partitions -> shards + the cache."""
    from xmr.workflows.features import feature_cache_dir
    from xmr.workflows.ray_encode import RayEncodeConfig, encode_in_process, encode_with_ray
    from xmr.workflows.shards import ShardPlan

    if a.shards is None:
        digest = ShardPlan.make(items, image_encoder=image_encoder, text_encoder=text_encoder, partitions=1).digest
        a.shards = str(feature_cache_dir(a.cache_dir).parent / "shards" / digest[:16])
    shown = _progress_line("partitions")
    given = {k: getattr(a, k) for k in ("address", "partitions", "partition_size", "actors", "cpus_per_actor",
                                        "retries", "num_cpus") if getattr(a, k, None) is not None}
    if a.engine == "ray":
        report = encode_with_ray(items, image_encoder=image_encoder, text_encoder=text_encoder, shards=a.shards,
                                 cache_dir=a.cache_dir, config=RayEncodeConfig(**given),
                                 allow_textless=allow_textless, progress=shown)
    else:
        report = encode_in_process(items, image_encoder=image_encoder, text_encoder=text_encoder, shards=a.shards,
                                   cache_dir=a.cache_dir, partitions=given.get("partitions"),
                                   partition_size=given.get("partition_size", RayEncodeConfig.partition_size),
                                   allow_textless=allow_textless, progress=shown)
    print(f"encoded {len(report.encoded)} of {report.partitions} partitions ({len(report.skipped)} done before) "
          f"in {report.seconds:.1f}s; shards: {report.shards}")
    for item in report.bad_items[:5]:
        print(f"  left out {item['id']}: {item['reason']}")
    if len(report.bad_items) > 5:
        print(f"  ... and {len(report.bad_items) - 5} more unreadable image(s)")
    if report.failed:
        p, why = next(iter(sorted(report.failed.items())))
        raise XmrError(f"{len(report.failed)} partition(s) failed after retries (first: partition {p}: {why}); "
                       "the others are kept: run the same command again to retry them")


def _progress_line(what: str) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        if os.environ.get("XMR_NO_PROGRESS") != "1":
            print(f"\r{what}: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)
    return show


# --- task dispatch. The defaults live in the config dataclasses only: an option the user did not
# give is left out, so the field's own default applies (CLI and Python API build the same config).
# Each task lists the options it takes (xmr.tasks); any other option given is refused by name.

#: namespace entries that are not options of a task
_NOT_TASK_OPTIONS = frozenset({"cmd", "func", "argv", "verbose", "quiet", "max_image_pixels", "threads", "task", "run",
                               "manifest", "out", "overwrite", "cache_dir"})


def _given(a: argparse.Namespace, *, keep: frozenset[str] = frozenset()) -> dict[str, object]:
    return {k: v for k, v in vars(a).items() if k not in _NOT_TASK_OPTIONS or k in keep}


def train_config_from_args(a: argparse.Namespace) -> object:
    """The run config ``xmr train`` builds from its parsed options (exposed for tests)."""
    from xmr.tasks import TASKS
    from xmr.tasks.base import refuse_options

    task = TASKS.get(a.task)
    given = _given(a)
    refuse_options(given, task.all_train_options(), f"--task {task.name}")
    return task.config_from_options(a.manifest, given)


def _cmd_train(a: argparse.Namespace) -> None:
    from xmr.tasks import TASKS

    r = TASKS.get(a.task).train(train_config_from_args(a), a.out, cache_dir=a.cache_dir, overwrite=a.overwrite,
                                skip_bad=bool(a.skip_bad))
    print(f"{r.status}: best epoch {r.best_epoch}, {r.summary}; checkpoint: {r.best_dir}")


def _run_task(a: argparse.Namespace) -> Task:
    """The task of ``a.run``; ``--task`` (eval) must agree with it."""
    from xmr.tasks import TASKS, task_of_run

    task = task_of_run(a.run)
    if getattr(a, "task", None) is not None and TASKS.get(a.task) is not task:
        raise XmrError(f"{a.run} is a {task.name} run, not {a.task}")
    return task


def _rerankers(a: argparse.Namespace) -> list[Reranker]:
    """``--rerank NAME[,NAME]`` and ``--rerank-param key=value`` as unfitted re-rankers."""
    from xmr.rerank.registry import rerankers_from_options

    return rerankers_from_options(a.rerank, a.rerank_param)


def _cmd_index(a: argparse.Namespace) -> None:
    from xmr.modality import TARGETS, check_target
    from xmr.utils.io import load_json
    from xmr.workflows.index import index_run

    targets: list[Target] = list(TARGETS) if a.rerank_target == "both" else [check_target(a.rerank_target)]
    search_params = {k: v for k, v in (("ef_search", a.ef_search), ("nprobe", a.nprobe), ("refine", a.refine))
                     if v is not None}
    factory = a.factory or ("auto" if a.memory_budget is not None else "Flat")
    if a.shards is not None:
        from xmr.workflows.index_shards import index_shards

        if a.manifest or a.images or a.split or a.rerank or a.tune or a.texts_per_item or a.edits == "keep":
            raise XmrError("--shards indexes the shards as encoded: leave out --manifest, --images, --split, "
                           "--texts-per-item, --rerank, --tune and --keep-edits")
        out = index_shards(a.run, a.shards, factory=factory, out_dir=a.out, memory_budget=a.memory_budget,
                           search_params=search_params, command=_command(a), drop_edits=a.edits == "drop")
        built = load_json(os.path.join(out, "index_run.json"))
        print(f"index: {out} ({built['n_images']} images, {built['n_texts']} texts, from the shards in {a.shards})")
        _print_choice(built)
        return
    out = index_run(a.run, manifest=a.manifest, split=a.split, factory=factory, memory_budget=a.memory_budget,
                    texts_per_item=a.texts_per_item, out_dir=a.out, rerank=_rerankers(a), rerank_targets=targets,
                    cache_dir=a.cache_dir, command=_command(a), skip_bad=a.skip_bad, images=a.images,
                    recursive=a.recursive, tune=a.tune,
                    search_params=search_params, edits=a.edits,
                    tune_fixed=[p.partition("=")[0].strip().rpartition(".")[2] for p in a.rerank_param])
    built = load_json(os.path.join(out, "index_run.json"))
    skipped = f"; {built['n_skipped']} unreadable image(s), caption sidecar(s) or sub-folder(s) left out, listed in " \
        f"{os.path.join(out, 'skipped.jsonl')}" if built.get("n_skipped") else ""
    print(f"index: {out} ({built['n_images']} images, {built['n_texts']} texts{skipped})")
    _print_choice(built)
    if a.rerank:
        print(f"re-ranking structures ({a.rerank}; {', '.join(targets)}): {os.path.join(out, 'rerank')}")
    if a.tune:
        from xmr.workflows.tune import TUNING_FILE

        for name, entry in built["rerank"].items():
            for target, t in entry.get("tuned", {}).items():
                shown = ", ".join(f"{k}={t['params'][k]}" for k in load_json(
                    os.path.join(out, "rerank", name, target, TUNING_FILE))["grid"])
                print(f"tuned {name} for {target} on {t['split']}: {shown or '(nothing to tune)'}; val score "
                      f"{t['score']:.1f} vs {t['plain']:.1f} without re-ranking"
                      + ("" if t["helps"] else f" -- it does not help here: search without --rerank {name}"))


def _cmd_index_add(a: argparse.Namespace) -> None:
    from xmr.workflows.index_edit import add_to_index

    e = add_to_index(a.run, a.manifest, index_dir=a.index, split=a.split, cache_dir=a.cache_dir,
                     skip_bad=a.skip_bad, command=_command(a))
    skipped = f"; {e.skipped} unreadable image(s) left out, listed in {e.index_dir / 'skipped.jsonl'}" \
        if e.skipped else ""
    print(f"index: {e.index_dir}: added {e.images} images and {e.texts} new texts; now {e.n_images} images, "
          f"{e.n_texts} texts{skipped}")
    _print_stale(a, e.rerank_stale)


def _cmd_index_remove(a: argparse.Namespace) -> None:
    from xmr.workflows.index_edit import remove_from_index

    e = remove_from_index(a.run, a.ids, index_dir=a.index, command=_command(a))
    print(f"index: {e.index_dir}: removed {e.images} images and {e.texts} texts no other item carries; now "
          f"{e.n_images} images, {e.n_texts} texts")
    _print_stale(a, e.rerank_stale)


def _print_stale(a: argparse.Namespace, stale: Sequence[str]) -> None:
    if stale:
        out = f" --out {a.index}" if a.index else ""
        print(f"re-ranking structures ({', '.join(stale)}) described the old gallery and were left out; build them "
              f"again for the index as it is now with `xmr index {a.run} --keep-edits{out} --rerank {','.join(stale)}`")


def _join_index_edit(argv: list[str]) -> list[str]:
    """``xmr index add ...`` / ``xmr index remove ...`` -> the commands ``index add`` / ``index remove``
    (``xmr index RUN`` keeps its positional run; a run folder named ``add`` is ``./add``)."""
    for k, token in enumerate(argv):
        if token.startswith("-") or (k and argv[k - 1] in ("--max-image-pixels", "--threads")):
            continue
        if token == "index" and k + 1 < len(argv) and argv[k + 1] in ("add", "remove"):
            return [*argv[:k], f"index {argv[k + 1]}", *argv[k + 2:]]
        break
    return argv


def _print_choice(built: dict[str, typing.Any]) -> None:
    """What ``--factory auto`` chose per side, and the cross-modal recall check, from ``index_run.json``."""
    from xmr.index.budget import format_bytes

    for side, chosen in built.get("chosen", {}).items():
        if chosen.get("auto"):
            print(f"{side}: {chosen['factory']} ({chosen['reason']}; budget {format_bytes(chosen['budget'])})")
    for name, value in built.get("checks", {}).items():
        if name.startswith("text_to_image_recall"):
            print(f"{name} of the image index against exact search: {value:.3f}"
                  + ("" if built["checks"]["ok"] else f" (below {built['checks']['min_recall']}: see the warning)"))


def _cmd_search(a: argparse.Namespace) -> None:
    from xmr.tasks.base import refuse_options

    task = _run_task(a)
    given = _given(a)
    refuse_options(given, task.search_options, f"`xmr search` of a {task.name} run")
    for line in task.search(a.run, given):  # file names and texts may hold escape sequences, newlines
        print(terminal_safe(line, as_json=a.json))


def _cmd_eval(a: argparse.Namespace) -> None:
    from xmr.tasks.base import refuse_options

    task = _run_task(a)
    given = _given(a, keep=frozenset({"manifest", "out", "cache_dir"}))
    refuse_options(given, task.eval_options, f"`xmr eval` of a {task.name} run")
    outcome = task.evaluate(a.run, given, command=_command(a))
    print(outcome.report)
    print(f"written: {outcome.written}")


def _cmd_demo(a: argparse.Namespace) -> None:
    from xmr.workflows.demo import run_demo

    run_demo(a.out, epochs=a.epochs, cache_dir=a.cache_dir, command=_command(a), out=sys.stdout,
             more_data=a.more_data)


def _cmd_caption(a: argparse.Namespace) -> None:
    from xmr.workflows.imagine import caption_image

    print(caption_image(a.run, a.image, beam=a.beam))


def _cmd_imagine(a: argparse.Namespace) -> None:
    from xmr.workflows.imagine import imagine_images

    for path in imagine_images(a.run, a.text, a.out, n=a.n, seed=a.seed, mean=a.mean):
        print(path)


def _cmd_serve(a: argparse.Namespace) -> None:
    # idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE, set by main before torch or FAISS load)
    from xmr.serve import ServeConfig, serve

    given = {k: v for k, v in (("host", a.host), ("port", a.port), ("workers", a.workers),
                               ("max_upload_mb", a.max_upload_mb), ("body_timeout", a.body_timeout),
                               ("max_decodes", a.max_decodes), ("max_filter_values", a.max_filter_values),
                               ("graceful_timeout", a.graceful_timeout)) if v is not None}
    if a.cors:
        given["cors_origins"] = tuple(a.cors)
    if a.allow_host:
        given["allowed_hosts"] = tuple(a.allow_host)
    if a.exact_text:
        given["fast_text"] = False
    serve(a.run, a.index, ServeConfig(**given))


def _index_defaults() -> dict[str, str]:
    """``xmr index``'s search-parameter defaults for ``--help``, from :class:`~xmr.index.config.IndexConfig`."""
    from xmr.index.config import IndexConfig

    c = IndexConfig(dim=1)
    return {"ef_search": str(c.ef_search), "nprobe": str(c.nprobe)}


def _encode_defaults() -> dict[str, str]:
    """``xmr encode``'s Ray defaults for ``--help``, from :class:`~xmr.workflows.ray_encode.RayEncodeConfig`."""
    from xmr.workflows.ray_encode import RayEncodeConfig

    c = RayEncodeConfig()
    return {"partition_size": str(c.partition_size), "actors": str(c.actors), "cpus_per_actor": f"{c.cpus_per_actor:g}",
            "retries": str(c.retries)}


def _serve_defaults() -> dict[str, str]:
    """``xmr serve``'s option defaults for ``--help``, from :class:`~xmr.serve.config.ServeConfig`."""
    from xmr.serve.config import ServeConfig

    c = ServeConfig()
    return {"host": c.host, "port": str(c.port), "workers": str(c.workers), "max_upload_mb": f"{c.max_upload_mb:g}",
            "body_timeout": f"{c.body_timeout:g}", "max_decodes": str(c.max_decodes),
            "max_filter_values": str(c.max_filter_values), "graceful_timeout": f"{c.graceful_timeout:g}"}


def _cmd_list(a: argparse.Namespace) -> None:
    from xmr.data import DATASETS
    from xmr.encoders import ENCODERS
    from xmr.evaluation.similarity import SIMILARITIES
    from xmr.index import INDEXES
    from xmr.models import HEADS
    from xmr.rerank import RERANKERS
    from xmr.tasks import TASKS
    from xmr.text import TEXT_MODELS
    from xmr.training.config import train_loss_names

    for name, names in (("tasks", TASKS.names()), ("encoders", ENCODERS.names()),
                        ("text models (trained)", TEXT_MODELS.names()),
                        ("losses", train_loss_names()), ("similarities", SIMILARITIES.names()),
                        ("heads", HEADS.names()), ("indexes", INDEXES.names()), ("rerankers", RERANKERS.names()),
                        ("datasets", DATASETS.names())):
        print(f"{name}: {', '.join(names)}")


def _generative_paths(text: str) -> tuple[str, ...]:
    """argparse type: ``i2t``, ``t2i`` or ``i2t,t2i`` (GXN's generative paths)."""
    from xmr.training.config import GENERATIVE_PATHS

    paths = tuple(p.strip() for p in text.split(",") if p.strip())
    if not paths or any(p not in GENERATIVE_PATHS for p in paths) or len(set(paths)) != len(paths):
        raise argparse.ArgumentTypeError(f"expected i2t, t2i or i2t,t2i, got {text!r}")
    return paths


class _Number:
    """argparse type of every numeric option: a number of a :class:`~xmr.utils.numbers.NumberRange`
    (finite, whole where a count is asked, in range), else the option's one-line error naming it."""

    def __init__(self, lo: float | None = None, hi: float | None = None, *, whole: bool = True,
                 lo_open: bool = False, hi_open: bool = False) -> None:
        from xmr.utils.numbers import NumberRange

        self.range = NumberRange(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, whole=whole)
        self.__name__ = "whole number" if whole else "number"  # argparse names the type in some messages

    def __call__(self, text: str) -> float:
        try:
            return self.range.parse(text)
        except XmrError as e:
            raise argparse.ArgumentTypeError(str(e)) from None


_positive_int = _Number(1)  # ``--texts-per-item 0`` is refused by name
_count = _Number(0)  # a whole number >= 0 (0 = off)
_seed = _Number(0, 2**32, hi_open=True)  # what numpy and torch both accept as a seed
_positive = _Number(0, whole=False, lo_open=True)  # a real number > 0
_non_negative = _Number(0, whole=False)  # a real number >= 0


#: library parameters whose option is not ``--`` + the name with dashes
_OPTION_OF_PARAM = {"out_dir": "--out", "index_dir": "--index"}


def cli_wording(p: Param) -> str:
    """How the CLI names a parameter an error carries: its option, with the value where one is given
    (``Param("overwrite", True)`` -> ``--overwrite``; ``Param("factory", "Flat")`` -> ``--factory Flat``)."""
    flag = _OPTION_OF_PARAM.get(p.name, "--" + p.name.replace("_", "-"))
    if p.value is NO_VALUE or p.value is True:
        return flag
    value = ",".join(map(str, p.value)) if isinstance(p.value, (tuple, list)) else str(p.value)
    return f"{flag} {shlex.quote(value)}"


def _one_line(message: str) -> str:
    """An error message as one printable line: its lines joined, control characters escaped."""
    return terminal_safe(" ".join(message.split("\n")) if "\n" in message else message)


def _add_skip_bad(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable images and bad manifest rows (warn with a count; the items "
                        "left out are listed in skipped.jsonl beside the output) instead of refusing them")


def _add_recursive(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recursive", action="store_true", help="with a folder: its sub-folders' images too")


def _add_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=None, help="cache root (default: $XMR_CACHE_DIR or ~/.cache/xmr)")


def _encoder_name(text: str) -> str:
    """argparse type of the encoder options: ``hf-clip:ckpt`` is stored as ``hf-clip:/abs/ckpt`` (the run
    works from any folder later); any other name is kept as typed and checked by the config."""
    from xmr.encoders import canonical_encoder_name

    return canonical_encoder_name(text)


def _add_encoders(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-encoder", default=None, type=_encoder_name,
                   help="registered image encoder (xmr list), or hf-clip:PATH (a local "
                        "transformers CLIP/SigLIP checkpoint folder; give it to both options)")
    p.add_argument("--text-encoder", default=None, type=_encoder_name,
                   help="registered text encoder (xmr list), or hf-clip:PATH; for training "
                        "also textcnn | bigru (trained end to end); composed training: lstm (the default there) or a "
                        "frozen encoder")


def _add_rerank(p: argparse.ArgumentParser, *, many: bool) -> None:
    names = "diffusion | bidirectional | geodesic" + (" (comma-separated for several)" if many else "")
    p.add_argument("--rerank", default=None, metavar="NAME", help=f"re-rank on the data manifold: {names}")
    p.add_argument("--rerank-param", action="append", default=[], metavar="KEY=VALUE",
                   help="re-ranking parameter, repeatable (e.g. k=20, alpha=0.8, diffusion.n_trunc=1000)")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="JSONL/CSV manifest or Karpathy split JSON (see README: Data); its val and "
                                    "test splits are the run's")
    p.add_argument("extra_train", nargs="*", default=None, metavar="EXTRA",
                   help="more training manifests, each PATH[:SPLIT,...][@WEIGHT] (default splits: train; weight 1: "
                        "its pairs drawn as often as the run's own), e.g. icons.jsonl:train,val,test@0.5")
    p.add_argument("--image-root", default=None, help="Karpathy files: the folder holding the images")
    p.add_argument("--out", required=True, help="run folder (created; an unfinished run there is resumed)")
    p.add_argument("--task", default="retrieval", metavar="TASK",
                   help="a registered task (xmr list): retrieval (default): a joint image-text space; "
                        "composed: image + modification text -> image")
    p.add_argument("--triplets", default=None,
                   help="composed: the triplet JSONL (default: triplets.jsonl beside the manifest)")
    p.add_argument("--compose", default=None, help="composed: tirg | relation | concat | add")
    p.add_argument("--in-joint", action="store_true", default=None,
                   help="composed: compose in a learned joint space (the joint-manifold paper's Eq. 2)")
    p.add_argument("--compose-loss", default=None,
                   help="composed: batch_classification | soft_triplet (TIRG) | infonce")
    _add_encoders(p)
    p.add_argument("--word-vectors", default=None, choices=["glove", "random"],
                   help="textcnn/bigru: word table from GloVe 6B-50d (needs the glove extra) or random")
    p.add_argument("--no-position-shift", action="store_true", default=None,
                   help="textcnn: left-align the words instead of the random-padding position shift")
    p.add_argument("--text-length", type=_positive_int, default=None,
                   help="textcnn/bigru: words per text (longer are cut)")
    p.add_argument("--text-pool", default=None,
                   help="textcnn: max | avg; bigru: mean | last | attention (A3VSE's K-head token attention)")
    p.add_argument("--loss", default=None, help="infonce | vse0 | vse++ | instance")
    p.add_argument("--then", default=None, metavar="OBJECTIVE",
                   help="with --loss instance: 'instance+rank' after --stage1-epochs (dual-path two-stage)")
    p.add_argument("--stage1-epochs", type=_count, default=None, help="epochs of Stage I (instance loss only)")
    p.add_argument("--rank-loss", default=None, help="the ranking loss of instance+rank")
    p.add_argument("--similarity", default=None,
                   help="how the space scores a pair: cosine | order (GXN order violation; ranking losses only)")
    p.add_argument("--two-branch", type=_Number(0, 1, whole=False, lo_open=True, hi_open=True), default=None,
                   metavar="LAMBDA",
                   help="GXN abstract + grounded heads scored by s* = lam s_h + (1 - lam) s_l (GXN: 0.5)")
    p.add_argument("--generative", type=_generative_paths, default=None, metavar="PATHS",
                   help="with --two-branch: GXN's generative paths on the grounded branch, i2t (caption decoder, "
                        "XE then self-critical CIDEr-D), t2i (text-to-image GAN) or i2t,t2i (Algorithm 1)")
    p.add_argument("--caption-xe-only", action="store_true", default=None,
                   help="i2t: train the caption decoder on cross-entropy only (no self-critical reward)")
    p.add_argument("--caption-xe-epochs", type=_count, default=None,
                   help="i2t: cross-entropy-only epochs before the mixed XE + CIDEr-D reward loss")
    p.add_argument("--image-head", default=None,
                   help="image-side head if not --head: region-attention | region-mean (A3VSE; need a region "
                        "image encoder such as efficientnet-lite0-regions)")
    p.add_argument("--sparse", default=None, metavar="FRACxTEXTS",
                   help="annotate only a seeded fraction of the training images, e.g. 0.1x1, 0.2x2, 0.5xall")
    p.add_argument("--pseudo-texts", default=None, choices=["regional", "global"],
                   help="pair un-annotated training images with their ImageNet labels as pseudo-texts (A3VSE)")
    p.add_argument("--adversarial", action="store_true", default=None,
                   help="A3VSE's six domain discriminators behind a gradient-reversal layer")
    p.add_argument("--finetune-image-blocks", type=_count, default=None, metavar="N",
                   help="fine-tune the last N blocks of the image encoder (efficientnet-lite0: 1..16; each N >= 1 "
                        "includes the head conv); the frozen trunk's output is cached once (0 = frozen encoder)")
    p.add_argument("--ema", type=_Number(0, 1, whole=False, hi_open=True), default=None, metavar="DECAY",
                   help="validate and keep the best checkpoint with a moving average of the weights (e.g. 0.999)")
    p.add_argument("--cross-style", type=_non_negative, default=None, metavar="WEIGHT",
                   help="add an image-image InfoNCE between each training image and another image of its group "
                        "(another style of the same emoji), with this weight (0: off)")
    p.add_argument("--finetune-text-layers", type=_count, default=None, metavar="N",
                   help="fine-tune the last N transformer layers of the text encoder (minilm-l6: 1..6); its frozen "
                        "token states are cached once")
    p.add_argument("--finetune-text-length", type=_positive_int, default=None, metavar="TOKENS",
                   help="tokens per text of the cached token states (longer texts are cut there)")
    p.add_argument("--finetune-lr", type=_positive, default=None,
                   help="learning rate of the fine-tuned blocks / layers")
    p.add_argument("--train-bn-stats", action="store_true", default=None,
                   help="let the fine-tuned blocks' BatchNorm statistics update (default: frozen at ImageNet's)")
    p.add_argument("--augment-views", type=_count, default=None, metavar="K",
                   help="K augmented views per training image, encoded once (cached); each epoch draws the plain "
                        "or one augmented view per image (0 = off)")
    p.add_argument("--augment", default=None, metavar="KINDS",
                   help="comma-separated augmentations of the views: crop, jitter, grey, lineart (default: all "
                        "four), hflip (opt-in: a mirror image can change meaning)")
    p.add_argument("--steps-per-epoch", type=_positive_int, default=None,
                   help="optimiser steps per epoch (default: one pass over the annotated pairs)")
    p.add_argument("--grad-clip", type=_non_negative, default=None, help="clip the gradient norm (0 = off; A3VSE: 2)")
    p.add_argument("--margin", type=_non_negative, default=None, help="hinge margin of the ranking losses")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="most passes over the training pairs (with early stopping)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="pairs per step; the in-batch negatives")
    p.add_argument("--lr", type=_positive, default=None, help="learning rate of the heads (AdamW)")
    p.add_argument("--patience", type=_count, default=None, help="early stopping patience in epochs (0 = off)")
    p.add_argument("--vse0-warmup", type=_count, default=None, help="epochs of VSE0 before a hardest-negative loss")
    p.add_argument("--seed", type=_seed, default=None, help="seeds initialisation, batches, sparse draws")
    p.add_argument("--embed-dim", type=_positive_int, default=None, help="size of the joint space")
    p.add_argument("--head", default=None,
                   help="linear | mlp | identity (no parameters: the encoders' own space, for hf-clip:PATH on both "
                        "sides with --embed-dim its feature size)")
    p.add_argument("--hidden-dim", type=_positive_int, default=None,
                   help="MLP head width; the region-attention head's context size K'")
    p.add_argument("--train-split", default=None, help="the manifest split to train on")
    p.add_argument("--val-split", default=None, help="the split that picks the best epoch")
    p.add_argument("--eval-texts-per-item", type=_positive_int, default=None,
                   help="texts per item used as validation queries (default: all)")
    p.add_argument("--overwrite", action="store_true", help="discard any run in --out and start again")
    _add_skip_bad(p)
    _add_cache(p)
    p.defaults_fn = _train_option_defaults  # type: ignore[attr-defined]  # read by _Parser.format_help


def _train_option_defaults() -> dict[str, str]:
    """``xmr train``'s option dest -> its default as shown in ``--help``, read from each task's config
    dataclasses (the one source of every default): ``30 (composed: 20)`` where the tasks differ."""
    import dataclasses

    from xmr.tasks import TASKS

    shown: dict[str, dict[str, str]] = {}
    for name in sorted(TASKS.names(), key=lambda n: n != "retrieval"):  # the default task first
        for cls, fields in TASKS.get(name).train_fields.items():
            defaults = {f.name: f.default for f in dataclasses.fields(cls)}
            for dest, fname in fields.items():
                if defaults.get(fname, dataclasses.MISSING) is not dataclasses.MISSING:
                    shown.setdefault(dest, {})[name] = _shown_default(defaults[fname])
    out = {}
    for dest, by_task in shown.items():
        first_task, first = next(iter(by_task.items()))
        others = [f"{t}: {v}" for t, v in by_task.items() if v != first]
        label = first if first_task == "retrieval" else f"{first_task}: {first}"
        out[dest] = label + (f" ({'; '.join(others)})" if others else "")
    return out


def _shown_default(value: object) -> str:
    """A default as typed on the command line: a tuple as ``a,b`` (an empty one as ``none``)."""
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


class _Parser(argparse.ArgumentParser):
    """argparse with xmr's one-line errors: ``xmr: error: <what>`` (exit 2), no usage block.

    A parser with a ``defaults_fn`` (dest -> shown default) adds ``(default: X)`` to those options'
    help when help is asked for (the train defaults import the configs, which ``xmr --help`` need
    not pay for).
    """

    def format_help(self) -> str:
        fn = getattr(self, "defaults_fn", None)
        if fn is not None:
            defaults = fn()
            for action in self._actions:
                shown = defaults.get(action.dest)
                if shown is not None and "(default" not in (action.help or ""):
                    more = f"(default: {shown})".replace("%", "%%")
                    action.help = f"{action.help} {more}" if action.help else more
        return super().format_help()

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"xmr: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    ap = _Parser(prog="xmr", description="Cross-modal retrieval: train, index, search, evaluate.")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ap.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only; no progress bars")
    ap.add_argument("--max-image-pixels", type=_positive_int, default=None, metavar="N",
                    help="refuse images declaring more pixels than N, before decoding (default: "
                         "xmr.encoders.image_io.ImageReadConfig.max_pixels, 178,956,970; sets $XMR_MAX_IMAGE_PIXELS)")
    _add_threads(ap, argparse.SUPPRESS)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="built-in datasets")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="ACTION")
    f = dsub.add_parser("fetch", help="fetch and prepare a built-in dataset (e.g. emoji)")
    f.add_argument("name")
    _add_cache(f)
    f.set_defaults(func=_cmd_fetch)
    f = dsub.add_parser("manifest", help="write a manifest from a folder of images (texts from optional sidecar "
                                         ".txt/.json files or a captions CSV)")
    f.add_argument("folder")
    f.add_argument("--out", required=True, help="the manifest to write (.jsonl, or .csv)")
    _add_recursive(f)
    f.add_argument("--captions", default=None, metavar="CSV",
                   help="a CSV with a header naming the file column (file/image/path, relative to the folder) and "
                        "the text column (caption/text/title); several rows give a file several texts")
    f.add_argument("--split", default=None, metavar="TRAIN/VAL/TEST",
                   help="assign splits, e.g. 80/10/10, by a seeded hash of each file's path (adding images later "
                        "moves none); default: no split field")
    f.add_argument("--seed", type=_seed, default=0, help="seeds the split draw (default 0)")
    f.add_argument("--overwrite", action="store_true", help="replace an existing manifest at --out")
    f.set_defaults(func=_cmd_manifest)

    p = sub.add_parser("encode", help="encode a manifest's (or a folder's) images and texts into the feature cache")
    p.add_argument("manifest", nargs="?", default=None, help="JSONL/CSV manifest or Karpathy split JSON")
    p.add_argument("--images", default=None, metavar="FOLDER",
                   help="encode a folder of images instead of a manifest (unreadable files are skipped and listed)")
    _add_recursive(p)
    p.add_argument("--image-root", default=None, help="Karpathy files: the folder holding the images")
    p.add_argument("--split", default=None, help="only this split")
    _add_skip_bad(p)
    _add_encoders(p)
    _add_cache(p)
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this process (default); ray: partitions encoded by a pool of Ray actors, each "
                        "partition's shard written atomically, finished ones skipped on a re-run")
    p.add_argument("--shards", default=None, metavar="FOLDER",
                   help="write one feature shard per partition here (default with --engine ray: under the cache)")
    p.add_argument("--address", default=None,
                   help="Ray: auto (the cluster on this machine), HOST:PORT or ray://HEAD:10001; default: start a "
                        "local cluster for this run")
    p.add_argument("--partitions", type=_positive_int, default=None,
                   help="cut the manifest into N partitions (default: one per --partition-size items)")
    p.add_argument("--partition-size", type=_positive_int, default=None, help="items per partition")
    p.add_argument("--actors", type=_positive_int, default=None, help="Ray: encoder actors in the pool")
    p.add_argument("--cpus-per-actor", type=_positive, default=None, help="Ray: CPUs per actor")
    p.add_argument("--retries", type=_count, default=None, help="Ray: attempts after the first for a failing partition")
    p.add_argument("--num-cpus", type=_positive_int, default=None, help="Ray: CPUs of the local cluster (default: all)")
    p.defaults_fn = _encode_defaults  # type: ignore[attr-defined]  # read by _Parser.format_help
    p.set_defaults(func=_cmd_encode)

    p = sub.add_parser("train", help="learn a joint space on cached features")
    _add_train_args(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("index", help="index a gallery with a trained run")
    p.add_argument("run")
    p.add_argument("--manifest", default=None, help="gallery manifest (default: the run's)")
    p.add_argument("--images", default=None, metavar="FOLDER",
                   help="index a folder of images instead (ids = paths relative to it; texts from optional "
                        "sidecar .txt/.json files; unreadable files are skipped, counted and listed)")
    _add_recursive(p)
    p.add_argument("--split", default=None, help="only this split (default: all items)")
    p.add_argument("--shards", default=None, metavar="FOLDER",
                   help="index the feature shards `xmr encode --shards/--engine ray` wrote, one shard at a time "
                        "(the vectors never all in RAM)")
    p.add_argument("--factory", default=None,
                   help="FAISS index_factory string: Flat (default), HNSW32, IVF1024,Flat, OPQ32,IVF4096,PQ32np ...; "
                        "auto: the best that fits --memory-budget (flat, HNSW or OPQ + IVF-PQ)")
    p.add_argument("--memory-budget", default=None, metavar="SIZE",
                   help="e.g. 2GB: choose the index (implies --factory auto) so building and searching it fit in SIZE "
                        "(default with auto: the memory available now)")
    p.add_argument("--refine", type=_positive_int, default=None, metavar="K",
                   help="IVF indexes: keep the exact vectors in a memory-mapped float16 store beside the index and "
                        "re-score each search's best K codes exactly (K >= k; e.g. 100)")
    p.add_argument("--ef-search", type=_positive_int, default=None,
                   help="HNSW search beam width, saved with the index (more: closer to exact, slower)")
    p.add_argument("--nprobe", type=_positive_int, default=None,
                   help="IVF lists visited per query, saved with the index")
    p.defaults_fn = _index_defaults  # type: ignore[attr-defined]  # read by _Parser.format_help
    p.add_argument("--texts-per-item", type=_positive_int, default=None,
                   help="index only each item's first N texts (default: all)")
    _add_skip_bad(p)
    p.add_argument("--out", default=None, help="index folder (default: RUN/index)")
    edits = p.add_mutually_exclusive_group()
    edits.add_argument("--keep-edits", dest="edits", action="store_const", const="keep", default="refuse",
                       help="rebuild an index that `xmr index add/remove` changed from the items it holds now (its "
                            "source, split and history kept; e.g. with --rerank to rebuild re-ranking structures)")
    edits.add_argument("--drop-edits", dest="edits", action="store_const", const="drop",
                       help="rebuild such an index from its source anyway, losing the added items and bringing back "
                            "the removed ones (without either option a rebuild of a changed index is refused)")
    _add_rerank(p, many=True)
    p.add_argument("--rerank-target", default="images", choices=["images", "texts", "both"],
                   help="which side the re-ranking structures re-order (default: images)")
    p.add_argument("--tune", default=None, metavar="SPLIT",
                   help="choose the --rerank method's parameters on this split of the run (val): a small grid "
                        "scored by R@1+5+10 of the re-ranked direction; --rerank-param values stay fixed; the "
                        "choice and every score go to rerank/NAME/TARGET/tuning.json (test is refused)")
    _add_cache(p)
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("index add", help="encode a manifest's items and add them to a run's index (ids kept, atomic)")
    p.add_argument("run")
    p.add_argument("manifest", help="JSONL/CSV manifest of the new items (ids not already in the index)")
    p.add_argument("--index", default=None, metavar="FOLDER", help="the index folder (default: RUN/index)")
    p.add_argument("--split", default=None, help="only this split of the manifest")
    _add_skip_bad(p)
    _add_cache(p)
    p.set_defaults(func=_cmd_index_add)

    p = sub.add_parser("index remove", help="remove items from a run's index by their ids (others kept, atomic)")
    p.add_argument("run")
    p.add_argument("ids", nargs="+", metavar="ID", help="item ids (the manifest's id field)")
    p.add_argument("--index", default=None, metavar="FOLDER", help="the index folder (default: RUN/index)")
    p.set_defaults(func=_cmd_index_remove)

    p = sub.add_parser("search", help="query an indexed run by text or image")
    p.add_argument("run")
    p.add_argument("--text", default=None, help="a text query")
    p.add_argument("--image", default=None, help="an image query (a file)")
    p.add_argument("--queries", default=None, metavar="FILE",
                   help="many queries, one per line: a text, or an image file's path (relative to FILE's folder, "
                        "then the working folder; a line that looks like a path and names no file is an error on "
                        "its line; 'text:' / 'image:' force the kind); the run and index load once, images are "
                        "encoded a batch at a time")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per query: query, kind, line, hits (rank, score, id, text, image, item, "
                        "label, group, style), or error")
    p.add_argument("--sheet", default=None, metavar="PNG",
                   help="also draw the results as a contact sheet: one row per query, its top-k images with score "
                        "and first text")
    p.add_argument("-k", type=_positive_int, default=10, help="results to show (default 10)")
    p.add_argument("--target", default=None, choices=["images", "texts"], help="what to return (default: images)")
    p.add_argument("--index", default=None, help="index folder (default: RUN/index)")
    p.add_argument("--exact-text", action="store_true",
                   help="encode query texts with the run's own text encoder, not its faster stand-in (int8 ONNX "
                        "MiniLM for minilm-l6, the same features within 1e-3 cosine, as xmr serve uses)")
    _add_rerank(p, many=False)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("eval", help="Recall@K / medr / rsum (+ mAP, CMC) of a run on a split")
    p.add_argument("run")
    p.add_argument("--split", default="test")
    p.add_argument("--mode", default=None, choices=["full", "1k"],
                   help="full set (default), or COCO-style 5 x 1K folds")
    p.add_argument("--manifest", default=None)
    p.add_argument("--texts-per-item", type=_positive_int, default=None,
                   help="texts per item used as queries (default: the run's eval_texts_per_item)")
    p.add_argument("--out", default=None, help="results JSON (default: RUN/eval-SPLIT-MODE.json for the run's own "
                                               "manifest, a name carrying the manifest for another)")
    _add_skip_bad(p)
    p.add_argument("--captions", action="store_true", default=None,
                   help="also BLEU-1..4 / CIDEr of the top-1..5 retrieved captions (GXN Table 2) and, for a run "
                        "trained with --generative i2t, of its generated captions (needs pycocoevalcap)")
    p.add_argument("--task", default=None, metavar="TASK",
                   help="composed: R@1/10/50 of image + text queries (default: the run's own task)")
    _add_rerank(p, many=True)
    _add_cache(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("demo", help="fetch emoji, train InfoNCE and VSE++, index, evaluate, query")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=_positive_int, default=30)
    p.add_argument("--more-data", action="store_true",
                   help="also fetch the icons and icons-extra datasets and train the best measured pipeline on "
                        "emoji + icons (InfoNCE + --cross-style 3); about 17 more minutes the first time")
    _add_cache(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("caption", help="a caption for an image from a run trained with --generative i2t")
    p.add_argument("run")
    p.add_argument("--image", required=True)
    p.add_argument("--beam", type=_positive_int, default=1, help="beam width (default 1: greedy decoding)")
    p.set_defaults(func=_cmd_caption)

    p = sub.add_parser("imagine", help="64x64 images for a text from a run trained with --generative t2i")
    p.add_argument("run")
    p.add_argument("--text", required=True)
    p.add_argument("--out", required=True, help="PNG path; with --n > 1, OUT-1.png, OUT-2.png ...")
    p.add_argument("--n", type=_positive_int, default=4, help="images to draw (default 4)")
    p.add_argument("--seed", type=_seed, default=0, help="seeds the noise z and the condition sample")
    p.add_argument("--mean", action="store_true", help="use the condition's mean instead of a sample of it")
    p.set_defaults(func=_cmd_imagine)

    p = sub.add_parser("serve", help="a search service and web page for an indexed run (FastAPI + uvicorn)")
    p.add_argument("run")
    p.add_argument("--index", default=None, help="index folder (default: RUN/index)")
    p.add_argument("--host", default=None, help="address to bind (any but 127.0.0.1 / localhost is warned about)")
    p.add_argument("--port", type=_Number(1, 65535), default=None, help="TCP port")
    p.add_argument("--workers", type=_positive_int, default=None, help="worker processes (each loads the run)")
    p.add_argument("--max-upload-mb", type=_positive, default=None, help="largest image upload in MB")
    p.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                   help="allow this origin by CORS (repeatable; default: CORS off)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="accept requests naming this host in their Host header (repeatable; '*': any), besides "
                        "the bound address (and localhost when it is a loopback one); with --host 0.0.0.0 and no "
                        "--allow-host, any name. Other names are refused (DNS rebinding)")
    p.add_argument("--body-timeout", type=_positive, default=None, metavar="SECONDS",
                   help="a request body slower to arrive is refused (408) and its client dropped")
    p.add_argument("--max-decodes", type=_positive_int, default=None, metavar="N",
                   help="image decodes at once (uploads, gallery images checked); the others wait")
    p.add_argument("--max-filter-values", type=_positive_int, default=None, metavar="N",
                   help="filter values one query may name")
    p.add_argument("--graceful-timeout", type=_positive, default=None, metavar="SECONDS",
                   help="after SIGTERM, what requests in flight may take to finish; then they get a 503")
    p.add_argument("--exact-text", action="store_true",
                   help="encode query texts with the run's own text encoder, not its faster stand-in (int8 ONNX "
                        "MiniLM for minilm-l6, the same features within 1e-3 cosine)")
    p.defaults_fn = _serve_defaults  # type: ignore[attr-defined]  # read by _Parser.format_help
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("list", help="registered encoders, losses, heads, indexes, re-rankers and datasets")
    p.set_defaults(func=_cmd_list)
    return _with_threads_everywhere(ap)


def _add_threads(parser: argparse.ArgumentParser, default: object) -> None:
    """``--threads`` on ``parser`` (given before or after the command: the top-level parser and every
    subcommand take it; ``default`` SUPPRESS keeps a subcommand from overwriting the top-level value)."""
    from xmr.utils.threads import ThreadConfig

    light = ThreadConfig().light_threads
    parser.add_argument("--threads", type=_threads, default=default, metavar="N|auto",
                        help=f"threads of torch and FAISS (default: $XMR_THREADS, else auto: every core this process "
                             f"may use for encoders and index builds, {light} for heads trained on cached features; "
                             "idle threads sleep, OMP_WAIT_POLICY=PASSIVE, unless the environment says otherwise)")


def _threads(text: str) -> int | None:
    from xmr.utils.threads import parse_threads

    try:
        return parse_threads(text)
    except XmrError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _with_threads_everywhere(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--threads`` to every subcommand, however deep (``xmr data fetch``, ``xmr index add`` ...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                if "--threads" not in child._option_string_actions:
                    _add_threads(child, argparse.SUPPRESS)
                _with_threads_everywhere(child)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xmr`` console script. Returns the exit status.

    Before anything imports torch or FAISS, idle OpenMP threads are told to sleep
    (``OMP_WAIT_POLICY=PASSIVE`` unless set: :mod:`xmr.utils.threads`); the command then runs at the
    thread count ``--threads`` / ``$XMR_THREADS`` / its work gives, restored when it returns.
    """
    from xmr.utils.threads import quiet_openmp

    quiet_openmp()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(_join_index_edit(argv))
    args.argv = argv
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("faiss", "faiss.loader", "sentence_transformers", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if args.quiet:
        os.environ["XMR_NO_PROGRESS"] = "1"
    if args.max_image_pixels is not None:
        from xmr.encoders.image_io import MAX_PIXELS_ENV

        os.environ[MAX_PIXELS_ENV] = str(args.max_image_pixels)
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        from xmr.utils.threads import config_from_env, using_config

        with using_config(config_from_env(getattr(args, "threads", None))):
            args.func(args)
    except XmrError as e:
        print(f"xmr: error: {_one_line(e.worded(cli_wording))}", file=sys.stderr)
        return 2
    except OSError as e:  # the environment, not the input: a full disk, a read-only folder ...
        where = f"{e.filename}: " if e.filename else ""
        print(f"xmr: error: {where}{os_error_reason(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("xmr: error: out of memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (a scheduler's stop): temp files are removed on the way
        print("xmr: interrupted; finished work is kept, re-run the same command to resume", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every ``finally`` runs (temporary folders removed)."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated()


if __name__ == "__main__":
    sys.exit(main())
