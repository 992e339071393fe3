"""Helpers shared by the xmr benchmarks: interleaved timing, load check, markdown output."""

from __future__ import annotations

import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable


def load_note() -> str:
    """One line on CPU contention: 1-minute load average vs the number of cores."""
    one, five, _ = os.getloadavg()
    cores = os.cpu_count() or 1
    busy = " -- CONTENDED (other processes compete for the CPU)" if one > 0.5 * cores else ""
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min) on {cores} core(s){busy}"


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of ``fn``."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(cases: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Time every case ``repeat`` times, rotating the order each round (A B C, B C A, ...)."""
    names = list(cases)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeat):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            out[n].append(timed(cases[n]))
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    """Relative half-range of the samples, e.g. '±4%' (a rough noise indicator)."""
    m = median(xs)
    return f"±{50 * (max(xs) - min(xs)) / m:.0f}%" if m else "-"


def markdown(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)
