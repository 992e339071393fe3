"""Time per step and peak memory of `xmr train` for each fine-tuning depth, precision and memory option.

Each case is one `xmr train` process on the same emoji subset (``--train-items`` training items,
``--val-items`` validation items, images at 224 px), one epoch of ``--steps`` steps of
``--batch-size`` pairs, timed from its ``history.json`` (the epoch's seconds: the steps and the
validation) with the process's peak resident memory from ``wait4``. The caches (frozen features,
trunk activations, pixels) are filled by an untimed first run of each depth, so only training is
measured. The cases run in rotating order over ``--repeat`` rounds on one machine; medians are
reported, with the ratio to the first case (heads on frozen features, fp32) measured in the same run.

    python benchmarks/bench_train_memory.py --steps 4 --batch-size 32 --repeat 2 \\
        --cases 0:fp32 0:bf16 3:fp32 3:bf16 all:fp32 all:bf16 all:fp32:ckpt all:fp32:mb8

A case is ``DEPTH:PRECISION[:OPTION]``: DEPTH is ``--finetune-image-blocks`` (0: heads only),
OPTION ``ckpt`` (``--grad-checkpointing``) or ``mbN`` (``--micro-batch N``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xmr.bench.common import command_line, load_note, markdown, write_report
from xmr.data import fetch_dataset

OUT = Path(__file__).resolve().parent / "results" / "train_memory"


def subset_manifest(cache_dir: Path, out: Path, n_train: int, n_val: int) -> Path:
    """The first ``n_train`` training and ``n_val`` validation items of the emoji set, image paths absolute."""
    emoji = fetch_dataset("emoji", cache_dir)
    rows = [json.loads(line) for line in emoji.read_text(encoding="utf-8").splitlines() if line.strip()]
    keep = {"train": n_train, "val": n_val}
    picked = []
    for r in rows:
        if keep.get(r.get("split"), 0) > 0:
            keep[r["split"]] -= 1
            picked.append({**r, "image": str((emoji.parent / r["image"]).resolve())})
    path = out / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in picked), encoding="utf-8")
    return path


def case_args(case: str) -> list[str]:
    depth, precision, *option = case.split(":")
    args = ["--finetune-image-blocks", depth, "--precision", precision]
    for o in option:
        args += ["--grad-checkpointing"] if o == "ckpt" else ["--micro-batch", o.removeprefix("mb")]
    return args


def train_once(manifest: Path, run: Path, cache_dir: Path, case: str, a: argparse.Namespace
               ) -> tuple[float, float, float]:
    """One `xmr train` process; (epoch seconds, its peak RSS in MB, wall seconds)."""
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-m", "xmr", "-q", "--threads", str(a.threads), "train", str(manifest),
           "--out", str(run), "--cache-dir", str(cache_dir),
           "--epochs", "1", "--steps-per-epoch", str(a.steps), "--batch-size", str(a.batch_size),
           *case_args(case)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    if status != 0:
        raise SystemExit(f"case {case} failed: {err.strip()[-500:]}")
    history = json.loads((run / "history.json").read_text(encoding="utf-8"))
    return float(history[0]["seconds"]), usage.ru_maxrss / 1024, wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--cases", nargs="+", default=["0:fp32", "0:bf16", "3:fp32", "3:bf16", "all:fp32",
                                                    "all:bf16", "all:fp32:ckpt", "all:fp32:mb8"])
    ap.add_argument("--train-items", type=int, default=256)
    ap.add_argument("--val-items", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cache-dir", type=Path, default=None, help="the datasets' cache (default: xmr's)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    from xmr.utils.paths import default_cache_dir

    data_cache = a.cache_dir or default_cache_dir()
    load_at_start = load_note()
    with tempfile.TemporaryDirectory(prefix="xmr-train-memory-") as tmp:
        work = Path(tmp)
        manifest = subset_manifest(Path(data_cache), work, a.train_items, a.val_items)
        cache = work / "cache"
        for depth in dict.fromkeys(c.split(":")[0] for c in a.cases):  # fill the caches, untimed
            train_once(manifest, work / "warm", cache, f"{depth}:fp32", a)
        samples: dict[str, list[tuple[float, float, float]]] = {c: [] for c in a.cases}
        for r in range(a.repeat):
            order = a.cases[r % len(a.cases):] + a.cases[:r % len(a.cases)]  # rotate: no case always first
            for case in order:
                samples[case].append(train_once(manifest, work / "run", cache, case, a))
                print(f"round {r + 1} {case}: {samples[case][-1][0]:.1f} s/epoch, "
                      f"{samples[case][-1][1]:.0f} MB", flush=True)
    base = statistics.median(s[0] for s in samples[a.cases[0]])
    rows = []
    for case in a.cases:
        sec = statistics.median(s[0] for s in samples[case])
        rss = max(s[1] for s in samples[case])
        wall = statistics.median(s[2] for s in samples[case])
        rows.append([case, f"{sec:.1f}", f"{sec / base:.2f}x", f"{rss:.0f}", f"{wall:.1f}"])
    table = markdown(["case (blocks:precision[:option])", "s / epoch (median)", f"vs {a.cases[0]}",
                      "peak RSS MB", "process wall s (start-up included)"], rows)
    text = (f"# xmr train: time and peak memory per case\n\n`{command_line()}`\n\n"
            f"{a.train_items} training / {a.val_items} validation emoji, 1 epoch of {a.steps} steps x "
            f"{a.batch_size} pairs + validation, {a.threads} threads, {a.repeat} rounds, CPU; at the start: "
            f"{load_at_start}\n\n{table}\n")
    write_report(a.out, f"train_memory_{a.steps}x{a.batch_size}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
