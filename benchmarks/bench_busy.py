"""xmr on a busy machine: training and encoding quiet vs beside two CPU-bound processes, in one run.

Each measurement is a whole ``xmr`` process, as a user runs it, with no thread settings in its
environment (``OMP_WAIT_POLICY``, ``OMP_NUM_THREADS``, ``XMR_THREADS`` removed), so each code runs at
its own defaults:

* training: the demo's InfoNCE run on emoji (``xmr train M --loss infonce --eval-texts-per-item 1``,
  cached EfficientNet-Lite0 + MiniLM features) for ``--epochs`` epochs; the figure is the epoch's
  time from ``history.json`` (training + validation);
* encoding: ``xmr encode`` of the first ``--n-images`` emoji of the manifest (images and their
  texts) into a fresh cache; the figure is images/s of the whole process (model loading included).

"loaded" = two ``python -c 'while True: pass'`` processes started by this script (by PID, killed by
PID when each measurement ends): on 2 cores they leave about half of the machine, so about 2x is
the fair slow-down. Quiet and loaded alternate, round by round, and with ``--compare-src`` the same
is measured for another checkout's code (``PYTHONPATH=<src>``: the code before a change) in the same
rounds, so every ratio is of figures taken minutes apart. Example (about 15 min on 2 cores with a
comparison)::

    git worktree add /tmp/xmr-before <commit> && \\
    python benchmarks/bench_busy.py --compare-src /tmp/xmr-before/src --rounds 2 \\
        --out benchmarks/results/busy/busy.md
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xmr.bench.common import command_line, load_note, markdown
from xmr.data import fetch_dataset, read_manifest, write_manifest

HERE = Path(__file__).resolve().parent
THREAD_VARIABLES = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "XMR_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")


def start_hogs(n: int) -> list[subprocess.Popen[bytes]]:
    """``n`` CPU-bound processes (each spins one core), in process groups of their own."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(n)]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill the processes this script started, by PID, and reap them."""
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait()


def xmr(args: list[str], env: dict[str, str], timeout: float) -> float:
    """Wall seconds of one ``xmr`` process; a failure stops the benchmark with its output."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "xmr", "-q", *args], env=env, capture_output=True, text=True,
                       timeout=timeout)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"xmr {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="quiet/loaded pairs of each case (default 2)")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs per measurement (default 1)")
    ap.add_argument("--n-images", type=int, default=400, help="emoji encoded per measurement (default 400)")
    ap.add_argument("--hogs", type=int, default=2, help="CPU-bound processes beside the loaded runs (default 2)")
    ap.add_argument("--compare-src", type=Path, default=None,
                    help="also measure the code of this src folder (e.g. a worktree of the commit before)")
    ap.add_argument("--also-threads", type=int, nargs="*", default=[], metavar="N",
                    help="also measure this checkout with XMR_THREADS=N (each N), beside its automatic choice")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds one xmr process may take")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here (and .json beside)")
    args = ap.parse_args()

    manifest = fetch_dataset("emoji")
    base = Path(tempfile.mkdtemp(prefix="xmr-busy-"))
    subset = base / "subset.jsonl"
    items = read_manifest(manifest)
    write_manifest(items[:args.n_images], subset)
    clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    clean["XMR_NO_PROGRESS"] = "1"
    here_src = str(HERE.parent / "src")
    codes = {"this checkout": here_src, **({"compare": str(args.compare_src.resolve())} if args.compare_src else {})}
    envs = {name: {**clean, "PYTHONPATH": src} for name, src in codes.items()}
    for n in args.also_threads:
        codes[f"this checkout, XMR_THREADS={n}"] = here_src
        envs[f"this checkout, XMR_THREADS={n}"] = {**clean, "PYTHONPATH": here_src, "XMR_THREADS": str(n)}
    print(f"# {load_note()} before the warm-up", flush=True)
    # the training reads cached features: encode the whole manifest once first (not timed)
    xmr(["encode", str(manifest)], envs["this checkout"], args.timeout)

    results: dict[tuple[str, str, str], list[float]] = {}
    for r in range(args.rounds):
        loads = ("quiet", "loaded") if r % 2 == 0 else ("loaded", "quiet")
        for load in loads:
            for name in (list(codes) if r % 2 == 0 else list(codes)[::-1]):
                hogs = start_hogs(args.hogs) if load == "loaded" else []
                try:
                    time.sleep(0.5 if hogs else 0)
                    tag = "".join(c if c.isalnum() else "_" for c in name)
                    run = base / f"run-{r}-{load}-{tag}"
                    xmr(["train", str(manifest), "--out", str(run), "--loss", "infonce", "--epochs",
                         str(args.epochs), "--eval-texts-per-item", "1", "--patience", "0"], envs[name], args.timeout)
                    history = json.loads((run / "history.json").read_text())
                    epoch_s = statistics.median(float(row["seconds"]) for row in history)
                    cache = base / f"cache-{r}-{load}-{tag}"
                    enc_s = xmr(["encode", str(subset), "--cache-dir", str(cache)], envs[name], args.timeout)
                finally:
                    stop(hogs)
                results.setdefault((name, "train", load), []).append(epoch_s)
                results.setdefault((name, "encode", load), []).append(args.n_images / enc_s)
                print(f"round {r + 1} {load:>6} {name}: epoch {epoch_s:.1f} s, encode {args.n_images / enc_s:.1f} "
                      "images/s", flush=True)

    rows = []
    for name in codes:
        for task, unit in (("train", "s / epoch"), ("encode", "images/s")):
            quiet, loaded = (statistics.median(results[(name, task, x)]) for x in ("quiet", "loaded"))
            slow = loaded / quiet if task == "train" else quiet / loaded
            rows.append([name, f"{task} ({unit})", f"{quiet:.1f}", f"{loaded:.1f}", f"{slow:.2f}x",
                         ", ".join(f"{x:.1f}" for x in results[(name, task, "quiet")]),
                         ", ".join(f"{x:.1f}" for x in results[(name, task, "loaded")])])
    table = markdown(["code", "measure", "quiet (median)", f"beside {args.hogs} hogs (median)",
                      "slow-down loaded / quiet", "quiet samples", "loaded samples"], rows)
    text = (f"Command: `{command_line()}`\n\nTraining: the demo's InfoNCE run on emoji, {args.epochs} epoch(s), "
            f"cached features; encoding: `xmr encode` of {args.n_images} emoji (and their texts) into a fresh cache, "
            f"the whole process. {args.rounds} round(s), quiet and loaded alternating; {os.cpu_count()} cores; "
            f"{load_note()} at the end.\n\n{table}\n")
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(
            {"command": command_line(), "results": {"/".join(k): v for k, v in results.items()}}, indent=1))


if __name__ == "__main__":
    main()
