"""Helpers shared by the xmr benchmarks: interleaved timing, load check, markdown output."""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def load_note(own: float = 0.0) -> str:
    """One line on CPU contention: 1-minute load average vs the number of cores. ``own`` is the load
    this benchmark itself adds (its busy threads) when called mid-run; it is subtracted for the flag."""
    one, five, _ = os.getloadavg()
    cores = os.cpu_count() or 1
    busy = " -- CONTENDED (other processes compete for the CPU)" if one - own > 0.5 * cores else ""
    mine = f", ~{own:g} of it this benchmark" if own else ""
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min) on {cores} core(s){mine}{busy}"


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of ``fn``."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(cases: dict[str, Callable[[int], object]], repeat: int, n_slices: int = 1) -> dict[str, list[float]]:
    """Seconds of every case on every (round, input slice), rotating the case order each time
    (A B C, B C A, ...) so that slow phases of a noisy machine hit every case alike.

    ``cases[name](s)`` runs one case on slice ``s``. Returns name -> one time per sample, the
    samples of all cases aligned (same round and slice at the same position).
    """
    names = list(cases)
    out: dict[str, list[float]] = {n: [] for n in names}
    for i in range(repeat * n_slices):
        k = i % len(names)
        for n in names[k:] + names[:k]:
            out[n].append(timed(functools.partial(cases[n], i % n_slices)))
    return out


def paired_ratio(base: list[float], other: list[float]) -> tuple[float, float, float]:
    """Quartiles (p25, median, p75) over aligned samples of base time / other time (> 1: ``other``
    is faster). The inter-quartile range shows how far the noise of the machine moves the ratio."""
    r = sorted(b / o for b, o in zip(base, other))
    if len(r) < 2:
        return r[0], r[0], r[0]
    q1, q2, q3 = statistics.quantiles(r, n=4, method="inclusive")
    return q1, q2, q3


def fmt_ratio(q: tuple[float, float, float]) -> str:
    return f"{q[1]:.2f}x ({q[0]:.2f}-{q[2]:.2f})"


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    """Relative half-range of the samples, e.g. '±4%' (a rough noise indicator)."""
    m = median(xs)
    return f"±{50 * (max(xs) - min(xs)) / m:.0f}%" if m else "-"


def mean_sd(xs: Sequence[float], digits: int = 1) -> str:
    """``mean ± sd`` of several runs' figures, the figure alone for one run."""
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.fmean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


def markdown(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def add_session_options(ap: argparse.ArgumentParser, *, runs: str, out: Path, threads: int = 0) -> None:
    """The options every training benchmark takes: ``--runs`` (run folders), ``--out`` (results), ``--threads``."""
    ap.add_argument("--runs", type=Path, default=Path(runs), help="folder of the run folders")
    ap.add_argument("--out", type=Path, default=out, help="folder of the results (markdown + JSON)")
    ap.add_argument("--threads", type=int, default=threads,
                    help=f"torch threads (0: torch's default; default {threads})")


@dataclass(frozen=True)
class Session:
    """One invocation of a training benchmark: when it started, its feature cache, the load before it.

    ``start_session(args)`` logs at INFO, sets torch's threads (``args.threads``; 0 keeps torch's
    default) and reads ``$XMR_CACHE_DIR``; ``write`` saves the report beside its data.
    """

    cache_dir: str | None
    load_before: str
    started: float = field(default_factory=time.perf_counter)

    @property
    def command(self) -> str:
        """The command line, with the feature cache it used (the producing command of every number)."""
        return "XMR_CACHE_DIR=" + (self.cache_dir or "(default)") + " " + command_line()

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def footer(self) -> str:
        """The last line of a report: the load at start and this invocation's wall time."""
        return (f"{self.load_before} at start; this invocation {self.seconds():.0f} s (finished runs are loaded, "
                "not retrained).")

    def report(self, title: str, *blocks: str) -> str:
        """A markdown report: ``# title``, the producing command, each block as a paragraph, the footer."""
        return "\n\n".join([f"# {title}", f"Command: `{self.command}`", *blocks, self.footer()]) + "\n"

    def write(self, out_dir: Path, stem: str, text: str, data: dict[str, Any]) -> None:
        """``out_dir/<stem>.md`` and ``<stem>.json`` (``data`` + command + seconds), atomically."""
        from xmr.utils.io import save_json

        write_report(out_dir, f"{stem}.md", text)
        save_json(out_dir / f"{stem}.json", {**data, "command": self.command, "seconds": self.seconds()})


def write_report(out_dir: Path, name: str, text: str) -> Path:
    """``text`` written atomically to ``out_dir/name`` (the folder made); returns the path."""
    from xmr.utils.io import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / name, text)
    return out_dir / name


def start_session(args: argparse.Namespace, log_format: str = "%(asctime)s %(name)s: %(message)s") -> Session:
    """Start a benchmark invocation (see :class:`Session`)."""
    import logging

    import torch

    logging.basicConfig(level=logging.INFO, format=log_format)
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    return Session(os.environ.get("XMR_CACHE_DIR"), load_note())
