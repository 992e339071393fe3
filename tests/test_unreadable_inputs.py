"""Issue 25, 2.7 and 2.9: what a folder scan cannot read is listed, counted and skipped (sub-folders,
caption sidecars), and every file argument is checked with ``stat`` before it is opened (a FIFO
never blocks, a device never fills memory), as real ``xmr`` processes.

As root, permissions do not stop reading (CAP_DAC_OVERRIDE): the processes run under ``setpriv``
without the two capabilities that bypass them, so ``chmod 000`` refuses as it does for a user.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

from xmr.data.triplets import read_triplets
from xmr.errors import XmrError

from hostile import SRC, one_error_line

DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def _xmr(args: Sequence[object], *, timeout: float = 90, max_memory: int | None = None
         ) -> subprocess.CompletedProcess[str]:
    """``python -m xmr args`` as a process that permissions apply to (root: without the DAC capabilities);
    ``$PYTHONPATH`` given to pytest wins (to run these against another checkout)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv to drop root's permission override")
        prefix = DROP_DAC
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or SRC, "XMR_NO_PROGRESS": "1",
           "OMP_NUM_THREADS": "1"}

    def limit() -> None:  # a runaway read fails with MemoryError instead of filling the machine
        if max_memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))

    return subprocess.run([*prefix, sys.executable, "-m", "xmr", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit)


def _photos(root: Path) -> Path:
    """Images with sidecars that cannot be read, and a sub-folder that cannot be listed."""
    (root / "ok").mkdir(parents=True)
    (root / "locked").mkdir()
    for name, rgb in (("red", (220, 30, 30)), ("blue", (30, 30, 220)), ("green", (30, 200, 30)),
                      ("big", (90, 90, 90)), ("ok/yellow", (220, 220, 30)), ("locked/purple", (150, 30, 150))):
        Image.new("RGB", (24, 24), rgb).save(root / f"{name}.png")
    (root / "red.txt").write_text("a red square\n")
    (root / "blue.txt").write_text("a blue square\n")
    (root / "blue.txt").chmod(0)  # unreadable
    os.mkfifo(root / "green.json")  # would block whoever opens it
    with open(root / "big.txt", "wb") as fh:  # over InputLimits.sidecar_bytes (sparse: no disk used)
        fh.truncate((1 << 20) + 1)
    (root / "locked").chmod(0)  # cannot be listed
    return root


def _unlock(root: Path) -> None:
    (root / "locked").chmod(0o755)
    (root / "blue.txt").chmod(0o644)


EXPECTED_SKIPPED = {"big.png": "too large", "blue.png": "permission denied", "green.png": "not a regular file",
                    "locked/": "cannot list folder (permission denied)"}


def _check_skipped(rows: list[dict[str, str]]) -> None:
    by_id = {row["id"]: row for row in rows}
    assert set(by_id) == set(EXPECTED_SKIPPED), rows
    for ident, reason in EXPECTED_SKIPPED.items():
        assert reason in by_id[ident]["reason"], by_id[ident]
    assert by_id["locked/"]["what"] == "folder" and by_id["blue.png"]["what"] == "sidecar"


def test_data_manifest_lists_unreadable_sub_folders_and_sidecars_and_goes_on(tmp_path: Path) -> None:
    root = _photos(tmp_path / "photos")
    try:
        proc = _xmr(["data", "manifest", root, "--out", tmp_path / "m.jsonl", "--recursive"])
    finally:
        _unlock(root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["ok/yellow.png", "red.png"]
    _check_skipped([json.loads(line) for line in (tmp_path / "m.skipped.jsonl").read_text().splitlines()])
    assert "3 image(s) with an unreadable caption sidecar + 1 unreadable sub-folder(s) left out" in proc.stdout


def test_index_images_lists_them_too(toy_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, cache = toy_run
    root = _photos(tmp_path / "photos")
    try:
        proc = _xmr(["index", run, "--images", root, "--recursive", "--out", tmp_path / "idx", "--cache-dir", cache])
    finally:
        _unlock(root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    built = json.loads((tmp_path / "idx" / "index_run.json").read_text())
    assert built["n_images"] == 2 and built["n_skipped"] == 4
    _check_skipped([json.loads(line) for line in (tmp_path / "idx" / "skipped.jsonl").read_text().splitlines()])


def test_a_sub_folder_that_cannot_be_listed_is_not_left_out_silently(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "locked").mkdir(parents=True)
    for name in ("a", "locked/b"):
        Image.new("RGB", (8, 8)).save(root / f"{name}.png")
    (root / "locked").chmod(0)
    try:
        proc = _xmr(["data", "manifest", root, "--out", tmp_path / "m.jsonl", "--recursive"])
    finally:
        (root / "locked").chmod(0o755)
    assert proc.returncode == 0 and "1 unreadable sub-folder(s) left out" in proc.stdout, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "m.skipped.jsonl").read_text().splitlines()]
    assert [(r["id"], r["image"]) for r in rows] == [("locked/", str((root / "locked").resolve()))]


def test_a_folder_that_cannot_be_listed_at_all_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "a.png")
    root.chmod(0)
    try:
        proc = _xmr(["data", "manifest", root, "--out", tmp_path / "m.jsonl"])
    finally:
        root.chmod(0o755)
    assert "cannot list folder (permission denied)" in one_error_line(proc)


# -- 2.9: every file argument is stat-ed first -------------------------------------------------------------


def test_a_fifo_as_query_file_captions_or_config_is_refused_not_waited_on(toy_run: tuple[Path, Path],
                                                                           tmp_path: Path) -> None:
    run, cache = toy_run
    fifo = tmp_path / "queries.txt"
    os.mkfifo(fifo)
    assert "not a regular file" in one_error_line(_xmr(["search", run, "--queries", fifo]))
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "pics" / "a.png")
    assert "not a regular file" in one_error_line(_xmr(["data", "manifest", tmp_path / "pics", "--out",
                                                        tmp_path / "m.jsonl", "--captions", fifo]))
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("index"))
    (copy / "best" / "model.json").unlink()  # a config file xmr reads: a FIFO there blocked `xmr eval` forever
    os.mkfifo(copy / "best" / "model.json")
    msg = one_error_line(_xmr(["eval", copy, "--cache-dir", cache]))
    assert "model.json" in msg and "not a regular file" in msg


def test_a_device_as_query_file_is_refused_before_reading(toy_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = toy_run
    (tmp_path / "q.txt").symlink_to("/dev/zero")  # endless: read whole, it fills memory
    msg = one_error_line(_xmr(["search", run, "--queries", tmp_path / "q.txt"], max_memory=6 << 30))
    assert "q.txt" in msg and "not a regular file" in msg
    assert "a folder, not a query file" in one_error_line(_xmr(["search", run, "--queries", tmp_path]))


def test_triplet_files_are_stat_ed_too(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "t.jsonl")
    with pytest.raises(XmrError, match="not a regular file"):
        read_triplets(tmp_path / "t.jsonl")
