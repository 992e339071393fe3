"""Where the time of one `xmr encode` with ``efficientnet-lite0-onnx`` goes: a cProfile of the whole command.

Makes ``--n-images`` synthetic 224-px JPEGs, runs ``xmr --threads N encode --images DIR --image-encoder
efficientnet-lite0-onnx`` once to export the ONNX graph (untimed), then once more into a fresh feature cache
(the graph copied in) under cProfile, in this process. Each part's share of the profiled wall time is
the cumulative time of the functions that do it (they do not nest in one another):

* ``onnxruntime``: ``InferenceSession.run`` (the network);
* ``read``: the images are read (JPEG decode, resize, crop) in reading threads that overlap the
  network and that cProfile does not see; the same reading is timed alone afterwards, in one thread;
* ``hash``: the content keys of the files (``sha1_file``);
* ``cache``: the feature cache's writes;
* the rest (start-up: imports, argument parsing, the manifest).

    python benchmarks/profile_encode_onnx.py --n-images 600 --threads 2
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from pathlib import Path

from xmr.bench.common import command_line, markdown, write_report
from xmr.bench.images import make_jpegs

OUT = Path(__file__).resolve().parent / "results" / "encode_onnx"
PARTS = {"onnxruntime (InferenceSession.run)": ("onnxruntime", "run"),
         "hash (sha1_file)": ("io.py", "sha1_file"),
         "cache writes": ("cache.py", "put")}


def cumulative(stats: pstats.Stats, where: str, name: str) -> float:
    """Cumulative seconds of the functions named ``name`` in files whose path contains ``where``."""
    total = 0.0
    for (path, _, func), (_, _, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        if func == name and where in path:
            total += ct
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n-images", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    from xmr.cli import main as xmr

    with tempfile.TemporaryDirectory(prefix="xmr-profile-onnx-") as tmp:
        work = Path(tmp)
        images = work / "images"
        make_jpegs(images, a.n_images)
        cmd = ["-q", "--threads", str(a.threads), "encode", "--images", str(images),
               "--image-encoder", "efficientnet-lite0-onnx"]
        if xmr([*cmd, "--cache-dir", str(work / "warm")]) != 0:
            raise SystemExit("the warm-up encode failed")
        (work / "cache").mkdir()
        shutil.copytree(work / "warm" / "onnx", work / "cache" / "onnx")
        t1 = time.perf_counter()
        from xmr.encoders.image_io import image_to_array

        for path in sorted(images.iterdir()):
            image_to_array(path, 224)
        read_alone = time.perf_counter() - t1
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        status = xmr([*cmd, "--cache-dir", str(work / "cache")])
        prof.disable()
        wall = time.perf_counter() - t0
        if status != 0:
            raise SystemExit("the profiled encode failed")
    stats = pstats.Stats(prof)
    rows = [[part, f"{cumulative(stats, *key):.2f}", f"{100 * cumulative(stats, *key) / wall:.0f}%"]
            for part, key in PARTS.items()]
    rows.append(["read alone, one thread, timed apart (overlaps the network in xmr encode)", f"{read_alone:.2f}",
                 f"({100 * read_alone / wall:.0f}%)"])
    text = (f"# One `xmr encode` with efficientnet-lite0-onnx, profiled\n\n`{command_line()}`\n\n"
            f"{a.n_images} synthetic 224-px JPEGs, {a.threads} threads; whole command {wall:.2f} s under cProfile "
            f"({a.n_images / wall:.1f} images/s with the profiler's overhead)\n\n"
            f"{markdown(['part', 'seconds (cumulative)', 'of the wall time'], rows)}\n")
    write_report(a.out, f"profile_{a.n_images}_t{a.threads}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
