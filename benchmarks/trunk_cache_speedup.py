"""The trunk cache's speed-up: a training step of the tail from cached activations vs the whole network.

For each N (``--blocks``), on one batch of ``--batch`` emoji images (224 x 224): the *cached*
step is the tail's forward + backward from the float16 boundary activations (what an epoch runs);
the *uncached* step adds the frozen trunk's forward on the images (no grad), which is what a
step costs without the cache. Both are timed over ``--steps`` repeats after one warm-up, in the
same process, alternating, and reported as images/s with the ratio. Image decoding is excluded
from both (the cache also saves it), so the ratio is a lower bound.

    python benchmarks/trunk_cache_speedup.py --blocks 1 3 5 --batch 64 --steps 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from xmr.bench.common import add_session_options, markdown, start_session
from xmr.data import fetch_dataset, read_manifest, select_split
from xmr.encoders import create_image_encoder
from xmr.encoders.trunk import TrunkEncoder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_session_options(ap, runs="runs/unused", out=Path(__file__).resolve().parent / "results" / "finetune")
    ap.add_argument("--blocks", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args(argv)
    session = start_session(args)
    items = select_split(read_manifest(fetch_dataset("emoji", session.cache_dir)), "train")[: args.batch]
    base = create_image_encoder("efficientnet-lite0")
    arrays = [base.load(it.image) for it in items]  # decoded once, for every N
    x = base.to_input(arrays)  # type: ignore[attr-defined]
    rows = []
    for n in args.blocks:
        trunk = TrunkEncoder(base, n)
        tail = trunk.make_tail()
        tail.train()
        cached = torch.from_numpy(trunk.encode_batch(arrays))

        def step(act: torch.Tensor) -> None:
            tail.zero_grad(set_to_none=True)
            tail(tail.unflatten(act)).square().mean().backward()

        def cached_step() -> None:
            step(cached.float())

        def uncached_step() -> None:
            with torch.no_grad():
                act = base.trunk(x, n)  # type: ignore[attr-defined]
            step(act.reshape(len(act), -1))

        times: dict[str, list[float]] = {"cached": [], "uncached": []}
        for fn in (cached_step, uncached_step):
            fn()  # warm-up
        for _ in range(args.steps):
            for name, fn in (("cached", cached_step), ("uncached", uncached_step)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        c, u = statistics.median(times["cached"]), statistics.median(times["uncached"])
        rows.append([n, f"{args.batch / c:.1f}", f"{args.batch / u:.1f}", f"{u / c:.2f}"])
    table = markdown(["N blocks", "cached images/s", "uncached images/s", "speed-up (x)"], rows)
    text = session.report("Trunk cache speed-up (tail step from cached activations vs the whole network)",
                          f"Median of {args.steps} steps of {args.batch} emoji images; forward + backward of the "
                          "tail (BatchNorm statistics frozen); image decoding excluded from both.", table)
    session.write(args.out, "trunk_cache_speedup", text, {"rows": rows})
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
