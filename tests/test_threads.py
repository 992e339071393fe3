"""xmr on a busy machine: OpenMP's idle threads sleep, thread counts follow the work (issue 25)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from tests.hostile import TOY, one_error_line, run_process

from xmr.cli import build_parser, main
from xmr.errors import XmrError
from xmr.models import ModelConfig
from xmr.utils.threads import (
    ThreadConfig,
    config_from_env,
    parse_threads,
    usable_cores,
    using_config,
    work_threads,
)


def test_auto_gives_every_core_to_heavy_work_and_one_thread_to_heads() -> None:
    auto = ThreadConfig()
    assert auto.for_work("heavy") == usable_cores() == len(os.sched_getaffinity(0))
    assert auto.for_work("light") == 1
    assert ThreadConfig(threads=3).for_work("light") == ThreadConfig(threads=3).for_work("heavy") == 3
    with pytest.raises(XmrError, match="work must be"):
        auto.for_work("medium")  # type: ignore[arg-type]
    for bad in (0, -1, 1.5, True, 2000):
        with pytest.raises(XmrError, match="threads"):
            ThreadConfig(threads=bad)  # type: ignore[arg-type]


def test_threads_parse_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_threads("auto") is None and parse_threads(" 4 ") == 4
    for bad in ("0", "-2", "1.5", "two", "inf", "nan", "5000", "9" * 400):
        with pytest.raises(XmrError, match=r"must be in \[1, 1024\] \(a whole number\)"):
            parse_threads(bad)
    monkeypatch.delenv("XMR_THREADS", raising=False)
    assert config_from_env() == ThreadConfig()
    monkeypatch.setenv("XMR_THREADS", "3")
    assert config_from_env().threads == 3 and config_from_env(2).threads == 2  # the option wins
    monkeypatch.setenv("XMR_THREADS", "many")
    with pytest.raises(XmrError, match=r"\$XMR_THREADS must be in \[1, 1024\]"):
        config_from_env()


def test_the_model_says_whether_training_it_is_light_work() -> None:
    heads = ModelConfig("a", "b", 8, 8)
    assert heads.training_work == "light"
    tail = ModelConfig("a", "b", 8, 8, image_tail={"encoder": "efficientnet-lite0", "n_tail": 2})
    assert tail.training_work == "heavy"


def test_counts_are_set_for_the_block_and_restored() -> None:
    before = torch.get_num_threads()
    with using_config(ThreadConfig(threads=2)):
        assert torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
        with work_threads("light") as n:
            assert n == 2 and torch.get_num_threads() == 2  # an explicit count holds for every work
        with work_threads("light", ThreadConfig()) as n:
            assert n == 1 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_every_command_takes_threads_before_or_after_it() -> None:
    parser = build_parser()
    assert parser.parse_args(["--threads", "2", "list"]).threads == 2
    assert parser.parse_args(["list", "--threads", "auto"]).threads is None
    assert parser.parse_args(["index add", "run", "m.jsonl", "--threads", "1"]).threads == 1
    assert parser.parse_args(["data", "fetch", "emoji", "--threads", "3"]).threads == 3
    assert "--threads" in parser._subparsers._group_actions[0].choices["train"].format_help()  # type: ignore[union-attr]
    line = one_error_line(run_process(["--threads", "0", "list"]))
    assert "--threads" in line and "'0'" in line
    assert "$XMR_THREADS" in one_error_line(run_process(["list"], env={"XMR_THREADS": "nan"}))


def test_the_entry_point_imports_no_openmp_library() -> None:
    """The wait policy is read once, when OpenMP loads: ``xmr.cli`` must not load torch or FAISS."""
    p = run_process([], code="import sys, xmr.cli; print(sorted({'torch', 'faiss'} & set(sys.modules)))")
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stderr


@pytest.mark.parametrize(("given", "spin"), [(None, "'0'"), ("ACTIVE", "'30000000000'")])
def test_a_command_sleeps_its_idle_openmp_threads(shapes_manifest: Path, tmp_path: Path, given: str | None,
                                                  spin: str) -> None:
    """libgomp prints its settings with OMP_DISPLAY_ENV=VERBOSE: spin count 0 = PASSIVE (300000 when
    nobody sets a policy: the busy-wait that made training 10x slower beside other work);
    a policy the user sets is kept."""
    env = {"OMP_DISPLAY_ENV": "VERBOSE", **({"OMP_WAIT_POLICY": given} if given else {})}
    unset = ("XMR_THREADS", "OMP_NUM_THREADS", *(() if given else ("OMP_WAIT_POLICY",)))
    p = run_process(["-v", "train", shapes_manifest, "--out", tmp_path / "r", *TOY, "--embed-dim", "16", "--epochs",
                     "1", "--batch-size", "16", "--cache-dir", tmp_path / "c"], env=env, unset=unset)
    assert p.returncode == 0, p.stderr[-2000:]
    spins = [line.split("=")[1].strip() for line in p.stderr.splitlines() if "GOMP_SPINCOUNT" in line]
    assert spins and set(spins) == {spin}, spins
    assert "training on 1 thread(s) (light work)" in p.stderr  # heads on cached features: one thread


def test_threads_option_reaches_the_training_loop(shapes_manifest: Path, tmp_path: Path) -> None:
    p = run_process(["-v", "--threads", "2", "train", shapes_manifest, "--out", tmp_path / "r", *TOY, "--embed-dim",
                     "16", "--epochs", "1", "--batch-size", "16", "--cache-dir", tmp_path / "c"])
    assert p.returncode == 0, p.stderr[-2000:]
    assert "training on 2 thread(s) (light work)" in p.stderr


def test_main_leaves_the_callers_thread_count_as_it_was(shapes_manifest: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    assert main(["-q", "--threads", "2", "train", str(shapes_manifest), "--out", str(tmp_path / "r"), *TOY,
                 "--embed-dim", "16", "--epochs", "1", "--batch-size", "16", "--cache-dir", str(tmp_path / "c")]) == 0
    assert torch.get_num_threads() == 1 and sys.modules.get("torch") is torch
