"""Read-only folders and full disks, on real small filesystems (tmpfs; needs root, as CI has).

Every failure is one line naming the path and the reason; temporary files are removed and the
previous artefact stays whole.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from xmr.models import load_model

from hostile import TOY, TRAIN, cli_error, cli_ok, fill, make_toy_run, remount_readonly, tmpfs, tree


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_toy_run(tmp_path_factory.mktemp("fs"))


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if (p.name.startswith(".") or p.name.endswith(".tmp")) and not p.name.endswith(".lock"))


# -- 9. read-only folders -------------------------------------------------------------------------------------


def test_read_only_run_folder(run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest, cache, r = run
    with tmpfs(tmp_path / "ro", "8M") as ro:
        shutil.copytree(r, ro / "run")
        remount_readonly(ro)
        msg = cli_error(["index", ro / "run", "--split", "test", "--cache-dir", cache], capsys)
        assert str(ro / "run") in msg and "read-only file system" in msg
        msg = cli_error(["eval", ro / "run", "--cache-dir", cache], capsys)
        assert str(ro / "run") in msg and "read-only" in msg
        msg = cli_error(["train", manifest, "--out", ro / "new", "--cache-dir", cache, *TRAIN], capsys)
        assert str(ro / "new") in msg and "read-only" in msg
        load_model(ro / "run" / "best")  # reading still works
        cli_ok(["-q", "index", ro / "run", "--split", "test", "--cache-dir", cache, "--out", tmp_path / "idx"],
               capsys)


def test_read_only_cache(run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest, cache, _ = run
    with tmpfs(tmp_path / "ro", "8M") as ro:
        shutil.copytree(cache, ro / "cache")
        remount_readonly(ro)
        # everything is cached already: a read-only cache still serves
        assert "encoded 32 images" in cli_ok(["encode", manifest, "--split", "train", *TOY, "--cache-dir",
                                              ro / "cache"], capsys)
        msg = cli_error(["encode", manifest, "--image-encoder", "toy-image", "--text-encoder", "toy-text",
                         "--cache-dir", ro / "empty-cache"], capsys)
        assert str(ro / "empty-cache") in msg and "read-only" in msg


# -- 10. full disks -----------------------------------------------------------------------------------------------


def test_full_disk_index_keeps_the_previous_index(run: tuple[Path, Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    _, cache, r = run
    with tmpfs(tmp_path / "small", "2M") as small:
        out = small / "idx"
        cli_ok(["-q", "index", r, "--split", "test", "--cache-dir", cache, "--out", out], capsys)
        good = tree(out)
        fill(small, leave=4096)
        msg = cli_error(["index", r, "--cache-dir", cache, "--out", out], capsys)
        assert str(out) in msg and "no space left on device" in msg
        assert tree(out) == good and _leftovers(small) == []
        (small / "filler.bin").unlink()
        fill(small, leave=0)  # not even room for the temporary folder's owner file
        msg = cli_error(["index", r, "--split", "val", "--cache-dir", cache, "--out", small / "fresh"], capsys)
        assert "no space left on device" in msg and not (small / "fresh").exists() and _leftovers(small) == []


def test_full_disk_train_keeps_finished_epochs(run: tuple[Path, Path, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    manifest, cache, _ = run
    with tmpfs(tmp_path / "small", "1M") as small:
        out = small / "r"
        msg = cli_error(["train", manifest, "--out", out, "--cache-dir", cache, *TRAIN], capsys)
        assert str(out) in msg and "no space left on device" in msg, msg
        assert _leftovers(small) == []
        assert (out / "run.json").is_file()  # what was written whole stays


def test_full_disk_encode(run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest, _, _ = run
    with tmpfs(tmp_path / "small", "1M") as small:
        fill(small, leave=8192)
        msg = cli_error(["encode", manifest, *TOY, "--cache-dir", small / "cache"], capsys)
        assert str(small / "cache") in msg and "no space left on device" in msg, msg
        assert _leftovers(small) == []
