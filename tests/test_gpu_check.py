"""benchmarks/gpu_check.py (the accelerator check of issue 27) runs on the CPU at tiny sizes: every row of its
table is there and every number is finite (what a lent GPU machine runs is the same script at full sizes)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_on_cpu_writes_every_row(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--device", "cpu", "--tiny"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {(r["check"], r["precision"]): r for r in report["rows"]}
    expected = [("encode", "fp32"), ("features", "fp32"), ("features", "bf16"), ("full step", "fp32"),
                ("xmr all step", "fp32"), ("trainer", "fp32"), ("trainer", "bf16"), ("loss", "bf16"), ("ddp", "fp32"),
                ("ddp loss", "fp32")]
    assert sorted(rows) == sorted(expected), report["rows"]
    for row in report["rows"]:
        assert math.isfinite(row["value"]) and row["value"] >= 0, row
        assert row["ok"] is not False, row
    assert rows[("features", "fp32")]["value"] == pytest.approx(1.0)  # the CPU against itself
    assert "gloo" in rows[("ddp", "fp32")]["note"]
    table = (tmp_path / "gpu_check.md").read_text()
    assert "EfficientNet-Lite0" in table and table.count("\n| ") == len(expected) + 2  # the header and its rule
