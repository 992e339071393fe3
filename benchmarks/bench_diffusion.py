"""Offline diffusion (truncated inverse) and online re-ranking cost, against baselines in the same run.

Data: seeded clustered unit vectors (a two-level mixture of Gaussians on the sphere), a mutual
kNN graph (k = 50, gamma = 3) with symmetric normalisation, and truncation sets T_i = node i
plus its n_trunc - 1 = 999 nearest neighbours (FAISS exact search). Diffusion parameters:
alpha = 0.9, CG tolerance 1e-4 (CG needs ~sqrt((1 + alpha) / (1 - alpha)) log(2 / tol)
iterations, so alpha = 0.99 costs about 3x more).

Measures:

* offline ``truncated_inverse(method="batched")`` on every node: wall time, peak traced
  allocation during the call (``tracemalloc``: numpy/scipy arrays, output included) and the
  process peak RSS (``ru_maxrss``, everything so far, data and kNN included);
* the per-node baseline (one scipy CG per node on ``s[t][:, t]``, what
  ``method="per-node"`` does), timed on a random sample of nodes and extrapolated to all n;
* at a small size (5k nodes): the dense inverse of the full (I - alpha S), dense solves of
  the truncated systems (sampled, extrapolated), batched and per-node, with accuracy;
* online: per query, FAISS kNN (k_q = 10) + ``online_topk`` on the sparse inverse, against the
  kNN search alone.

Example::

    python benchmarks/bench_diffusion.py            # 100k nodes, ~10 min on 2 cores
    python benchmarks/bench_diffusion.py --quick    # 20k nodes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import faiss
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import cg

from xmr.bench.common import command_line, load_note, markdown
from xmr.rerank import mutual_knn_affinity, online_topk, symmetric_normalize, truncated_inverse
from xmr.utils.arrays import l2_normalize

RESULTS = Path(__file__).resolve().parent / "results" / "bench_diffusion.json"


def clustered_unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Two-level mixture on the sphere: 100 coarse centres, 1,000 fine ones around them, points
    around the fine centres with per-cluster spread and Dirichlet cluster sizes. The first n rows
    do not depend on n, so rows beyond a gallery are new points of the same mixture. Shape: (n, dim)."""
    rng = np.random.default_rng(seed)

    unit = l2_normalize

    coarse = unit(rng.standard_normal((100, dim)))
    fine = unit(coarse[rng.integers(0, 100, 1000)] + 0.08 * rng.standard_normal((1000, dim)))
    spread = rng.uniform(0.05, 0.1, 1000)
    label = rng.choice(1000, size=n, p=rng.dirichlet(np.ones(1000)))  # the first n labels do not depend on n
    return unit(fine[label] + spread[label, None] * rng.standard_normal((n, dim))).astype(np.float32)


def truncation_sets(x: np.ndarray, n_trunc: int) -> np.ndarray:
    """Each node and its n_trunc - 1 nearest neighbours (self forced in if a duplicate displaced it).

    Shape: (n, n_trunc), int32."""
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    out = np.empty((len(x), n_trunc), dtype=np.int32)
    for lo in range(0, len(x), 20_000):  # chunks keep the float32 distances small
        _, ids = index.search(x[lo:lo + 20_000], n_trunc)
        rows = np.arange(lo, lo + len(ids))
        missing = ~(ids == rows[:, None]).any(axis=1)
        ids[missing, -1] = rows[missing]
        out[lo:lo + len(ids)] = ids
    return out


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def per_node_rows(s: sp.csr_matrix, t: np.ndarray, nodes: np.ndarray, alpha: float, tol: float,
                  maxiter: int) -> tuple[float, float, list[np.ndarray]]:
    """Wall and CPU seconds of the per-node baseline on ``nodes`` (the loop body of method="per-node")."""
    s = sp.csr_matrix(s, dtype=np.float64)
    rows = []
    start, cpu = time.perf_counter(), time.process_time()
    for i in nodes:
        ti = np.asarray(t[i], dtype=np.int64)
        sub = sp.identity(len(ti), format="csr") - alpha * s[ti][:, ti]
        f, _ = cg(sub, (ti == i).astype(np.float64), rtol=tol, maxiter=maxiter)
        rows.append(f)
    return time.perf_counter() - start, time.process_time() - cpu, rows


def dense_truncated_rows(s: sp.csr_matrix, t: np.ndarray, nodes: np.ndarray, alpha: float
                         ) -> tuple[float, list[np.ndarray]]:
    """Seconds for exact dense solves of the truncated systems of ``nodes``."""
    rows = []
    start = time.perf_counter()
    for i in nodes:
        ti = np.asarray(t[i], dtype=np.int64)
        sub = np.eye(len(ti)) - alpha * s[ti][:, ti].toarray()
        rows.append(np.linalg.solve(sub, (ti == i).astype(np.float64)))
    return time.perf_counter() - start, rows


def row_error(m: sp.csr_matrix, t: np.ndarray, nodes: np.ndarray, rows: list[np.ndarray]) -> float:
    """Largest |M[i, T_i] - reference| over the sampled rows."""
    worst = 0.0
    for i, ref in zip(nodes, rows):
        got = m[int(i)].toarray().ravel()[np.asarray(t[i], dtype=np.int64)]
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def timed_inverse(s: sp.csr_matrix, t: np.ndarray, args: argparse.Namespace, **kw: object
                  ) -> tuple[sp.csr_matrix, float, float, float]:
    """(M, wall seconds, CPU seconds of all threads, peak traced MiB) of one batched call."""
    tracemalloc.start()
    start, cpu = time.perf_counter(), time.process_time()
    kw = {"dtype": args.dtype, **kw}
    m = truncated_inverse(s, t, alpha=args.alpha, tol=args.tol, maxiter=args.maxiter, batch_size=args.batch_size,
                          **kw)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return m, seconds, cpu, peak


def build(n: int, args: argparse.Namespace, seed: int) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray, float]:
    start = time.perf_counter()
    x = clustered_unit_vectors(n, args.dim, seed)
    s = symmetric_normalize(mutual_knn_affinity(x, args.k, gamma=args.gamma))
    t = truncation_sets(x, args.n_trunc)
    return x, s, t, time.perf_counter() - start


def bench_offline(n: int, args: argparse.Namespace, rows: list[dict], small: bool) -> tuple:
    """Batched vs per-node (sampled) on n nodes; at the small size also dense solves."""
    x, s, t, setup = build(n, args, args.seed)
    print(f"n={n:,}: data, graph (mean degree {s.nnz / n:.1f}) and truncation sets in {setup:.0f}s",
          flush=True)
    threads = args.threads or len(os.sched_getaffinity(0))
    m, batched_s, batched_cpu, traced = timed_inverse(s, t, args, n_threads=threads)
    print(f"n={n:,}: batched {batched_s:.1f}s", flush=True)
    sample = np.sort(np.random.default_rng(args.seed).choice(n, min(n, args.sample), replace=False))
    base_s, base_cpu, base_rows = per_node_rows(s, t, sample, args.alpha, args.tol, args.maxiter)
    per_node_all, per_node_cpu = base_s / len(sample) * n, base_cpu / len(sample) * n
    err = row_error(m, t, sample, base_rows)
    common = {"n": n, "n_trunc": args.n_trunc, "mean_degree": round(s.nnz / n, 1)}
    rows.append({**common, "method": f"batched ({threads} threads, {args.dtype}, B={args.batch_size})",
                 "seconds": batched_s, "ratio": per_node_all / batched_s, "cpu_seconds": batched_cpu,
                 "cpu_ratio": per_node_cpu / batched_cpu, "traced_peak_mib": traced,
                 "max_rss_mib": max_rss_mib(), "max_abs_diff_vs_per_node": err,
                 "output_mib": (m.data.nbytes + m.indices.nbytes + m.indptr.nbytes) / 2**20})
    rows.append({**common, "method": f"per-node CG (scipy, {len(sample)} sampled nodes, x n)",
                 "seconds": per_node_all, "ratio": 1.0, "cpu_seconds": per_node_cpu, "cpu_ratio": 1.0,
                 "sampled_seconds": base_s})
    if small:
        _, one_s, one_cpu, _ = timed_inverse(s, t, args, n_threads=1)
        rows.append({**common, "method": f"batched (1 thread, {args.dtype}, B={args.batch_size})",
                     "seconds": one_s, "ratio": per_node_all / one_s, "cpu_seconds": one_cpu,
                     "cpu_ratio": per_node_cpu / one_cpu})
        other = "float64" if args.dtype == "float32" else "float32"
        m2, other_s, other_cpu, _ = timed_inverse(s, t, args, n_threads=threads, dtype=other)
        rows.append({**common, "method": f"batched ({threads} threads, {other}, B={args.batch_size})",
                     "seconds": other_s, "ratio": per_node_all / other_s, "cpu_seconds": other_cpu,
                     "cpu_ratio": per_node_cpu / other_cpu,
                     "max_abs_diff_vs_per_node": row_error(m2, t, sample, base_rows)})
        del m2
        start = time.perf_counter()
        inv = np.linalg.inv(np.eye(n) - args.alpha * s.toarray())
        inv_s = time.perf_counter() - start
        rows.append({**common, "method": "dense inverse of the full (I - alpha S) (untruncated)",
                     "seconds": inv_s, "ratio": per_node_all / inv_s})
        del inv
        few = sample[:args.dense_sample]
        dense_s, dense_rows = dense_truncated_rows(s, t, few, args.alpha)
        rows.append({**common, "method": f"dense solve per truncated system ({len(few)} sampled, x n)",
                     "seconds": dense_s / len(few) * n, "ratio": per_node_all / (dense_s / len(few) * n),
                     "max_abs_diff_batched_vs_exact": row_error(m, t, few, dense_rows),
                     "max_abs_diff_per_node_vs_exact": max(float(np.abs(a - b).max())
                                                           for a, b in zip(base_rows, dense_rows))})
    return x, m


def bench_online(x: np.ndarray, m: sp.csr_matrix, args: argparse.Namespace, rows: list[dict]) -> None:
    """Per-query cost of kNN + online_topk against the kNN search alone (FAISS flat, same queries)."""
    n = len(x)
    xq = clustered_unit_vectors(n + args.queries, args.dim, args.seed)[n:]  # same mixture, new points
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)

    def knn_only(q: np.ndarray) -> None:
        index.search(q, args.kq)

    def knn_and_rerank(q: np.ndarray) -> None:
        sims, ids = index.search(q, args.kq)
        online_topk(m, sims, ids, args.topk, gamma=args.gamma)

    for name, fn in (("FAISS flat kNN only", knn_only), (f"kNN + online_topk (k={args.topk})", knn_and_rerank)):
        fn(xq[:10])  # warm up
        start = time.perf_counter()
        fn(xq)
        batch_ms = (time.perf_counter() - start) / len(xq) * 1e3
        single = []
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # one query per thread, as a server would run them
        try:
            for q in xq[:args.single]:
                start = time.perf_counter()
                fn(q[None])
                single.append(time.perf_counter() - start)
        finally:
            faiss.omp_set_num_threads(threads)
        rows.append({"n": n, "method": f"online: {name}", "batch_ms_per_query": batch_ms,
                     "single_query_ms": float(np.median(single)) * 1e3})
    base, ours = rows[-2], rows[-1]
    ours["ratio_batch"] = ours["batch_ms_per_query"] / base["batch_ms_per_query"]
    ours["ratio_single"] = ours["single_query_ms"] / base["single_query_ms"]


def fmt(v: object, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_tables(rows: list[dict]) -> None:
    off = [r for r in rows if "seconds" in r]
    print("\n" + markdown(
        ["n", "n_trunc", "method", "wall s", "speed-up vs per-node (wall)", "CPU s", "(CPU)", "traced peak MiB",
         "peak RSS MiB", "max |diff|"],
        [[f"{r['n']:,}", r["n_trunc"], r["method"], fmt(r["seconds"], ",.1f"), fmt(r.get("ratio"), ".2f"),
          fmt(r.get("cpu_seconds"), ",.1f"), fmt(r.get("cpu_ratio"), ".2f"),
          fmt(r.get("traced_peak_mib"), ",.0f"), fmt(r.get("max_rss_mib"), ",.0f"),
          fmt(r.get("max_abs_diff_vs_per_node", r.get("max_abs_diff_batched_vs_exact")), ".1e")]
         for r in off]))
    on = [r for r in rows if "batch_ms_per_query" in r]
    print("\n" + markdown(
        ["n", "method", "ms / query (one batch of all queries)", "ms / single query", "vs kNN only (batch / single)"],
        [[f"{r['n']:,}", r["method"], f"{r['batch_ms_per_query']:.3f}", f"{r['single_query_ms']:.3f}",
          f"{r['ratio_batch']:.1f}x / {r['ratio_single']:.1f}x" if "ratio_batch" in r else "1"] for r in on]))


def write_json(path: Path, payload: dict) -> None:
    """Atomic write: a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as fh:
        json.dump(payload, fh, indent=1)
    os.replace(fh.name, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="gallery nodes of the main run")
    p.add_argument("--quick", action="store_true", help="20k nodes instead of --n")
    p.add_argument("--small-n", type=int, default=5000, help="size with the dense comparisons (0: skip)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--gamma", type=float, default=3.0)
    p.add_argument("--n-trunc", type=int, default=1000)
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--maxiter", type=int, default=100)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="threads for the batched method (0: all cores)")
    p.add_argument("--sample", type=int, default=300, help="nodes timed for the per-node baseline")
    p.add_argument("--dense-sample", type=int, default=30, help="nodes timed for dense truncated solves")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    p.add_argument("--kq", type=int, default=10)
    p.add_argument("--topk", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    n = 20_000 if args.quick else args.n
    started = time.perf_counter()
    print(f"faiss {faiss.__version__}, numpy {np.__version__}; {load_note()}", flush=True)
    rows: list[dict] = []
    if args.small_n:
        bench_offline(args.small_n, args, rows, small=True)
    x, m = bench_offline(n, args, rows, small=False)
    bench_online(x, m, args, rows)
    print_tables(rows)
    notes = [
        f"alpha={args.alpha}, tol={args.tol}, maxiter={args.maxiter}, k={args.k}, gamma={args.gamma}, "
        f"dim={args.dim}; per-node and dense-truncated times are sampled per-node times x n",
        "CPU s = process CPU time (all threads): on a contended machine it shows the work done, "
        "wall time also the waiting; the wall speed-up of 2 threads needs 2 free cores",
        "traced peak = tracemalloc peak during the batched call (numpy/scipy arrays incl. the output); "
        "peak RSS = ru_maxrss of the whole process so far (data, kNN and graph included)",
        load_note(),
        f"total wall time {time.perf_counter() - started:.0f}s",
        f"command: {command_line()}",
    ]
    print()
    for note in notes:
        print(f"- {note}")
    write_json(args.out, {"command": command_line(), "args": {k: str(v) for k, v in vars(args).items()},
                          "rows": rows, "notes": notes})
    print(f"- results written to {args.out}")


if __name__ == "__main__":
    main()
