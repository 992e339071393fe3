"""Choose the full-network embedding's taps and scaling on the *validation* rsum (never test).

One encode pass: every image of the manifest through ``efficientnet-lite0-fne`` with every tap (the 16
blocks and the head) unscaled (``none``), into the feature cache. Every candidate setting is a subset of
those taps, scaled within each tap (:func:`xmr.encoders.fne.scale_taps`: per image, per tap), so its
features are derived from that pass and put into the candidate's own cache folder (its encoder id);
a few images are also encoded by the candidate encoder itself and compared (``max |diff|`` in the
report), so what the derivation wrote is what the encoder would have. Then ``xmr train MANIFEST
--image-encoder efficientnet-lite0-fne:SPEC --seed S`` per candidate and seed, finding every feature
cached, and the best validation rsum of each run is tabled (``history.json``). The test split is not
read.

Example::

    python benchmarks/fne_select.py ~/.cache/xmr/datasets/openclipart/manifest.jsonl \
        --runs /work/runs/fne/select-oc --seeds 0 --candidates head:none b10,b14,b15,head:block-l2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from xmr.bench.common import command_line, load_note, markdown
from xmr.data.manifest import read_manifest
from xmr.encoders import FeatureCache, encode_images
from xmr.encoders.fne import BLOCK_WIDTHS, FneConfig, FullNetworkEmbedding, scale_taps
from xmr.utils.io import sha1_file
from xmr.workflows.features import feature_cache_dir

ALL_TAPS = FneConfig(blocks=tuple(range(len(BLOCK_WIDTHS))), head=True, scale="none")
OUT = Path(__file__).resolve().parent / "results" / "encoders"
CANDIDATES = ["head:none", "b15,head:block-l2", "b14,b15,head:block-l2", "b10,b14,b15,head:block-l2",
              "b7,b10,b14,b15,head:block-l2", "b4,b7,b10,b14,b15,head:block-l2",
              "b7,b10,b14,b15,head:none", "b7,b10,b14,b15,head:block-std",
              "b7,b10,b14,b15,head:block-std:ternary"]


def derive(all_taps: np.ndarray, config: FneConfig) -> np.ndarray:
    """``config``'s features from the unscaled every-tap rows. Shape: (n, 3088) -> (n, config.dim)."""
    starts = np.concatenate([[0], np.cumsum(ALL_TAPS.widths)])
    index = list(config.blocks) + ([len(BLOCK_WIDTHS)] if config.head else [])
    taps = [torch.from_numpy(all_taps[:, starts[i]:starts[i + 1]]) for i in index]
    return scale_taps(taps, config).numpy()


def fill_cache(spec: str, keys: list[str], all_taps: np.ndarray, images: list[str], root: Path) -> float:
    """Put ``spec``'s derived rows in its cache; return max |derived - encoded| on 4 images."""
    config = FneConfig.parse(spec)
    enc = FullNetworkEmbedding(config)
    derived = derive(all_taps, config)
    cache = FeatureCache(root, enc.describe())
    todo = [i for i, k in enumerate(keys) if k not in cache]
    if todo:
        cache.put([keys[i] for i in todo], derived[todo])
    check = [0, 1, len(keys) // 2, len(keys) - 1]
    own = enc.encode_batch([enc.load(images[i]) for i in check])
    return float(np.abs(own - derived[check]).max())


def best_val(run: Path) -> dict[str, float]:
    """The run's best validation rsum, its epoch and the epochs run (``history.json``)."""
    history = json.loads((run / "history.json").read_text())
    best = max(history, key=lambda r: float(r["val_rsum"]))
    return {"val_rsum": float(best["val_rsum"]), "best_epoch": int(best["epoch"]), "epochs": len(history)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--runs", type=Path, required=True, help="folder of the run folders")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--candidates", nargs="+", default=CANDIDATES, help="family arguments TAPS[:SCALE[:ternary]]")
    ap.add_argument("--train-args", default="", help="more `xmr train` options (one string)")
    ap.add_argument("--name", default="fne_select", help="stem of the report under --out")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    load_before, t0 = load_note(), time.perf_counter()
    items = read_manifest(a.manifest)
    images = [str(it.image) for it in items]
    root = feature_cache_dir()
    res = encode_images(FullNetworkEmbedding(ALL_TAPS), images, cache_dir=root)
    keys = [sha1_file(p) for p in images]
    diffs = {spec: fill_cache(spec, keys, res.feats, images, root) for spec in a.candidates}
    xmr = str(Path(sys.executable).with_name("xmr"))
    data: dict[str, dict[str, object]] = {}
    for spec in a.candidates:
        per_seed = {}
        for seed in a.seeds:
            run = a.runs / f"{FneConfig.parse(spec).spec.replace(',', '.').replace(':', '-')}-s{seed}"
            cmd = [xmr, "train", str(a.manifest), "--out", str(run), "--seed", str(seed),  # finished: loaded
                   "--image-encoder", f"efficientnet-lite0-fne:{spec}", *a.train_args.split()]
            subprocess.run(cmd, check=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
            per_seed[seed] = best_val(run)
        data[spec] = {"dim": FneConfig.parse(spec).dim, "max_abs_diff_derived_vs_encoded": diffs[spec],
                      "runs": per_seed,
                      "mean_val_rsum": statistics.fmean(float(r["val_rsum"]) for r in per_seed.values())}
    rows = [[f"`{spec}`", d["dim"], *(f"{d['runs'][s]['val_rsum']:.1f} (ep {d['runs'][s]['best_epoch']})"  # type: ignore[index]
                                      for s in a.seeds), f"{d['mean_val_rsum']:.1f}",
             f"{d['max_abs_diff_derived_vs_encoded']:.1e}"] for spec, d in data.items()]
    text = "\n\n".join([
        f"# Full-network embedding: taps and scaling on the validation rsum (`{a.manifest.parent.name}`)",
        f"Command: `{command_line()}`",
        f"`xmr train {a.manifest} --image-encoder efficientnet-lite0-fne:SPEC --seed S {a.train_args}` per row; "
        "the best validation rsum of each run (its best epoch). The test split is not read. Last column: "
        "max |derived - encoded| over 4 images (the derived cache equals the encoder's own features).",
        markdown(["spec", "dim", *(f"val rsum seed {s}" for s in a.seeds), "mean", "derived check"], rows),
        f"Load: {load_before} before; {load_note()} after; {time.perf_counter() - t0:.0f} s wall."])
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.name}.md").write_text(text + "\n")
    (a.out / f"{a.name}.json").write_text(json.dumps({"command": command_line(), **data}, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
