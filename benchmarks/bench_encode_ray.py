"""Encoding the same images in one process vs on a local Ray cluster with 1 and 2 actors.

``--n`` distinct generated PNGs (seeded noise over colour fields, 96x96, so every image has its
own cache key) and one distinct text each, encoded with the default encoders (EfficientNet-Lite0
+ MiniLM-L6) into a fresh feature cache per case, as partitions written to shards:

* one process: :func:`xmr.workflows.ray_encode.encode_in_process`, torch at 1 thread (the
  baseline: the 2x ceiling of two 1-CPU actors is against it) and at 2 threads;
* Ray, 1 actor with 2 CPUs (torch at 2 threads inside it);
* Ray, 2 actors with 1 CPU each (torch at 1 thread in each).

Each case is timed from the call to the last shard, model loading in the actors included; the
Ray cluster's own start is timed apart. The same inputs in every case; the features of the three
are checked equal. Ratios are against the one-process case of the same run.

    python benchmarks/bench_encode_ray.py --n 2000 --partitions 20
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from xmr.bench.common import command_line, load_note, markdown
from xmr.data.manifest import Item
from xmr.runs.config import RunConfig
from xmr.utils.io import atomic_write_text
from xmr.workflows.ray_encode import RayEncodeConfig, encode_in_process, encode_with_ray
from xmr.workflows.shards import iter_shards


def images(folder: Path, n: int) -> list[Item]:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        rng = np.random.default_rng(i)
        base = rng.integers(0, 256, (1, 1, 3))
        px = np.clip(base + rng.normal(0, 40, (96, 96, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.png"
        Image.fromarray(px).save(path)
        items.append(Item(id=f"img/{i}", image=str(path), texts=(f"picture number {i} of a noisy colour field",)))
    return items


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--partitions", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "index_scale" / "encode_ray.md")
    a = p.parse_args()
    import ray
    import torch

    work = Path(tempfile.mkdtemp(prefix="xmr-encode-ray-"))
    try:
        items = images(work / "img", a.n)
        enc = {"image_encoder": RunConfig.image_encoder, "text_encoder": RunConfig.text_encoder}
        singles = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            t = time.perf_counter()
            encode_in_process(items, **enc, shards=work / f"s{threads}", cache_dir=work / f"c0{threads}",
                              partitions=a.partitions)
            singles[threads] = time.perf_counter() - t
            print(f"one process, torch {threads} thread(s): {singles[threads]:.1f}s", flush=True)
        single = singles[1]
        t = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 << 20)
        start = time.perf_counter() - t
        times, busy = {}, {}
        for name, actors, cpus in (("Ray, 1 actor x 2 CPUs", 1, 2.0), ("Ray, 2 actors x 1 CPU", 2, 1.0)):
            t = time.perf_counter()
            report = encode_with_ray(items, **enc, shards=work / "ray" / str(actors),
                                     cache_dir=work / f"c{actors}",
                                     config=RayEncodeConfig(partitions=a.partitions, actors=actors,
                                                            cpus_per_actor=cpus))
            times[name] = time.perf_counter() - t
            busy[name] = report.busy_seconds / actors  # per actor
            assert not report.failed, report.failed
            print(f"{name}: {times[name]:.1f}s", flush=True)
        ref = np.concatenate([s.image_feats for s in iter_shards(work / "s2")])
        diffs = {}
        for actors in (1, 2):
            got = np.concatenate([s.image_feats for s in iter_shards(work / "ray" / str(actors))])
            same = np.abs(got - ref).max()
            print(f"max |feature difference| vs one process at 2 threads, {actors} actor(s): {same:.2e}")
            diffs[actors] = same
        ray.shutdown()
        rows = [[f"one process (torch {th} thread{'s' * (th > 1)})", f"{v:.1f}", f"{a.n / v:.1f}", f"{single / v:.2f}x",
                 "—", "0" if th == 2 else "—"] for th, v in singles.items()]
        rows += [[k, f"{v:.1f}", f"{a.n / v:.1f}", f"{single / v:.2f}x", f"{busy[k]:.1f} ({busy[k] / v:.0%})",
                  f"{diffs[1 if '1 actor' in k else 2]:.1e}"] for k, v in times.items()]
        text = (f"# Encoding {a.n} images: one process vs Ray\n\n`{command_line()}`\n\n{load_note()}\n\n"
                f"{a.partitions} partitions; EfficientNet-Lite0 + MiniLM-L6, fresh cache per case; Ray cluster "
                f"start {start:.1f}s (not in the times).\n\n"
                + markdown(["engine", "seconds", "images/s", "vs one process at 1 thread",
                            "seconds inside partitions per actor (share of wall)",
                            "max abs feature difference vs 2 threads"], rows) + "\n")
        a.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a.out, text)
        print(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
