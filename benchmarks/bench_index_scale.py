"""Indexes from 100k to 10M clustered 256-d vectors: build, disk, memory, recall@10 and speed.

The vectors are generated, never held together: ``--clusters`` seeded unit centres, each vector
a centre plus Gaussian noise, normalised (real embeddings are clustered like this, not uniform),
streamed in chunks of 100k by seed, so every size is the prefix of the next. The queries come
from the same distribution with another seed. A refined index re-scores its shortlist from the float16
store on disk, read row by row (``pread``). Ground truth: exact top-10 inner products by
brute force in numpy over the stream (its time is the exact baseline at every size, also where
no flat index fits the budget).

Every build and every search runs in its own process, so its peak resident memory (``VmHWM``)
is its own: the build under the ``--budget`` choice's structure, the search with the index
memory-mapped (``Index.load(mmap=True)``; the file-backed pages it touches count in its RSS and
are shown apart from the anonymous ones). Per size and index type: build time, size on disk,
peak RSS building and searching, recall@10 against exact, queries/s batched (all queries in one
call) and one query at a time.

    python benchmarks/bench_index_scale.py --sizes 100000 1000000 10000000 --work /work/xmr-runs/index-scale
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from xmr.bench import clustered
from xmr.bench.common import command_line, load_note, markdown
from xmr.index import IndexConfig, load_index
from xmr.index.budget import AutoIndexConfig, choose_index, format_bytes, parse_bytes
from xmr.index.build import build_index
from xmr.index.exact import TopK, recall_at_k
from xmr.utils.io import atomic_write_text

DIM = 256


def stream(n: int, a: argparse.Namespace) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    return clustered.stream(n, dim=DIM, n_clusters=a.clusters, noise=a.noise, seed=a.seed)


def queries(a: argparse.Namespace) -> np.ndarray:
    return clustered.queries(a.queries, dim=DIM, n_clusters=a.clusters, noise=a.noise, seed=a.seed)


def ground_truth(n: int, a: argparse.Namespace, work: Path) -> tuple[np.ndarray, float]:
    """Exact top-10 ids of every query over the first ``n`` vectors, and the seconds it took."""
    path = work / f"gt-{n}.npz"
    if path.exists():
        saved = np.load(path)
        return saved["ids"], float(saved["seconds"])
    top, seconds = TopK(queries(a), 10), 0.0
    for x, ids in stream(n, a):
        t = time.perf_counter()
        top.add(x, ids)
        seconds += time.perf_counter() - t  # the matrix products only, not the generation
    best_i = top.ids
    np.savez(path, ids=best_i, seconds=seconds)
    return best_i, seconds


def _peak() -> dict[str, float]:
    out = {}
    for line in open("/proc/self/status"):
        key = line.split(":")[0]
        if key in ("VmHWM", "RssAnon", "RssFile"):
            out[key] = int(line.split()[1]) / 1024
    return out


def child_build(a: argparse.Namespace) -> None:
    config = IndexConfig(**json.loads(a.config))
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t = time.perf_counter()
    index = build_index(lambda: stream(a.n, a), config, n_train=a.n_train, seed=a.seed,
                        spill_to=out / ".vectors.building")
    built = time.perf_counter() - t
    index.save(out)
    (out / ".vectors.building").unlink(missing_ok=True)
    seconds = time.perf_counter() - t
    disk = sum(p.stat().st_size for p in out.iterdir())
    print(json.dumps({"build_s": seconds, "add_s": built, "disk": disk, **_peak()}))


def child_search(a: argparse.Namespace) -> None:
    index = load_index(a.out, mmap=True, store_reads=a.store_reads)
    index.set_search_params(refine=a.refine, nprobe=a.nprobe)
    q = queries(a)
    gt = np.load(a.gt)["ids"]
    index.search(q[:10], 10)  # warm-up
    t = time.perf_counter()
    _, ids = index.search(q, 10)
    batched = q.shape[0] / (time.perf_counter() - t)
    n_single = min(200, q.shape[0])
    t = time.perf_counter()
    for i in range(n_single):
        index.search(q[i:i + 1], 10)
    single = n_single / (time.perf_counter() - t)
    recall = recall_at_k(ids, gt)
    print(json.dumps({"recall": recall, "qps_batched": batched, "qps_single": single, **_peak()}))


def run_child(args: list[str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    p.add_argument("--budget", default="4GB")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--noise", type=float, default=1.0, help="noise norm relative to the unit centres")
    p.add_argument("--refine", type=int, default=100)
    p.add_argument("--nprobe", type=int, default=None, help="default: the budget choice's")
    p.add_argument("--store-reads", default="pread", choices=["pread", "map"],
                   help="how the refine store is read (a child option; the sweep also runs 'map' at the first refine)")
    p.add_argument("--sweep", nargs="*", default=["64:100", "64:200"], metavar="NPROBE:REFINE",
                   help="more searches of the IVF-PQ index at these settings (the build is shared)")
    p.add_argument("--hnsw-up-to", type=int, default=1_000_000, help="build HNSW up to this size (hours at 10M)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, required=False)
    p.add_argument("--keep", action="store_true", help="keep the built indexes in --work")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "index_scale" / "index_scale.md")
    sub = p.add_subparsers(dest="child")
    for name in ("_build", "_search"):
        c = sub.add_parser(name, allow_abbrev=False)
        c.add_argument("--count", dest="n", type=int)
        c.add_argument("--out")
        c.add_argument("--config", default="{}")
        c.add_argument("--n-train", type=int, default=0)
        c.add_argument("--gt")
    a = p.parse_args()
    if a.child == "_build":
        return child_build(a)
    if a.child == "_search":
        a.refine = a.refine or 0
        return child_search(a)
    run_all(a)


def run_all(a: argparse.Namespace) -> None:
    a.work.mkdir(parents=True, exist_ok=True)
    budget = parse_bytes(a.budget)
    common = ["--queries", str(a.queries), "--clusters", str(a.clusters), "--noise", str(a.noise),
              "--seed", str(a.seed)]
    rows, notes = [], []
    for n in a.sizes:
        gt, exact_s = ground_truth(n, a, a.work)
        rows.append([f"{n:,}", "exact (numpy brute force)", "—", "—", "—", "—", "1.000",
                     f"{a.queries / exact_s:,.0f}", "—", "baseline"])
        auto = choose_index(n, DIM, budget, AutoIndexConfig(flat_up_to=0, hnsw_up_to=0))
        # per index: (name, config, training sample, searches: (label, refine, nprobe, store reads))
        plans: list[tuple[str, dict[str, object], int, list[tuple[str, int, int | None, str]]]] = []
        if n * DIM * 4 <= budget:
            plans.append(("flat", {"dim": DIM, "factory": "Flat"}, 0, [("flat", 0, None, "pread")]))
        else:
            notes.append(f"{n:,}: flat needs {format_bytes(n * DIM * 4)} > the {a.budget} budget; not built")
        if n <= a.hnsw_up_to:
            plans.append(("hnsw", {"dim": DIM, "factory": "HNSW32", "ef_search": 128}, 0,
                          [("HNSW32 ef128", 0, None, "pread")]))
        plans.append(("ivfpq", {"dim": DIM, "factory": auto.factory, "nprobe": a.nprobe or auto.nprobe,
                                "refine": a.refine}, auto.n_train,
                      [(auto.factory, 0, None, "pread"),
                       (f"{auto.factory} + refine {a.refine}", a.refine, None, "pread")]
                      + [(f"{auto.factory} nprobe {sp.split(':')[0]} + refine {sp.split(':')[1]}",
                          int(sp.split(":")[1]), int(sp.split(":")[0]), "pread") for sp in a.sweep]
                      + [(f"{auto.factory} + refine {a.refine}, store memory-mapped", a.refine, None, "map")]))
        for name, config, n_train, searches in plans:
            folder = a.work / f"{n}-{name}"
            built = run_child([*common, "_build", "--count", str(n), "--out", str(folder), "--config",
                               json.dumps(config), "--n-train", str(n_train)])
            print(f"{n} {name} built: {built}", flush=True)
            for label, refine, nprobe, reads in searches:
                nprobe = nprobe or a.nprobe
                found = run_child([*common, "--refine", str(refine), "--store-reads", reads,
                                   *(["--nprobe", str(nprobe)] if nprobe else []),
                                   "_search", "--out", str(folder), "--gt", str(a.work / f"gt-{n}.npz")])
                print(f"  {label}: {found}", flush=True)
                disk = built["disk"] if refine or name != "ivfpq" else \
                    built["disk"] - n * DIM * 2  # the codes alone, without the refine store
                rows.append([f"{n:,}", label, f"{built['build_s']:.0f}", format_bytes(disk),
                             f"{built['VmHWM'] / 1024:.2f}",
                             f"{found['VmHWM'] / 1024:.2f} ({found['RssAnon'] / 1024:.2f} + "
                             f"{found['RssFile'] / 1024:.2f})",
                             f"{found['recall']:.3f}", f"{found['qps_batched']:,.0f}", f"{found['qps_single']:,.0f}",
                             f"{found['qps_batched'] * exact_s / a.queries:.1f}x"])
        if not a.keep:
            for name, *_ in plans:
                shutil.rmtree(a.work / f"{n}-{name}", ignore_errors=True)
    table = markdown(["vectors", "index", "build s", "on disk", "peak RSS build GB",
                      "peak RSS search GB (anon + file)", "recall@10", "q/s batched", "q/s single",
                      "batched vs exact"], rows)
    text = (f"# Index scale: {', '.join(f'{n:,}' for n in a.sizes)} clustered {DIM}-d vectors\n\n"
            f"`{command_line()}`\n\n{load_note()}\n\n{a.queries} queries, budget {a.budget}, "
            f"{a.clusters} clusters, noise {a.noise}; searches memory-mapped.\n\n{table}\n\n"
            + "".join(f"- {n}\n" for n in notes))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, text)
    print(text)


if __name__ == "__main__":
    main()
