"""Adding 10k vectors to a 1M index (and removing 10k) vs rebuilding it, per index type.

The gallery is :mod:`xmr.bench.clustered` (1M clustered 256-d unit vectors). Per index type, in
one run: the rebuild (train + add all + save, what ``xmr index`` pays apart from encoding), then
on the saved index an add of 10k new vectors (load + add + save, what ``xmr index add`` pays
apart from encoding) and a removal of 10k ids (load + remove + save, ``xmr index remove``). After
each edit the index is checked against a rebuild on the same vectors: recall@10 of 200 queries
against exact search over the items kept.

    python benchmarks/bench_index_edit.py --n 1000000 --edit 10000 --work /work/xmr-runs/index-edit
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from xmr.bench import clustered
from xmr.bench.common import command_line, load_note, markdown
from xmr.index import IndexConfig, load_index
from xmr.index.budget import AutoIndexConfig, choose_index, parse_bytes
from xmr.index.build import build_index
from xmr.index.exact import exact_top_k, recall_at_k
from xmr.utils.io import atomic_write_text

DIM = 256


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--edit", type=int, default=10_000)
    p.add_argument("--types", nargs="+", default=["flat", "hnsw", "ivfpq"])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "index_scale" / "index_edit.md")
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    q = clustered.queries(200)
    new = clustered.around(clustered.centres(1000, DIM, 0), a.edit, np.random.default_rng([0, 9]), 1.0)
    new_ids = np.arange(a.n, a.n + a.edit)
    gone = np.random.default_rng(5).choice(a.n, a.edit, replace=False)
    auto = choose_index(a.n, DIM, parse_bytes("4GB"), AutoIndexConfig(flat_up_to=0, hnsw_up_to=0))  # the IVF-PQ
    configs = {"flat": IndexConfig(dim=DIM), "hnsw": IndexConfig(dim=DIM, factory="HNSW32", ef_search=128),
               "ivfpq": IndexConfig(dim=DIM, factory=auto.factory, nprobe=auto.nprobe, refine=100)}
    rows = []
    for name in a.types:
        config, folder = configs[name], a.work / name
        shutil.rmtree(folder, ignore_errors=True)
        t = time.perf_counter()
        index = build_index(lambda: clustered.stream(a.n), config, n_train=auto.n_train if name == "ivfpq" else 0,
                            spill_to=a.work / f".{name}.spill")
        index.save(folder)
        (a.work / f".{name}.spill").unlink(missing_ok=True)
        rebuild = time.perf_counter() - t
        del index
        t = time.perf_counter()
        index = load_index(folder)
        index.add(new, ids=new_ids)
        index.save(folder)
        add = time.perf_counter() - t
        want = exact_top_k([*clustered.stream(a.n), (new, new_ids)], q, 10)[1]
        r_add = recall_at_k(index.search(q, 10)[1], want)
        del index
        t = time.perf_counter()
        index = load_index(folder)
        index.remove(gone)
        index.save(folder)
        remove = time.perf_counter() - t
        keep = [(x[~np.isin(ids, gone)], ids[~np.isin(ids, gone)]) for x, ids in clustered.stream(a.n)]
        r_rm = recall_at_k(index.search(q, 10)[1], exact_top_k([*keep, (new, new_ids)], q, 10)[1])
        print(f"{name}: rebuild {rebuild:.1f}s, add {add:.1f}s, remove {remove:.1f}s", flush=True)
        label = config.factory + (" + refine 100" if config.refine else "")
        rows.append([label, f"{rebuild:.1f}", f"{add:.1f}", f"{rebuild / add:.0f}x", f"{r_add:.3f}", f"{remove:.1f}",
                     f"{rebuild / remove:.1f}x", f"{r_rm:.3f}"])
        shutil.rmtree(folder, ignore_errors=True)
    text = (f"# Add / remove {a.edit:,} vectors on a {a.n:,} index vs a rebuild\n\n`{command_line()}`\n\n"
            f"{load_note()}\n\nTimes include loading and saving the index (not encoding); recall@10 of 200 "
            "queries against exact search over the items the index should hold.\n\n"
            + markdown(["index", "rebuild s", f"add {a.edit:,} s", "rebuild / add", "recall after add",
                        f"remove {a.edit:,} s", "rebuild / remove", "recall after remove"], rows) + "\n")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, text)
    print(text)


if __name__ == "__main__":
    main()
