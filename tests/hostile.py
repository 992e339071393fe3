"""Helpers for the hostile-input tests: one-line errors, real processes, small or read-only filesystems."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from xmr.cli import main

TOY = ["--image-encoder", "toy-image", "--text-encoder", "toy-text"]
TRAIN = [*TOY, "--embed-dim", "32", "--epochs", "3", "--batch-size", "16", "--lr", "3e-3", "--patience", "0"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def cli_error(args: Sequence[str], capsys: pytest.CaptureFixture) -> str:
    """Run ``xmr args`` in this process; assert exit 2 and one ``xmr: error:`` line; return it (an option
    refused while parsing exits through SystemExit, as the ``xmr`` process does)."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:
        rc = e.code  # type: ignore[assignment]  # argparse exits with an int status
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("xmr: error: ")]
    assert rc == 2, f"exit {rc}, stderr: {err}"
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def cli_ok(args: Sequence[str], capsys: pytest.CaptureFixture) -> str:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out + captured.err


def run_process(args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 120,
                code: str | None = None, unset: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """``python -m xmr args`` (or ``python -c code args``) as a real process, with a time limit;
    ``env`` added to this process's environment, the variables in ``unset`` removed from it."""
    full_env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
                "XMR_NO_PROGRESS": "1", **(env or {})}
    for name in unset:
        full_env.pop(name, None)
    cmd = [sys.executable, "-c", code, *map(str, args)] if code else [sys.executable, "-m", "xmr", *map(str, args)]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("xmr: error: ")]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "4M") -> Iterator[Path]:
    """A small tmpfs at ``path`` (a real full disk when filled); skips where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    if not _can_mount() or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                          capture_output=True).returncode != 0:
        pytest.skip("needs root and mount (a real small filesystem)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount_readonly(path: Path) -> None:
    """Make the tmpfs at ``path`` read-only: even root cannot write there (EROFS)."""
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)


def fill(folder: Path, leave: int = 0) -> None:
    """Fill the filesystem of ``folder`` until at most ``leave`` bytes are free."""
    block = b"\0" * (1 << 16)
    with open(folder / "filler.bin", "ab") as fh:
        try:
            while True:
                st = os.statvfs(folder)
                free = st.f_bavail * st.f_frsize
                if free <= leave:
                    break
                fh.write(block[: max(1, min(len(block), free - leave))])
                fh.flush()
        except OSError:
            pass


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (for "nothing changed" checks)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def make_toy_run(root: Path, *, index_split: str | None = None) -> tuple[Path, Path, Path]:
    """A trained toy run on the shapes dataset under ``root``: (manifest, cache folder, run folder)."""
    from xmr.bench.shapes import make_shapes_dataset

    manifest = make_shapes_dataset(root / "data", copies=2)
    cache, run = root / "cache", root / "run"
    assert main(["-q", "train", str(manifest), "--out", str(run), "--cache-dir", str(cache), *TRAIN]) == 0
    if index_split is not None:
        assert main(["-q", "index", str(run), "--split", index_split, "--cache-dir", str(cache)]) == 0
    return manifest, cache, run


@contextlib.contextmanager
def interrupt_at_epoch(n: int) -> Iterator[None]:
    """Inside the block, the trainer raises KeyboardInterrupt as epoch ``n`` (1-based) starts (a Ctrl-C)."""
    import xmr.training.trainer as trainer

    real, calls = trainer._epoch_and_bookkeeping, {"n": 0}

    def dying(*a: object, **k: object) -> None:
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        real(*a, **k)  # type: ignore[arg-type]

    trainer._epoch_and_bookkeeping = dying
    try:
        yield
    finally:
        trainer._epoch_and_bookkeeping = real
