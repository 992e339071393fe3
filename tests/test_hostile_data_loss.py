"""Nothing good is lost: ``index --out`` replaces only an index of this run, a checkpoint is one
atomic unit (tested with a real SIGKILL between its writes), weights are checked against their id."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from xmr.models import load_model
from xmr.utils.folders import OWNER_FILE, atomic_folder, make_temp_folder, recover_folder, remove_stale_temp_folders
from xmr.utils.weights import weights_id

from hostile import TRAIN, cli_error, cli_ok, make_toy_run, one_error_line, run_process, tree


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_toy_run(tmp_path_factory.mktemp("loss"))


def _leftovers(folder: Path) -> list[str]:
    """Hidden temporary or moved-aside entries (lock files are meant to stay)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


# -- 1. index --out ---------------------------------------------------------------------------------


def test_index_out_refuses_the_run_folder_and_its_parents(run: tuple[Path, Path, Path],
                                                         capsys: pytest.CaptureFixture) -> None:
    _, cache, r = run
    before = tree(r)
    for out in (r, r.parent):
        msg = cli_error(["index", r, "--split", "test", "--out", out, "--cache-dir", cache], capsys)
        assert "would delete the run" in msg and str(out) in msg
    assert tree(r) == before


def test_index_out_refuses_unrelated_folders_files_and_other_runs(run: tuple[Path, Path, Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    _, cache, r = run
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("x")
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    assert "not an xmr index" in cli_error(["index", r, "--split", "test", "--out", victim, "--cache-dir", cache],
                                           capsys)
    assert (victim / "notes.txt").read_text() == "x" and sorted(os.listdir(victim)) == ["notes.txt"]
    assert "not an xmr index folder" in cli_error(["index", r, "--split", "test", "--out", afile,
                                                   "--cache-dir", cache], capsys)
    assert afile.read_text() == "keep me" and not (tmp_path / ".afile.old").exists()
    assert "not an xmr index" in cli_error(["index", r, "--split", "test", "--out", r / "best",
                                            "--cache-dir", cache], capsys)
    load_model(r / "best")
    other = tmp_path / "other-index"
    other.mkdir()
    (other / "index_run.json").write_text(json.dumps({"run": "/somewhere/else", "model_id": "0" * 16}))
    assert "another run" in cli_error(["index", r, "--split", "test", "--out", other, "--cache-dir", cache], capsys)
    assert (other / "index_run.json").exists()


def test_index_out_replaces_its_own_index_and_fills_an_empty_folder(run: tuple[Path, Path, Path], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    _, cache, r = run
    out = tmp_path / "empty"
    out.mkdir()
    cli_ok(["-q", "index", r, "--split", "test", "--out", out, "--cache-dir", cache], capsys)
    first = json.loads((out / "index_run.json").read_text())
    cli_ok(["-q", "index", r, "--split", "val", "--out", out, "--cache-dir", cache], capsys)
    second = json.loads((out / "index_run.json").read_text())
    assert (first["split"], second["split"]) == ("test", "val")
    assert _leftovers(tmp_path) == []  # no temp or .old folders
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == 0o777 & ~umask  # 15: not mkdtemp's 0700


# -- 2. the best checkpoint is one unit: SIGKILL right after the new weights are in place ----------------

KILL_AFTER_WEIGHTS = """
import os, signal, sys
real = os.replace
count = [0]
def replace(src, dst, *a, **k):
    real(src, dst, *a, **k)
    if str(dst).endswith("model.safetensors"):
        count[0] += 1
        if count[0] == int(os.environ["KILL_AT_WEIGHTS"]):
            os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from xmr.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _digest(path: Path) -> str:
    """The model id recomputed by hand from the weights file (SHA-1 of sorted names and bytes)."""
    state = load_file(str(path))
    h = hashlib.sha1()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].numpy().tobytes())
    return h.hexdigest()[:16]


def _consistent(best: Path) -> dict:
    meta = json.loads((best / "model.json").read_text())
    assert _digest(best / "model.safetensors") == meta["model_id"], "weights and model.json disagree"
    assert weights_id(load_file(str(best / "model.safetensors"))) == meta["model_id"]
    return meta


def test_kill_between_checkpoint_writes_keeps_the_previous_best(run: tuple[Path, Path, Path],
                                                                tmp_path: Path) -> None:
    manifest, cache, _ = run
    out = tmp_path / "r"
    args = ["-q", "train", manifest, "--out", out, "--cache-dir", cache, *TRAIN[:-6], "--epochs", "6",
            "--batch-size", "16", "--patience", "0"]
    proc = run_process(args, env={"KILL_AT_WEIGHTS": "2"}, code=KILL_AFTER_WEIGHTS)
    assert proc.returncode == -9, proc.stderr[-2000:]  # killed right after the 2nd best's weights were written
    first = _consistent(out / "best")  # today's layout paired those weights with the 1st best's JSON
    assert load_model(out / "best").model_id == first["model_id"]
    proc = run_process(args)  # resume to the end
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = _consistent(out / "best")
    assert last["epoch"] > first["epoch"]
    assert _leftovers(out) == []


def test_kill_between_the_two_renames_of_the_fallback_swap_is_recovered(tmp_path: Path) -> None:
    target = tmp_path / "best"
    target.mkdir()
    (target / "a.txt").write_text("old")
    code = """
import sys
from pathlib import Path
from xmr.utils.folders import atomic_folder
with atomic_folder(Path(sys.argv[1])) as tmp:
    (tmp / "a.txt").write_text("new")
"""
    proc = run_process([target], env={"XMR_NO_RENAME_EXCHANGE": "1", "XMR_CRASH_AT": "swap-between-renames"},
                       code=code)
    assert proc.returncode == -9
    assert not target.exists() and (tmp_path / ".best.old" / "a.txt").read_text() == "old"
    recover_folder(target)
    assert (target / "a.txt").read_text() == "old"
    proc = run_process([target], code=code)  # with the atomic exchange
    assert proc.returncode == 0 and (target / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_load_model_recovers_a_checkpoint_left_aside(run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    best = tmp_path / "best"
    shutil.copytree(run[2] / "best", tmp_path / ".best.old")
    assert load_model(best).model_id == _consistent(best)["model_id"]


def test_atomic_folder_keeps_the_old_folder_on_error(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    (target / "x").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "x").write_text("new")
        raise RuntimeError("boom")
    assert (target / "x").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["t"]


# -- 3. the model id is checked against the weights ---------------------------------------------------------


def test_weights_of_another_run_are_refused_and_results_kept(run: tuple[Path, Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    manifest, cache, r = run
    mine, other = tmp_path / "mine", tmp_path / "other"
    shutil.copytree(r, mine)
    shutil.copytree(r, other)
    from xmr.cli import main

    assert main(["-q", "train", str(manifest), "--out", str(other), "--cache-dir", str(cache), *TRAIN,
                 "--seed", "1", "--overwrite"]) == 0
    cli_ok(["-q", "eval", mine, "--cache-dir", cache, "--texts-per-item", "1"], capsys)
    results = (mine / "eval-test-full.json").read_bytes()
    shutil.copy(other / "best" / "model.safetensors", mine / "best" / "model.safetensors")
    msg = cli_error(["eval", mine, "--cache-dir", cache, "--texts-per-item", "1"], capsys)
    assert "not the ones the checkpoint was saved with" in msg and "model.safetensors" in msg
    assert (mine / "eval-test-full.json").read_bytes() == results
    assert "not the ones" in cli_error(["index", mine, "--cache-dir", cache], capsys)


# -- 13. a killed index build leaves a temp folder; the next run removes it -----------------------------------


def test_killed_index_build_leaves_nothing_after_the_next_run(run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, cache, r = run
    mine = tmp_path / "mine"
    shutil.copytree(r, mine, ignore=shutil.ignore_patterns("index"))
    args = ["-q", "index", mine, "--split", "test", "--cache-dir", cache, "--rerank", "diffusion",
            "--rerank-param", "k=4", "--rerank-param", "n_trunc=8"]
    proc = run_process(args, env={"XMR_CRASH_AT": "replaced:gallery.sqlite"})
    assert proc.returncode == -9
    assert [p.name for p in mine.iterdir() if p.name.startswith(".index.tmp-")]
    proc = run_process(args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _leftovers(mine) == []
    assert (mine / "index" / "rerank" / "diffusion").is_dir()


def test_stale_temp_folders_only_of_dead_processes_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "index"
    live = make_temp_folder(target)  # this process: alive
    dead = tmp_path / ".index.tmp-dead"
    dead.mkdir()
    proc = run_process([], code="import os; print(os.getpid())")
    (dead / OWNER_FILE).write_text(f"{int(proc.stdout)} {(live / OWNER_FILE).read_text().split()[1]}\n")
    unrelated = tmp_path / ".index.keep"
    unrelated.mkdir()
    assert remove_stale_temp_folders(target) == [dead]
    assert live.is_dir() and unrelated.is_dir() and not dead.exists()


# -- more: two writers into one run folder or one index ------------------------------------------------------------


def test_second_writer_of_a_run_or_index_is_refused(run: tuple[Path, Path, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    from xmr.utils.folders import exclusive_lock

    manifest, cache, r = run
    out = tmp_path / "r"
    out.mkdir()
    with exclusive_lock(out / ".xmr-train.lock", "test"):  # as a running `xmr train` holds it
        proc = run_process(["train", manifest, "--out", out, "--cache-dir", cache, *TRAIN])
        assert "another xmr process is writing the run" in one_error_line(proc)
    with exclusive_lock(tmp_path / ".idx.lock", "test"):
        proc = run_process(["index", r, "--split", "test", "--cache-dir", cache, "--out", tmp_path / "idx"])
        assert "another xmr process is writing the index" in one_error_line(proc)
    cli_ok(["-q", "index", r, "--split", "test", "--cache-dir", cache, "--out", tmp_path / "idx"], capsys)


def test_sigterm_during_an_index_build_cleans_up_and_keeps_the_old_index(run: tuple[Path, Path, Path],
                                                                         tmp_path: Path) -> None:
    _, cache, r = run
    mine = tmp_path / "mine"
    shutil.copytree(r, mine, ignore=shutil.ignore_patterns("index"))
    args = ["-q", "index", mine, "--split", "test", "--cache-dir", cache]
    assert run_process(args).returncode == 0
    before = tree(mine / "index")
    proc = run_process(["-q", "index", mine, "--split", "val", "--cache-dir", cache],
                       env={"XMR_CRASH_AT": "replaced:gallery.sqlite", "XMR_CRASH_SIGNAL": "TERM"})
    assert proc.returncode == 143 and "interrupted" in proc.stderr and "Traceback" not in proc.stderr
    assert tree(mine / "index") == before and _leftovers(mine) == []


def test_eval_on_another_manifest_keeps_the_runs_own_results(run: tuple[Path, Path, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    manifest, cache, r = run
    mine = tmp_path / "mine"
    shutil.copytree(r, mine)
    cli_ok(["-q", "eval", mine, "--cache-dir", cache], capsys)
    own = (mine / "eval-test-full.json").read_bytes()
    other = tmp_path / "other" / "gallery.jsonl"
    other.parent.mkdir()
    shutil.copy(manifest, other)
    (other.parent / "img").symlink_to(manifest.parent / "img")
    out = cli_ok(["eval", mine, "--manifest", other, "--cache-dir", cache], capsys)
    assert (mine / "eval-test-full.json").read_bytes() == own
    written = [p for p in mine.glob("eval-gallery-*-test-full.json")]
    assert len(written) == 1 and f"written: {written[0]}" in out
    assert json.loads(written[0].read_text())["manifest"] == str(other)
    cli_ok(["-q", "eval", mine, "--manifest", other, "--cache-dir", cache, "--out", tmp_path / "x.json"], capsys)
    assert json.loads((tmp_path / "x.json").read_text())["split"] == "test"


class _Payload:
    """A pickle that would create a file when unpickled (what a hostile last.pt could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_resume_file_cannot_run_code(run: tuple[Path, Path, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    import torch

    manifest, cache, r = run
    mine = tmp_path / "mine"
    shutil.copytree(r, mine, ignore=shutil.ignore_patterns("index"))
    marker = tmp_path / "pwned"
    state = torch.load(mine / "last.pt", weights_only=True)
    state["st"]["status"] = "running"
    state["st"]["extra"] = _Payload(marker)
    torch.save(state, mine / "last.pt")
    msg = cli_error(["train", manifest, "--out", mine, "--cache-dir", cache, *TRAIN], capsys)
    assert "cannot resume from" in msg and not marker.exists()
