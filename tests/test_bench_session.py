"""The training benchmarks' shared session (xmr.bench.common): options, report layout, files written."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from xmr.bench.common import add_session_options, start_session


def test_session_options_report_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("sys.argv", ["bench.py", "--runs", "r"])
    ap = argparse.ArgumentParser()
    add_session_options(ap, runs="runs/x", out=tmp_path / "out")
    args = ap.parse_args(["--runs", "r"])
    assert (args.runs, args.out, args.threads) == (Path("r"), tmp_path / "out", 0)
    session = start_session(args)
    assert session.cache_dir == str(tmp_path / "cache")
    assert session.command == f"XMR_CACHE_DIR={tmp_path / 'cache'} python bench.py --runs r"
    text = session.report("A study", "intro", "| a |\n|---|")
    parts = text.rstrip("\n").split("\n\n")
    assert parts[:4] == ["# A study", f"Command: `{session.command}`", "intro", "| a |\n|---|"]
    assert parts[4].startswith("load average") and "this invocation" in parts[4] and len(parts) == 5
    session.write(args.out, "study", text, {"rows": {"x": 1.5}})
    assert (args.out / "study.md").read_text() == text
    saved = json.loads((args.out / "study.json").read_text())
    assert saved["rows"] == {"x": 1.5} and saved["command"] == session.command and saved["seconds"] >= 0
