"""``xmr encode`` with the images read in DataLoader worker processes (``--loader-workers N``) vs this
process's reader (two threads ahead of the encoder, ``--loader-workers 0``).

Each round runs every case once, in rotating order (:func:`xmr.bench.common.interleaved`), as a whole
``xmr encode --images DIR`` into a fresh feature cache (start-up, hashing, reading, the forward pass and
the cache writes included); images/s are medians over the rounds, each ratio the median of the paired
per-round ratios (> 1: the workers are faster). Two encoders:

* ``efficientnet-lite0`` (224 px): the network dominates on a CPU;
* ``toy-image`` (32 px, a two-layer net): almost no network, as on a GPU, where reading bounds encoding.

The features are checked equal, byte for byte, between the cases before timing. The images are
synthetic photo-like JPEGs (smooth colour fields, shapes and noise; quality 90). Example (about 2 min
on 2 cores)::

    python benchmarks/bench_loader_workers.py --n-images 300 --repeat 3 --workers 0 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from xmr.bench.common import command_line, fmt_ratio, interleaved, load_note, markdown, median, paired_ratio
from xmr.bench.images import make_jpegs
from xmr.utils.io import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results" / "loader_workers"


def encode(folder: Path, encoder: str, workers: int, cache: str | None = None) -> None:
    """One ``xmr encode`` of ``folder`` (into ``cache``, else a fresh feature cache)."""
    with tempfile.TemporaryDirectory() as fresh:
        subprocess.run([sys.executable, "-m", "xmr", "-q", "encode", "--images", str(folder), "--image-encoder",
                        encoder, "--text-encoder", "toy-text", "--loader-workers", str(workers),
                        "--cache-dir", cache or fresh], check=True, stdout=subprocess.DEVNULL)


def cached_features(cache: Path) -> bytes:
    """Every feature shard of a cache, in file-name order (the same images and batches: the same shards)."""
    return b"".join(np.load(p).tobytes() for p in sorted(cache.rglob("*.npy")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-images", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--encoders", nargs="+", default=["efficientnet-lite0", "toy-image"])
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    folder = work / "images"
    make_jpegs(folder, args.n_images)
    lines = [f"# bench_loader_workers\n\n`{command_line()}`  \ntorch {torch.__version__}; {os.cpu_count()} "
             f"core(s); {load_note()}\n"]
    rows = []
    base = args.workers[0]
    for enc in args.encoders:
        digests = set()
        for w in args.workers:
            encode(folder, enc, w, str(work / f"check-{enc}-{w}"))
            digests.add(cached_features(work / f"check-{enc}-{w}"))
        same = "yes" if len(digests) == 1 else "NO"
        times = interleaved({str(w): (lambda s, w=w: encode(folder, enc, w)) for w in args.workers}, args.repeat)
        for w in args.workers:
            ratio = "-" if w == base else fmt_ratio(paired_ratio(times[str(base)], times[str(w)]))
            rows.append([enc, w, f"{args.n_images / median(times[str(w)]):.1f}", ratio, same])
    lines.append(markdown(["encoder", "--loader-workers", "images/s (whole `xmr encode`)",
                           f"vs {base} workers (p25-p75)", "features identical"], rows))
    lines.append(f"\n{load_note()}\n")
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    n = len(list(RESULTS.glob("run*.md"))) + 1
    atomic_write_text(RESULTS / f"run{n}.md", text)


if __name__ == "__main__":
    main()
