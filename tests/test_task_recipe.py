"""ARCHITECTURE.md's recipe for a task is true: a task written outside ``xmr`` (here, in this file: a
``Task`` subclass and its run config, no package) and registered in ``TASKS`` is trained, evaluated
and searched through ``xmr.cli.main`` with no edit of the CLI; its options are its own (another
task's are refused by name, its defaults are its config's); a command it declares no capability for
is refused in one line; and the recipe's own code block runs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from xmr.cli import build_parser, main, train_config_from_args
from xmr.data.manifest import Item, read_manifest, write_manifest
from xmr.errors import Param, XmrError
from xmr.runs import BaseRunConfig, save_run_config, saved_run_matches
from xmr.tasks import TASKS, EvalOutcome, OptionParser, Options, Task, TrainOutcome, pick, task_of_run
from xmr.utils.argtypes import positive_int

from hostile import cli_error

ARCHITECTURE = Path(__file__).resolve().parents[1] / "ARCHITECTURE.md"


@dataclass(frozen=True)
class TinyRunConfig(BaseRunConfig):
    """A run that "learns" which words the training items' texts use."""

    ABOUT: ClassVar[str] = "a tiny word-list run"
    min_count: int = 1
    split: str = "train"
    task: str = field(default="tiny", kw_only=True)


class TinyTask(Task[TinyRunConfig]):
    """Train: count the words of the training texts. Eval: the share of a split's texts whose every
    word was seen. Search: the items whose texts hold a word."""

    name = "tiny"
    about = "the words of the training texts"
    config_class = TinyRunConfig

    def add_arguments(self, command: str, parser: OptionParser) -> None:
        if command == "train":
            parser.add_argument("--min-count", type=positive_int, default=TinyRunConfig.min_count,
                                help="words seen fewer times are left out")
            parser.add_argument("--split", default=TinyRunConfig.split, help="the split to learn from")
        elif command == "search":
            parser.add_argument("--word", help="the word to look for")
            parser.add_argument("-k", type=positive_int, default=3, help="items to show")

    def config_from_options(self, manifest: str, given: Options) -> TinyRunConfig:
        return TinyRunConfig(manifest=manifest, **pick(given, {"min_count": "min_count", "split": "split"}))

    def train(self, config: TinyRunConfig, out_dir: str | Path, *, cache_dir: str | Path | None = None,
              overwrite: bool = False, given: Options | None = None, runtime: object = None) -> TrainOutcome:
        out = Path(out_dir)
        if not overwrite and not saved_run_matches(out, config):
            raise XmrError("{out} holds another run; pass {fix}", out=str(out), fix=Param("overwrite", True))
        counts: dict[str, int] = {}
        for it in read_manifest(config.manifest):
            if it.split == config.split:
                for word in " ".join(it.texts).split():
                    counts[word] = counts.get(word, 0) + 1
        words = sorted(w for w, n in counts.items() if n >= config.min_count)
        out.mkdir(parents=True, exist_ok=True)
        save_run_config(out, config)
        (out / "words.json").write_text(json.dumps(words))
        return TrainOutcome("trained", 1, {"words": len(words)}, out, f"{len(words)} words")

    def evaluate(self, run_dir: str | Path, given: Options, *, split: str, cache_dir: str | Path | None = None,
                 command: str | None = None, runtime: object = None) -> EvalOutcome:
        cfg = self.load_run_config(run_dir)
        words = set(json.loads((Path(run_dir) / "words.json").read_text()))
        texts = [t for it in read_manifest(cfg.manifest) if it.split == split for t in it.texts]
        known = sum(all(w in words for w in t.split()) for t in texts) / max(len(texts), 1)
        written = Path(run_dir) / f"eval-{split}.json"
        written.write_text(json.dumps({"known": known, "command": command}))
        return EvalOutcome({"known": known}, f"{split}: {100 * known:.0f}% of {len(texts)} texts known", written)

    def search(self, run_dir: str | Path, given: Options, *, runtime: object = None) -> Iterator[str]:
        if given.get("word") is None:
            raise XmrError("give a word to look for ({word})", word=Param("word"))
        items = read_manifest(self.load_run_config(run_dir).manifest)
        hits = [it.id for it in items if any(given["word"] in t.split() for t in it.texts)]
        yield from hits[:int(given.get("k") or 3)]


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Path]:
    """The tiny task registered for the test (and taken out after), and a manifest for it."""
    items = [Item(f"i{n}", str(tmp_path / f"{n}.png"), (text,), split=split)
             for n, (text, split) in enumerate([("a red circle", "train"), ("a blue square", "train"),
                                                ("a red square", "test"), ("a green star", "test")])]
    TASKS.add(TinyTask.name, TinyTask())
    try:
        yield write_manifest(items, tmp_path / "m.jsonl")
    finally:
        TASKS._items.pop(TinyTask.name)


def test_a_task_defined_outside_xmr_is_trained_evaluated_and_searched_by_the_cli(
        tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(["train", str(tiny), "--out", str(run), "--task", "tiny"]) == 0
    assert "trained: best epoch 1, 5 words" in capsys.readouterr().out
    assert task_of_run(run) is TASKS.get("tiny") and json.loads((run / "run.json").read_text())["task"] == "tiny"
    assert main(["eval", str(run), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "test: 50% of 2 texts known" in out and f"written: {run / 'eval-test.json'}" in out
    assert main(["search", str(run), "--word", "red", "-k", "5"]) == 0
    assert capsys.readouterr().out.split() == ["i0", "i2"]
    assert main(["train", str(tiny), "--out", str(run), "--task", "tiny", "--min-count", "2", "--overwrite"]) == 0
    assert json.loads((run / "words.json").read_text()) == ["a"]


def test_its_options_are_its_own_with_their_defaults(tiny: Path, capsys: pytest.CaptureFixture) -> None:
    parsed = build_parser().parse_args(["train", str(tiny), "--out", "r", "--task", "tiny"])
    assert train_config_from_args(parsed) == TinyRunConfig(manifest=str(tiny))
    parsed = build_parser().parse_args(["train", str(tiny), "--out", "r", "--task", "tiny", "--min-count", "4"])
    assert train_config_from_args(parsed) == TinyRunConfig(manifest=str(tiny), min_count=4)
    for argv, named in ((["--loss", "vse++"], "--loss does not apply to --task tiny"),
                        (["--compose", "tirg", "--epochs", "3"], "--compose, --epochs do not apply to --task tiny")):
        with pytest.raises(XmrError, match=named):
            train_config_from_args(build_parser().parse_args(["train", str(tiny), "--out", "r", "--task", "tiny",
                                                              *argv]))
    with pytest.raises(XmrError, match="--min-count does not apply to --task retrieval"):
        train_config_from_args(build_parser().parse_args(["train", str(tiny), "--out", "r", "--min-count", "2"]))
    sub = next(a for a in build_parser()._actions if a.dest == "cmd").choices["train"]  # type: ignore[attr-defined]
    text = " ".join(sub.format_help().split())
    assert "--min-count MIN_COUNT words seen fewer times are left out (default: tiny: 1)" in text
    assert "tiny: the words of the training texts" in text  # in --task's help


def test_a_command_it_declares_no_capability_for_is_refused_in_one_line(
        tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(["-q", "train", str(tiny), "--out", str(run), "--task", "tiny"]) == 0
    for argv, cannot in ((["caption", run, "--image", tmp_path / "0.png"], "cannot caption images"),
                         (["imagine", run, "--text", "a star", "--out", tmp_path / "x.png"], "cannot draw images"),
                         (["index", run], "has no joint-space index to build"),
                         (["serve", run], "cannot be served")):
        err = cli_error(argv, capsys)
        assert f"{run} is a tiny word-list run; it {cannot}" in err, err
    assert "--rerank does not apply to `xmr search` of a tiny run" in cli_error(
        ["search", run, "--word", "red", "--rerank", "diffusion"], capsys)
    assert "give a word to look for (--word)" in cli_error(["search", run], capsys)


def test_a_capability_is_declared_exactly_when_its_method_is_given() -> None:
    with pytest.raises(TypeError, match="declare 'captions'"):
        type("Half", (TinyTask,), {"caption": lambda self, run_dir, image, beam=None: "x"})
    with pytest.raises(TypeError, match="declare 'imagines'"):
        type("Claims", (TinyTask,), {"capabilities": frozenset({"imagines"})})
    assert not TinyTask().can("captions")
    with pytest.raises(XmrError, match="unknown capability 'fly'"):
        TinyTask().can("fly")


def _recipe() -> str:
    """The python block of ARCHITECTURE.md's "A task" recipe."""
    text = ARCHITECTURE.read_text()
    section = text[text.index("- **A task**"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_the_architecture_recipe_runs_as_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import textwrap

    namespace: dict[str, Any] = {"__name__": "architecture_recipe"}  # a module of its own, as a file would be
    code = compile(textwrap.dedent(_recipe()), str(ARCHITECTURE), "exec", dont_inherit=True)  # as a file of its own
    exec(code, namespace)  # noqa: S102
    try:
        task = TASKS.get("captioning")
        assert isinstance(task, Task) and task.can("captions") and task.config_class.__name__ == "CaptionRunConfig"
        parsed = build_parser().parse_args(["train", "m.jsonl", "--out", "r", "--task", "captioning", "--beam", "5"])
        assert train_config_from_args(parsed) == task.config_class(manifest="m.jsonl", beam=5)
        (tmp_path / "run.json").write_text(json.dumps({"task": "captioning", "manifest": "m.jsonl"}))
        assert main(["caption", str(tmp_path), "--image", "x.png"]) == 0  # its caption, through the capability
    finally:
        TASKS._items.pop("captioning", None)
