"""The cross-modal trap (clip-retrieval#76) on real xmr embeddings: text->image recall@10 of each
compressed image index against exact search, with image->image recall@10 beside it.

For each ``--factories`` entry (``FACTORY`` or ``FACTORY+refine=K``) the run's gallery split is
indexed by ``xmr.workflows.index.index_run`` (features from the cache), whose build-time check
measures text->image recall@10 over the gallery's texts; image->image recall@10 uses 500 gallery
images as queries against the same exact ranking. Flat is the baseline (1.000 by definition).

    python benchmarks/cross_modal_trap.py --run /work/xmr-runs/emoji --split test
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

from xmr.bench.common import command_line, load_note, markdown
from xmr.index import load_index
from xmr.index.exact import recall_at_k
from xmr.index.run_record import load_index_run
from xmr.utils.io import atomic_write_text
from xmr.workflows.index import IndexJob, index_run

DEFAULT = ["Flat", "HNSW32", "IVF64,PQ8np", "OPQ8,IVF64,PQ8np", "IVF64,PQ16np", "IVF64,PQ8np+refine=100",
           "IVF64,PQ16np+refine=100"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--factories", nargs="+", default=DEFAULT)
    p.add_argument("--out", type=Path,
                   default=Path(__file__).parent / "results" / "index_scale" / "cross_modal_trap.md")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        flat = index_run(a.run, IndexJob(split=a.split, out_dir=Path(tmp) / "flat", show_progress=False))
        exact = load_index(flat / "images")
        vectors = exact.reconstruct(exact.ids())
        q = vectors[np.random.default_rng(0).choice(len(vectors), min(500, len(vectors)), replace=False)]
        want = exact.search(q, 11)[1][:, 1:]  # the query itself first: left out
        for entry in a.factories:
            factory, _, refine = entry.partition("+refine=")
            params = {"refine": int(refine)} if refine else {}
            out = index_run(a.run, IndexJob(split=a.split, factory=factory, search_params=params,
                                            out_dir=Path(tmp) / "x", show_progress=False))
            checks = load_index_run(out).checks
            t2i = checks.recall if checks is not None else 1.0
            got = load_index(out / "images").search(q, 11)[1]
            i2i = recall_at_k(got, want)  # the query itself is in got, not in want
            size = sum(f.stat().st_size for f in (out / "images").iterdir())
            rows.append([entry, f"{size / 2**20:.2f}", f"{t2i:.3f}", f"{i2i:.3f}",
                         "warned" if checks is not None and not checks.ok else ""])
            print(rows[-1], flush=True)
    text = (f"# The cross-modal trap on {a.run.name} ({a.split} split)\n\n`{command_line()}`\n\n{load_note()}\n\n"
            + markdown(["image index", "images/ MB", "text->image recall@10", "image->image recall@10",
                        "build-time check"], rows) + "\n")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, text)
    print(text)


if __name__ == "__main__":
    main()
