"""Encode rate of the EfficientNet-Lite family (Lite0 / Lite1 / Lite2) on the same images, in one run.

For each registered variant (native input: 224 / 240 / 260 px) on the same ``--n`` images of a
manifest (the first ``--n`` of ``--split``, in manifest order):

* reading: ``load`` of every image (decode, alpha on white, resize, centre crop to the variant's S),
  one thread, seconds per image;
* forward: ``encode_batch`` on batches of 32 already-loaded arrays (torch's threads), every variant in
  every one of ``--repeat`` rounds in rotating order (:func:`xmr.bench.common.interleaved`); images/s
  from the median round, and each variant's speed against Lite0 as the median (quartiles) of the paired
  per-round ratios (robust to a shared machine);
* the feature-cache row: 1280 float32 values (5,120 bytes) for all three; the fine-tuning trunk's
  float16 row at N = 1 (the last block trainable) differs by variant and is listed too.

Writes ``<out>/efficientnet-lite-encode.{md,json}``. Example (about 3 min on 2 busy cores)::

    python benchmarks/bench_efficientnet_lite.py ~/.cache/xmr/datasets/openclipart/manifest.jsonl --n 200
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from xmr.bench.common import (
    command_line,
    fmt_ratio,
    interleaved,
    load_note,
    markdown,
    median,
    paired_ratio,
    write_report,
)
from xmr.data import read_manifest
from xmr.encoders import create_image_encoder

BATCH = 32
NAMES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--split", default="train")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "encoders")
    args = ap.parse_args()

    items = [it for it in read_manifest(args.manifest) if it.split == args.split][:args.n]
    paths = [it.image for it in items]
    head = f"# EfficientNet-Lite0/1/2 encode rate\n\n`{command_line()}`  \ntorch {torch.__version__}, " \
           f"{torch.get_num_threads()} threads; at start: {load_note()}\n"
    print(head)
    encs = {n: create_image_encoder(n) for n in NAMES}
    arrays, read_s = {}, {}
    for n, e in encs.items():
        t0 = time.perf_counter()
        arrays[n] = [e.load(p) for p in paths]
        read_s[n] = (time.perf_counter() - t0) / len(paths)
        e.encode_batch(arrays[n][:2])  # weights loaded and warmed up outside the timed rounds

    def case(n: str) -> object:
        def run(_: int) -> None:
            for i in range(0, len(paths), BATCH):
                encs[n].encode_batch(arrays[n][i:i + BATCH])
        return run

    times = interleaved({n: case(n) for n in NAMES}, args.repeat)
    trunk_bytes = {n: 2 * int(np.prod(encs[n].boundary_shape(1))) for n in NAMES}  # type: ignore[attr-defined]
    rows, record = [], {}
    for n in NAMES:
        e = encs[n]
        rate = len(paths) / median(times[n])
        ratio = paired_ratio(times["efficientnet-lite0"], times[n])
        params = sum(p.numel() for p in e.model.parameters())  # type: ignore[attr-defined]
        rows.append([n, e.image_size, f"{params / 1e6:.2f} M", f"{rate:.1f}", fmt_ratio(ratio),
                     f"{1000 * read_s[n]:.1f}", 4 * e.dim, f"{trunk_bytes[n]:,}"])
        record[n] = {"image_size": e.image_size, "params": params, "images_per_s": rate,
                     "seconds_per_round": times[n], "speed_vs_lite0_p25_p50_p75": ratio,
                     "read_ms_per_image": 1000 * read_s[n], "cache_bytes_per_image": 4 * e.dim,
                     "trunk_n1_float16_bytes_per_image": trunk_bytes[n]}
    table = markdown(["encoder", "input px", "params", "forward images/s (median round)",
                      "speed vs Lite0 (median, IQR)", "read ms/image", "cache bytes/image",
                      "fine-tune N=1 trunk bytes/image"], rows)
    text = (f"{head}\n{len(paths)} images: the first {args.n} of split `{args.split}` of `{args.manifest}`; "
            f"batches of {BATCH}; {args.repeat} rounds, rotating order; at end: {load_note()}\n\n{table}\n")
    print(text)
    write_report(args.out, "efficientnet-lite-encode.md", text)
    write_report(args.out, "efficientnet-lite-encode.json",
                 json.dumps({"command": command_line(), "n_images": len(paths), "results": record}, indent=1))


if __name__ == "__main__":
    main()
