"""Search speed of xmr.index against raw FAISS and numpy brute force, on random unit vectors.

Measures, in one run and on the same data:

* exact search: ``xmr`` flat ``Index`` vs raw ``faiss.IndexFlatIP`` (goal: xmr/faiss time
  <= 1.10) vs numpy brute force (matmul + argpartition, chunked over the database);
* HNSW: ``xmr`` ``create_index("hnsw")`` vs raw ``faiss.IndexHNSWFlat`` at the same M and
  efSearch: build time, QPS and recall@k against exact search;
* memory: heap growth per index (glibc ``mallinfo2``), process peak RSS (``ru_maxrss``) and
  the Python-side allocations of one search call (``tracemalloc``, shows needless copies).

Timings are interleaved (A B B A ...) over ``--repeat`` rounds and the median is reported,
which keeps the xmr/faiss ratio honest on a noisy machine. Example::

    python benchmarks/bench_search.py --sizes 100000 1000000 --dim 256 --nq 1000 --k 10
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import resource
import shlex
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from xmr.index import create_index
from xmr.utils.arrays import l2_normalize


@dataclass
class Row:
    """One line of the result table."""

    size: int
    method: str
    nq: int
    seconds: float  # best wall time of one search call over nq queries, over the rounds
    ratio: float | None = None  # best per-query time / raw faiss best per-query time
    paired: float | None = None  # median over rounds of the same ratio (same round's faiss)
    recall: float | None = None
    build_s: float | None = None
    mem_mib: float | None = None
    py_alloc_kib: float | None = None

    @property
    def qps(self) -> float:
        return self.nq / self.seconds


def unit_vectors(n: int, dim: int, seed: int, chunk: int = 1 << 16) -> np.ndarray:
    """Seeded random L2-normalised float32 vectors, built in chunks. Shape: (n, dim)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        block = l2_normalize(block)
        x[start:start + len(block)] = block
    return x


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def heap_mib() -> float:
    """Bytes currently malloc'ed (glibc ``mallinfo2``), else resident set size, in MiB.

    Unlike RSS, this does not under-count an index built in memory an earlier, freed index
    left in the allocator.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        return (info.uordblks + info.hblkhd) / 2**20
    except (OSError, AttributeError):
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def max_rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def numpy_search(xb: np.ndarray, xq: np.ndarray, k: int,
                 block: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: matmul per database chunk, argpartition, then merge.

    Args:
        xb: Database, shape (n, dim).
        xq: Queries, shape (nq, dim).
        k: Results per query.
        block: Score-matrix elements per step; sets how many database rows each step covers.

    Returns:
        (scores, ids), shape (nq, k) each, best first.
    """
    chunk = max(1024, block // len(xq))  # database rows per step: ~64 MiB of scores
    cand_s, cand_i = [], []
    for start in range(0, len(xb), chunk):
        s = xq @ xb[start:start + chunk].T
        kk = min(k, s.shape[1])
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cand_s.append(np.take_along_axis(s, top, axis=1))
        cand_i.append(top + start)
    s, i = np.concatenate(cand_s, axis=1), np.concatenate(cand_i, axis=1)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)


def time_call(fn: Callable[[], object], min_time: float = 0.2) -> float:
    """Seconds per call of ``fn``, looping until ``min_time`` has passed (for fast calls)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / calls


@dataclass
class Timings:
    """Per-round seconds per call of several functions timed in the same rounds.

    Other processes only ever slow a call down, so the best round is the least disturbed
    estimate of each function's speed; the paired ratio (each round against the same round's
    baseline) is a second, independent estimate of relative speed.
    """

    rounds: dict[str, list[float]]

    def best(self, name: str) -> float:
        return min(self.rounds[name])

    def ratio(self, name: str, baseline: str) -> float:
        """best(name) / best(baseline)."""
        return self.best(name) / self.best(baseline)

    def paired(self, name: str, baseline: str) -> float:
        """Median over rounds of time(name) / time(baseline) in the same round."""
        pairs = zip(self.rounds[name], self.rounds[baseline], strict=True)
        return statistics.median(a / b for a, b in pairs)


def interleaved(fns: dict[str, Callable[[], object]], repeat: int, *, warm_up: bool = True,
                min_time: float = 0.2, slow: float = 5.0) -> Timings:
    """Time each function ``repeat`` times, alternating the order every round (ABC CBA ...).

    When one round takes longer than ``slow`` seconds per function (exact search at 1M),
    stop after 3 rounds to keep the whole run within minutes.
    """
    names = list(fns)
    for name in names if warm_up else ():  # page in the index, spin up threads
        fns[name]()
    rounds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        for name in names if r % 2 == 0 else names[::-1]:
            rounds[name].append(time_call(fns[name], min_time))
        if r >= 2 and min(min(t) for t in rounds.values()) > slow:
            break
    return Timings(rounds)


def py_alloc_kib(fn: Callable[[], object]) -> float:
    """Peak Python-side allocation (numpy arrays included) of one call, in KiB."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean |found_row & truth_row| / k."""
    k = truth.shape[1]
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2).sum()
    return float(hits) / (truth.shape[0] * k)


def build(make: Callable[[], object], add: Callable[[object], None]) -> tuple[object, float, float]:
    """Build an index; returns (index, seconds, heap growth in MiB)."""
    gc.collect()
    heap0, start = heap_mib(), time.perf_counter()
    index = make()
    add(index)
    return index, time.perf_counter() - start, heap_mib() - heap0


def bench_flat(n: int, xb: np.ndarray, xq: np.ndarray,
               args: argparse.Namespace) -> tuple[list[Row], np.ndarray]:
    """xmr flat vs raw IndexFlatIP. Returns the two rows and the exact ids, shape (nq, k)."""
    k, dim = args.k, xb.shape[1]
    raw, raw_s, raw_mem = build(lambda: faiss.IndexFlatIP(dim), lambda ix: ix.add(xb))
    xmr, xmr_s, xmr_mem = build(lambda: create_index("flat", dim=dim), lambda ix: ix.add(xb))
    # These two searches also warm both indexes up (exact search at 1M is slow to repeat).
    _, truth = raw.search(xq, k)
    np.testing.assert_array_equal(xmr.search(xq, k)[1], truth)  # same answers, or no benchmark
    t = interleaved({"raw": lambda: raw.search(xq, k), "xmr": lambda: xmr.search(xq, k)},
                    args.repeat, warm_up=False)
    rows = [
        Row(n, "faiss IndexFlatIP", len(xq), t.best("raw"), 1.0, 1.0, 1.0, raw_s, raw_mem,
            py_alloc_kib(lambda: raw.search(xq, k))),
        Row(n, "xmr flat", len(xq), t.best("xmr"), t.ratio("xmr", "raw"), t.paired("xmr", "raw"),
            1.0, xmr_s, xmr_mem, py_alloc_kib(lambda: xmr.search(xq, k))),
    ]
    return rows, truth


def bench_numpy(n: int, xb: np.ndarray, xq: np.ndarray, truth: np.ndarray, faiss_row: Row,
                args: argparse.Namespace) -> Row:
    """numpy brute force on fewer queries at large n (it is the slow reference)."""
    nq = args.numpy_nq or max(50, min(len(xq), len(xq) * 100_000 // n))
    xq = xq[:nq]
    seconds = min(time_call(lambda: numpy_search(xb, xq, args.k), 0.0)
                  for _ in range(max(1, min(args.repeat, 3))))
    ids = numpy_search(xb, xq, args.k)[1]
    per_query_ratio = (seconds / nq) / (faiss_row.seconds / faiss_row.nq)
    return Row(n, "numpy brute force", nq, seconds, per_query_ratio,
               recall=recall(ids, truth[:nq]),
               py_alloc_kib=py_alloc_kib(lambda: numpy_search(xb, xq, args.k)))


def bench_hnsw(n: int, xb: np.ndarray, xq: np.ndarray, truth: np.ndarray,
               args: argparse.Namespace) -> list[Row]:
    """xmr hnsw vs raw IndexHNSWFlat: same M and efConstruction, each ``--ef-search`` value.

    Multi-threaded HNSW insertion is not deterministic, so two builds give slightly different
    graphs. The baseline (ratio 1.0) is therefore raw FAISS searching *the graph inside the xmr
    index*: the ratio then measures only xmr's overhead. The independently built raw index
    is timed too, and gives the raw build time.
    """
    k, dim, m = args.k, xb.shape[1], args.hnsw_m
    raw, raw_s, raw_mem = build(lambda: faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT),
                                lambda ix: ix.add(xb))
    xmr, xmr_s, xmr_mem = build(lambda: create_index("hnsw", dim=dim, m=m),
                                lambda ix: ix.add(xb))
    # default ids are the positions, so the graph inside xmr answers with the same labels
    same = xmr._index  # the FAISS object inside (private: labels are slots; here slots = ids)
    rows = []
    for ef in args.ef_search:
        raw.hnsw.efSearch = ef
        xmr.set_search_params(ef_search=ef)  # also sets ``same``: it is the same object
        # each timing at least 0.3 s long, so one scheduler hiccup weighs little
        t = interleaved({"same": lambda: same.search(xq, k), "raw": lambda: raw.search(xq, k),
                         "xmr": lambda: xmr.search(xq, k)}, args.repeat, min_time=0.3)
        first = ef == args.ef_search[0]  # build cost and memory belong to the first lines
        rows += [
            Row(n, f"faiss IndexHNSW{m} ef={ef} (xmr's graph)", len(xq), t.best("same"), 1.0,
                1.0, recall(same.search(xq, k)[1], truth)),
            Row(n, f"faiss IndexHNSW{m} ef={ef} (own build)", len(xq), t.best("raw"),
                t.ratio("raw", "same"), t.paired("raw", "same"),
                recall(raw.search(xq, k)[1], truth), raw_s if first else None,
                raw_mem if first else None),
            Row(n, f"xmr hnsw m={m} ef={ef}", len(xq), t.best("xmr"), t.ratio("xmr", "same"),
                t.paired("xmr", "same"), recall(xmr.search(xq, k)[1], truth),
                xmr_s if first else None, xmr_mem if first else None),
        ]
    return rows


def wrapper_overhead_us(xq: np.ndarray, k: int, rounds: int = 31) -> float:
    """xmr's own cost per ``search`` call, in microseconds: median paired (xmr - raw) time.

    Raw FAISS searches the very index object inside the xmr index, on a small (1,000-vector)
    flat index with one thread, where a call is short and steady: the fixed per-call cost
    (input checks, id handling) then stands out of the noise that swamps it in the big runs.
    """
    xmr = create_index("flat", dim=xq.shape[1])
    xmr.add(unit_vectors(1000, xq.shape[1], seed=7))
    raw = xmr._index  # the FAISS object inside (private: labels are slots; here slots = ids)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        t = interleaved({"raw": lambda: raw.search(xq, k), "xmr": lambda: xmr.search(xq, k)},
                        rounds, min_time=0.05)
    finally:
        faiss.omp_set_num_threads(threads)
    pairs = zip(t.rounds["xmr"], t.rounds["raw"], strict=True)
    return statistics.median(a - b for a, b in pairs) * 1e6


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    print(f"\n| n | method | queries | QPS | ms / call | time vs faiss (best) | (paired median) "
          f"| recall@{args.k} | build s | index MiB | py alloc / call KiB |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.size:,} | {r.method} | {r.nq} | {r.qps:,.0f} | {r.seconds * 1e3:,.1f} "
              f"| {fmt(r.ratio, '.3f')} | {fmt(r.paired, '.3f')} | {fmt(r.recall, '.4f')} "
              f"| {fmt(r.build_s, '.1f')} | {fmt(r.mem_mib, ',.0f')} "
              f"| {fmt(r.py_alloc_kib, ',.0f')} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--repeat", type=int, default=5,
                   help="interleaved timing rounds (only 3 when a call takes > 5 s)")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-search", type=int, nargs="+", default=[64, 256],
                   help="HNSW efSearch values (one build, one line pair per value)")
    p.add_argument("--hnsw-max-size", type=int, default=100_000,
                   help="skip HNSW (slow to build on few cores) above this many vectors")
    p.add_argument("--numpy-nq", type=int, default=0,
                   help="queries for numpy (default: nq, scaled down beyond 100k vectors)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started, load_before = time.perf_counter(), os.getloadavg()
    print(f"faiss {faiss.__version__}, numpy {np.__version__}, "
          f"{faiss.omp_get_max_threads()} threads", flush=True)
    xq = unit_vectors(args.nq, args.dim, seed=args.seed + 1)
    overhead = wrapper_overhead_us(xq, args.k)
    rows: list[Row] = []
    notes = [f"xmr overhead per search call ({args.nq} queries, k={args.k}): {overhead:.0f} us "
             "(median of paired single-thread timings against raw faiss on the same 1,000-vector "
             "flat index; below 0 = no measurable cost)"]
    for n in args.sizes:
        xb = unit_vectors(n, args.dim, seed=args.seed)
        flat, truth = bench_flat(n, xb, xq, args)
        rows += [*flat, bench_numpy(n, xb, xq, truth, flat[0], args)]
        print(f"n={n:,}: exact done ({time.perf_counter() - started:.0f}s)", flush=True)
        if n <= args.hnsw_max_size:
            rows += bench_hnsw(n, xb, xq, truth, args)
            print(f"n={n:,}: hnsw done ({time.perf_counter() - started:.0f}s)", flush=True)
        else:
            notes.append(f"HNSW skipped at n={n:,} (> --hnsw-max-size {args.hnsw_max_size:,})")
        share = overhead / 1e6 / flat[0].seconds
        notes.append(f"n={n:,}: peak RSS {max_rss_mib():,.0f} MiB; the xmr overhead above is "
                     f"{share:.4%} of one raw faiss exact search call")
        del xb
        gc.collect()
    print_table(rows, args)
    print()
    for note in notes:
        print(f"- {note}")
    print(f"- total wall time {time.perf_counter() - started:.0f}s; data: random unit vectors "
          f"(seed {args.seed}), queries independent of the database")
    load_after = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    load_start = " / ".join(f"{x:.1f}" for x in load_before)
    print(f"- load average (1/5/15 min) at start {load_start}, at end {load_after} "
          f"on {os.cpu_count()} CPUs; QPS and 'best' use each method's best round, 'paired' the "
          "median of same-round ratios")
    print(f"- command: python {shlex.join(sys.argv)}")


if __name__ == "__main__":
    main()
