"""One source of truth: ``xmr train`` builds the same config as the Python API; foreign options are refused."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import os
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from xmr.cli import build_parser, train_config_from_args
from xmr.errors import XmrError
from xmr.objectives import GenerativeConfig
from xmr.runs import FinetuneConfig, RunConfig
from xmr.tasks.composed.config import ComposedRunConfig
from xmr.tasks.composed.train import ComposedTrainConfig
from xmr.text import TextEncoderConfig
from xmr.training import TrainConfig


def _cli(*args: str):
    return train_config_from_args(build_parser().parse_args(["train", *args]))


def test_defaults_are_the_dataclasses(tmp_path: Path) -> None:
    m = str(tmp_path / "m.jsonl")
    assert _cli(m, "--out", "r") == RunConfig(manifest=os.path.abspath(m))
    (tmp_path / "triplets.jsonl").write_text("")
    assert _cli(m, "--out", "r", "--task", "composed") == ComposedRunConfig(
        manifest=os.path.abspath(m), triplets=str(tmp_path / "triplets.jsonl"))


def test_given_options_reach_their_fields(tmp_path: Path) -> None:
    m = str(tmp_path / "m.jsonl")
    cli = _cli(m, "--out", "r", "--loss", "vse++", "--epochs", "7", "--vse0-warmup", "1", "--embed-dim", "64",
               "--text-encoder", "textcnn", "--text-length", "12", "--no-position-shift", "--word-vectors", "random",
               "--seed", "3")
    api = RunConfig(manifest=os.path.abspath(m), text_encoder="textcnn", embed_dim=64,
                    train=TrainConfig.from_flat(loss="vse++", epochs=7, vse0_warmup_epochs=1, seed=3),
                    text_model=TextEncoderConfig(kind="textcnn", length=12, position_shift=False, init="random",
                                                 seed=3))
    assert cli == api
    composed = _cli(m, "--out", "r", "--task", "composed", "--triplets", "t.jsonl", "--epochs", "4",
                    "--compose", "concat", "--in-joint")
    assert composed == ComposedRunConfig(manifest=os.path.abspath(m), triplets=os.path.abspath("t.jsonl"),
                                         composer="concat", in_joint=True, train=ComposedTrainConfig(epochs=4))


@pytest.mark.parametrize("args,named", [
    (["--task", "composed", "--loss", "vse++"], "--loss"),
    (["--task", "composed", "--margin", "0.1", "--similarity", "order"], "--margin, --similarity"),
    (["--task", "composed", "--sparse", "0.1x1"], "--sparse"),
    (["--compose", "relation"], "--compose"),
    (["--in-joint"], "--in-joint"),
    (["--text-length", "12"], "--text-length"),
    (["--no-position-shift"], "--no-position-shift"),
])
def test_options_that_do_not_apply_are_refused_by_name(tmp_path: Path, args: list[str], named: str) -> None:
    (tmp_path / "triplets.jsonl").write_text("")
    with pytest.raises(XmrError, match=named):
        _cli(str(tmp_path / "m.jsonl"), "--out", "r", *args)


def test_eval_and_search_refuse_what_the_runs_task_does_not_take(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    from xmr.cli import main

    run = tmp_path / "c"
    run.mkdir()
    (run / "run.json").write_text('{"task": "composed"}')
    for args, named in ((["eval", str(run), "--rerank", "diffusion"], "--rerank does not apply to `xmr eval` of a "
                                                                      "composed run"),
                        (["search", str(run), "--text", "x", "--image", "y.png", "--target", "texts"], "--target"),
                        (["eval", str(run), "--task", "retrieval"], "is a composed run, not retrieval")):
        assert main(args) == 2
        assert named in capsys.readouterr().err


def test_tasks_are_registered_and_dispatched_by_run_json(tmp_path: Path) -> None:
    from xmr.tasks import TASKS, task_of_run

    assert TASKS.names() == ["composed", "retrieval"]
    (tmp_path / "run.json").write_text('{"manifest": "m"}')
    assert task_of_run(tmp_path).name == "retrieval"
    (tmp_path / "run.json").write_text('{"task": "bogus"}')
    with pytest.raises(XmrError, match="unknown task 'bogus'"):
        task_of_run(tmp_path)


def test_losses_carry_their_capabilities() -> None:
    from xmr.losses import LOSSES
    from xmr.losses.registry import capabilities

    assert capabilities("infonce").inner_product_only and not capabilities("infonce").takes_margin
    assert all(capabilities(n).takes_margin and not capabilities(n).inner_product_only
               for n in LOSSES.names() if n != "infonce")
    assert TrainConfig(loss="infonce").loss_kwargs() == {} and TrainConfig(loss="vse0").loss_kwargs() == {"margin": 0.2}
    with pytest.raises(XmrError, match="infonce scores by the inner product"):
        RunConfig(manifest="m", similarity="order")


def test_an_encoder_of_the_other_modality_is_refused_before_any_folder(tmp_path: Path) -> None:
    with pytest.raises(XmrError, match="'toy-image' encodes images, not texts"):
        _cli(str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "r"), "--image-encoder", "toy-image",
             "--text-encoder", "toy-image")
    with pytest.raises(XmrError, match="'minilm-l6' encodes texts, not images"):
        RunConfig(manifest="m", image_encoder="minilm-l6")
    assert not (tmp_path / "r").exists()


def test_head_settings_have_one_source() -> None:
    import dataclasses

    from xmr.models import ModelConfig
    from xmr.runs.config import HEAD_FIELDS, head_settings

    model_defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    run_defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    assert all(run_defaults[n] == model_defaults[n] for n in HEAD_FIELDS)
    cfg = RunConfig(manifest="m", embed_dim=64, head="linear", two_branch=0.5)
    settings = head_settings(cfg)
    assert settings["embed_dim"] == 64 and settings["head"] == "linear" and settings["two_branch"] == 0.5
    assert set(settings) <= set(model_defaults)


def test_the_new_training_options_build_the_same_config_as_the_api(tmp_path: Path) -> None:
    from xmr.encoders.augment import AugmentConfig
    from xmr.runs.config import TrainSource

    m = str(tmp_path / "m.jsonl")
    cli = _cli(m, f"{tmp_path / 'icons.jsonl'}:train,val@0.5", "--out", "r", "--augment-views", "2", "--augment",
               "crop,grey", "--finetune-image-blocks", "3", "--finetune-lr", "5e-5", "--ema", "0.99",
               "--finetune-text-layers", "1", "--finetune-text-length", "16", "--cross-style", "0.5")
    api = RunConfig(manifest=os.path.abspath(m),
                    extra_train=(TrainSource(str(tmp_path / "icons.jsonl"), ("train", "val"), 0.5),),
                    augment=AugmentConfig(views=2, kinds=("crop", "grey")),
                    finetune=FinetuneConfig(image_blocks=3, text_layers=1, text_length=16),
                    train=TrainConfig.from_flat(finetune_lr=5e-5, ema_decay=0.99, cross_style=0.5))
    assert cli == api


def test_the_generative_options_build_the_same_config_as_the_api(tmp_path: Path) -> None:
    m = str(tmp_path / "m.jsonl")
    cli = _cli(m, "--out", "r", "--two-branch", "0.5", "--similarity", "order", "--loss", "vse0",
               "--generative", "i2t,t2i", "--caption-xe-only", "--caption-xe-epochs", "2")
    api = RunConfig(manifest=os.path.abspath(m), two_branch=0.5, similarity="order",
                    train=TrainConfig.from_flat(loss="vse0", generative=("i2t", "t2i"), caption_rl=False,
                                                caption_xe_epochs=2))
    assert cli == api
    gen = _cli(m, "--out", "r", "--two-branch", "0.5", "--generative", "t2i").train.components.generative
    assert gen is not None and gen.paths == ("t2i",)


def test_the_caption_schedules_follow_the_config() -> None:
    cfg = GenerativeConfig(("i2t",), caption_xe_epochs=2, scheduled_sampling=0.25, scheduled_sampling_step=0.1)
    assert [cfg.caption_gamma(e, epochs=6) for e in range(6)] == pytest.approx([0, 0, 0.05, 0.35, 0.65, 0.95])
    assert [cfg.sampling_prob(e) for e in range(4)] == pytest.approx([0, 0.1, 0.2, 0.25])
    assert GenerativeConfig(("i2t",), caption_rl=False).caption_gamma(10, epochs=30) == 0.0


def _option_help(help_text: str, option: str) -> str:
    """The help paragraph of ``option`` in argparse's output (its lines up to the next option)."""
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(option + " "))
    para = [lines[start]]
    for line in lines[start + 1:]:
        if line.strip().startswith("-"):
            break
        para.append(line)
    return " ".join(" ".join(para).split())


def test_train_help_shows_each_default_from_the_dataclasses() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "cmd").choices["train"]  # type: ignore[attr-defined]
    text = sub.format_help()
    assert f"(default: {TrainConfig().epochs} (composed: {ComposedTrainConfig().epochs}))" in \
        _option_help(text, "--epochs")
    assert f"(default: {TrainConfig().lr})" in _option_help(text, "--lr")
    assert f"(default: {TrainConfig().batch_size} (composed: {ComposedTrainConfig().batch_size}))" in \
        _option_help(text, "--batch-size")
    assert f"(default: {RunConfig.image_encoder} (composed: {ComposedRunConfig.image_encoder}))" in \
        _option_help(text, "--image-encoder")
    assert f"(default: {TrainConfig().margin})" in _option_help(text, "--margin")
    assert "composed: tirg" in _option_help(text, "--compose")  # an option of the other task only
    assert _option_help(text, "--augment").count("(default") == 1  # a hand-written default is not doubled


def test_epoch_eta_is_the_mean_epoch_time_times_the_epochs_left() -> None:
    from xmr.utils.progress import epoch_eta

    assert epoch_eta([10.0, 14.0], 32) == "12.0 s/epoch, at most 6.0 min left"
    assert epoch_eta([3.0], 4) == "3.0 s/epoch, at most 9 s left"
    assert epoch_eta([3.0, 3.0], 2) == "3.0 s/epoch, the last epoch"
    assert epoch_eta([], 5) == ""


# --- every command's option defaults have one source: a field of the config dataclass the command
# fills, or a keyword parameter of the one library function it calls. An option the user does not give
# defaults to None (not given: the library's own default applies) or to that very value, and --help
# shows it. ``xmr train``'s options are checked through the tasks' ``train_fields`` below.

_FOLDER = "xmr.workflows.folder:write_folder_manifest"
_RAY = "xmr.workflows.ray_encode:RayEncodeConfig"
_JOB = "xmr.workflows.index_job:IndexJob"
_EVAL = "xmr.workflows.evaluate:evaluate_run"
_SERVE = "xmr.serve.config:ServeConfig"
_DEMO = "xmr.workflows.demo:run_demo"

#: (command, option dest) -> (where its default lives, ``module:name``; the field or parameter there)
DEFAULT_SOURCES: dict[tuple[str, str], tuple[str, str]] = {
    ("", "max_image_pixels"): ("xmr.encoders.image_io:ImageReadConfig", "max_pixels"),
    ("", "quiet"): ("xmr.utils.progress:ProgressConfig", "quiet"),
    ("", "threads"): ("xmr.utils.threads:ThreadConfig", "threads"),
    ("data fetch", "cache_dir"): ("xmr.data:fetch_dataset", "cache_dir"),
    **{("data manifest", d): (_FOLDER, d) for d in ("recursive", "captions", "seed", "overwrite")},
    ("data manifest", "split"): (_FOLDER, "split_fractions"),
    **{("encode", d): ("xmr.runs.config:RunConfig", d) for d in ("image_encoder", "text_encoder")},
    **{("encode", d): (_RAY, d) for d in ("address", "num_cpus", "partitions", "partition_size", "actors",
                                          "cpus_per_actor", "gpus_per_actor", "retries")},
    **{("encode", d): ("xmr.workflows.features:encode_items", d) for d in ("skip_bad", "cache_dir")},
    ("encode", "image_root"): ("xmr.data.readers:read_items", "image_root"),
    ("encode", "recursive"): ("xmr.data.folder:scan_folder", "recursive"),
    **{("index", d): (_JOB, d) for d in ("manifest", "images", "recursive", "shards", "split", "factory",
                                         "memory_budget", "texts_per_item", "tune", "edits", "skip_bad", "cache_dir",
                                         "rerank")},
    ("index", "out"): (_JOB, "out_dir"),
    **{("index", d): ("xmr.workflows.pretrained:index_folder", d) for d in ("image_encoder", "text_encoder")},
    **{("pretrained", d): ("xmr.workflows.pretrained:pretrained_run", d)
       for d in ("image_encoder", "text_encoder", "manifest", "overwrite")},
    ("index", "rerank_target"): (_JOB, "rerank_targets"),
    **{("index", d): ("xmr.index.config:IndexConfig", d) for d in ("ef_search", "nprobe", "refine")},
    **{("index add", d): ("xmr.workflows.index_edit:add_to_index", d) for d in ("split", "skip_bad", "cache_dir")},
    ("index add", "index"): ("xmr.workflows.index_edit:add_to_index", "index_dir"),
    ("index remove", "index"): ("xmr.workflows.index_edit:remove_from_index", "index_dir"),
    **{("search", d): ("xmr.tasks.options:SearchOptions", d) for d in ("k", "target")},
    ("search", "index"): ("xmr.search.searcher:Searcher.from_run", "index_dir"),
    **{("eval", d): (_EVAL, d) for d in ("split", "mode", "manifest", "texts_per_item", "skip_bad", "cache_dir",
                                         "out", "rerank")},
    ("demo", "out"): (_DEMO, "out_dir"),
    **{("demo", d): (_DEMO, d) for d in ("epochs", "more_data", "cache_dir")},
    ("caption", "beam"): ("xmr.workflows.imagine:caption_image", "beam"),
    ("export", "overwrite"): ("xmr.workflows.export:export_hf_checkpoint", "overwrite"),
    **{("imagine", d): ("xmr.workflows.imagine:imagine_images", d) for d in ("n", "seed", "mean")},
    ("serve", "index"): ("xmr.serve.run:serve", "index_dir"),
    **{("serve", d): (_SERVE, d) for d in ("host", "port", "workers", "max_upload_mb", "body_timeout", "max_decodes",
                                           "max_filter_values", "graceful_timeout")},
    **{(command, d): ("xmr.runtime.config:RuntimeConfig", d)
       for command in ("encode", "eval", "index", "index add", "search", "serve", "caption", "imagine")
       for d in ("device", "precision")},
    **{(command, "loader_workers"): ("xmr.runtime.config:RuntimeConfig", "loader_workers")
       for command in ("encode", "eval", "index", "index add")},
    ("serve", "cors"): (_SERVE, "cors_origins"),
    ("serve", "allow_host"): (_SERVE, "allowed_hosts"),
}

#: options of no library field or parameter, and why
NO_FIELD: dict[tuple[str, str], str] = {
    ("", "verbose"): "the command line's own logging level",
    ("data fetch", "seed"): "None: the dataset's own seed (OpenclipartConfig.seed, 0); datasets without a seeded "
                            "split refuse one",
    ("encode", "images"): "an input (a manifest or --images)",
    ("encode", "split"): "every item unless given (select_split(items, None))",
    ("encode", "engine"): "which function encodes (encode_items here, encode_with_ray on Ray), a setting of neither",
    ("encode", "shards"): "encode_in_process / encode_with_ray take the folder (no default); the CLI names one in the "
                          "cache after the partition plan's digest",
    ("index", "rerank_param"): "parameters of the --rerank methods: their params dataclasses hold the defaults",
    ("search", "text"): "a query", ("search", "image"): "a query", ("search", "queries"): "a file of queries",
    ("search", "json"): "output format of the command line", ("search", "sheet"): "an output file, off unless given",
    ("search", "rerank"): "off unless given (Searcher.from_run(rerank=None))",
    ("search", "rerank_param"): "query-time parameters of the --rerank method: its params dataclass holds the defaults",
    ("search", "exact_text"): "a switch: the command line searches with the fast query encoder "
                              "(Searcher.from_run(fast_text=True)) unless given",
    ("eval", "captions"): "a switch: also the caption metrics (the task's report)",
    ("eval", "task"): "checks the run's own task (run.json), no default to hold",
    ("eval", "rerank_param"): "parameters of the --rerank methods: their params dataclasses hold the defaults",
    ("serve", "exact_text"): "a switch that turns ServeConfig.fast_text (True) off",
}


def _walk(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
          ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command that runs (``""``: the global options) with its parser; command groups left out."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not words or not subs:
        yield " ".join(words), parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _walk(sub, (*words, name))


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options that may be left out: not help, not a positional, not a required option."""
    return [a for a in parser._actions if a.option_strings and not a.required
            and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
            and not (a.dest == "threads" and a.default is argparse.SUPPRESS and parser.prog != "xmr")]


def _library_default(where: str, name: str) -> object:
    """The default of field or parameter ``name`` of ``where`` (``module:Name[.attr]``), read here on its own."""
    module, _, path = where.partition(":")
    owner: typing.Any = importlib.import_module(module)
    for part in path.split("."):
        owner = getattr(owner, part)
    if dataclasses.is_dataclass(owner):
        f = {f.name: f for f in dataclasses.fields(owner)}[name]
        return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return inspect.signature(owner).parameters[name].default


def _renderings(value: object) -> set[str]:
    """How --help may write ``value``."""
    out = {str(value)}
    if isinstance(value, (tuple, list)):
        out.add(",".join(map(str, value)))
    if isinstance(value, float):
        out.add(f"{value:g}")
    if isinstance(value, int) and not isinstance(value, bool):
        out.add(f"{value:,}")
    return out


def _shown(help_text: str, action: argparse.Action) -> str | None:
    """What ``(default: ...)`` the help paragraph of ``action`` shows, if any (its lines from the one that
    starts with the option, at the options' indent, to the next option)."""
    lines = help_text.splitlines()
    option = action.option_strings[0]
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {option} ") or line == f"  {option}")
    para = [lines[start]]
    for line in lines[start + 1:]:
        if line.startswith("  -") or not line.startswith("   "):
            break
        para.append(line)
    text = " ".join(" ".join(para).split())
    return text.split("(default: ", 1)[1] if "(default: " in text else None


def _check_option(command: str, parser: argparse.ArgumentParser, help_text: str, action: argparse.Action) -> None:
    where, name = DEFAULT_SOURCES[(command, action.dest)]
    want = _library_default(where, name)
    flag = f"xmr {command} {action.option_strings[0]}".replace("  ", " ")
    if action.default is None or action.default is argparse.SUPPRESS:  # not given: the library's default applies
        shown = _shown(help_text, action)
        if isinstance(action, argparse._StoreConstAction) and not isinstance(action, argparse._StoreTrueAction):
            return  # one of a group of switches (--keep-edits / --drop-edits): their help says what neither does
        if want is not None and want is not False and want != ():
            assert shown is not None and any(r in shown for r in _renderings(want)), \
                f"{flag}: --help shows {shown!r}, the default is {where}.{name} = {want!r}"
    elif isinstance(action, (argparse._StoreTrueAction, argparse._AppendAction)):  # a switch, off unless given
        assert not action.default and not want, f"{flag}: {action.default!r} vs {where}.{name} = {want!r}"
    else:
        assert action.default == want, f"{flag}: defaults to {action.default!r}, {where}.{name} = {want!r}"


def test_every_option_default_is_its_library_default() -> None:
    seen = set()
    for command, parser in _walk(build_parser()):
        if command == "train":
            continue  # the tasks' fields: the test below
        help_text = parser.format_help()
        for action in _options(parser):
            key = (command, action.dest)
            seen.add(key)
            if key in NO_FIELD:
                continue
            assert key in DEFAULT_SOURCES, f"xmr {command} {action.option_strings[0]}: where does its default live? " \
                                           "(DEFAULT_SOURCES, or NO_FIELD with the reason)"
            _check_option(command, parser, help_text, action)
    assert not (set(DEFAULT_SOURCES) | set(NO_FIELD)) - seen, "entries for options that no longer exist"


#: ``xmr train`` options that fill no field of a task's configs, and why
TRAIN_NO_FIELD = {
    "task": "picks the task (TASKS), whose configs hold the other defaults",
    "overwrite": "a switch of the task's train (train_run(overwrite=False))",
    "skip_bad": "a switch of the task's train (train_run(skip_bad=False))",
    "cache_dir": "the cache root: $XMR_CACHE_DIR or ~/.cache/xmr (train_run(cache_dir=None))",
    "device": "where it trains, not the run: RuntimeConfig.device (tests/test_runtime.py checks --help)",
    "precision": "at which precision it trains, not the run: RuntimeConfig.precision (tests/test_runtime.py)",
    "loader_workers": "how its images are read, not the run: RuntimeConfig.loader_workers",
    "process_backend": "how several processes exchange tensors, not the run: DistributedConfig.backend "
                       "(tests/test_distributed.py checks --help)",
    "image_root": "Karpathy files' image folder, made absolute (None: the paths as the file gives them)",
    "triplets": "composed: the triplet file; not given: triplets.jsonl beside the manifest",
    "caption_xe_only": "a switch that turns the caption decoder's self-critical reward (on by default) off",
    "no_position_shift": "a switch that turns the text model's position shift (on by default) off",
    "train_bn_stats": "a switch: the fine-tuned blocks' BatchNorm statistics update (frozen by default)",
}


def test_every_train_option_default_is_its_task_field() -> None:
    from xmr.tasks import TASKS

    sub = dict(_walk(build_parser()))["train"]
    help_text = sub.format_help()
    fields = {dest: (cls, name) for task in TASKS.names() for cls, by_dest in TASKS.get(task).train_fields.items()
              for dest, name in by_dest.items()}
    for action in _options(sub):
        if action.dest in TRAIN_NO_FIELD:
            continue
        if action.dest == "augment":  # its help says "(default: all four)" of the kinds it lists
            assert "(default: all four)" in _option_help(help_text, "--augment")
            continue
        assert action.dest in fields, f"xmr train {action.option_strings[0]}: no task field (or TRAIN_NO_FIELD)"
        assert action.default is None, f"xmr train {action.option_strings[0]}: not given must leave the field's default"
        cls, name = fields[action.dest]
        want = {f.name: f.default for f in dataclasses.fields(cls)}[name]
        if want is not dataclasses.MISSING and want is not None and want is not False:
            shown = _shown(help_text, action)
            assert shown is not None and any(r in shown for r in _renderings(want)), \
                f"xmr train {action.option_strings[0]}: --help shows {shown!r}, {cls.__name__}.{name} = {want!r}"


def test_an_index_without_options_is_the_default_job(tmp_path: Path) -> None:
    from xmr.cli.index import index_job
    from xmr.workflows.index_job import IndexJob

    args = build_parser().parse_args(["index", str(tmp_path)])
    args.argv = ["index", str(tmp_path)]
    assert index_job(args) == IndexJob(command=f"xmr index {tmp_path}")
    args = build_parser().parse_args(["index", "r", "--rerank", "diffusion", "--rerank-target", "both", "--keep-edits"])
    args.argv = []
    job = index_job(args)
    assert job.rerank_targets == ("images", "texts") and job.edits == "keep" and job.index_factory == "Flat"


def test_global_options_are_library_settings_for_the_command_only(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """``-q`` and ``--max-image-pixels`` reach the library as settings for the command's run, not through
    the environment (children inherit the environment; a second ``main`` in the process must not)."""
    from xmr.cli import main
    from xmr.encoders.image_io import ImageReadConfig, current_image_read
    from xmr.utils.progress import current_progress, progress_silenced

    monkeypatch.delenv("XMR_MAX_IMAGE_PIXELS", raising=False)
    monkeypatch.delenv("XMR_NO_PROGRESS", raising=False)
    seen: dict[str, object] = {}
    monkeypatch.setattr("xmr.cli.listing.run", lambda a: seen.update(
        pixels=current_image_read().max_pixels, quiet=current_progress().quiet, silenced=progress_silenced()))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # set once per process by utils.threads.quiet_openmp
    before = dict(os.environ)
    assert main(["-q", "--max-image-pixels", "1000", "list"]) == 0
    assert seen == {"pixels": 1000, "quiet": True, "silenced": True}
    assert dict(os.environ) == before
    assert current_image_read() == ImageReadConfig() and not current_progress().quiet and not progress_silenced()
    monkeypatch.setenv("XMR_MAX_IMAGE_PIXELS", "2000")  # the environment still works, and the option wins
    assert main(["list"]) == 0 and seen["pixels"] == 2000 and seen["quiet"] is False
    assert main(["--max-image-pixels", "3000", "list"]) == 0 and seen["pixels"] == 3000


def test_the_pixel_limit_reaches_the_service_s_worker_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``xmr --max-image-pixels N serve RUN --workers 2``: uvicorn's workers are new processes; the limit
    travels in the service's spec, as its other settings do, and each worker sets it for its life."""
    import uvicorn

    from xmr.encoders import image_io
    from xmr.serve import run as serve_run
    from xmr.serve.config import ServeConfig

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)
    monkeypatch.delenv(serve_run._ENV, raising=False)
    with image_io.using_image_read(image_io.ImageReadConfig(max_pixels=1234)):
        serve_run.serve("run", None, ServeConfig(workers=2))
    monkeypatch.setattr(image_io, "_given", None)  # the worker: a fresh process
    seen = {}
    monkeypatch.setattr(serve_run, "build_app",
                        lambda *a, **kw: seen.update(pixels=image_io.current_image_read().max_pixels))
    serve_run.app_from_env()
    assert seen == {"pixels": 1234}
