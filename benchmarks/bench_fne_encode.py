"""Encode cost of the full-network embedding (``efficientnet-lite0-fne``) against ``efficientnet-lite0``.

The same ~200 images (the first of a manifest, read and preprocessed once, outside the timing) go
through each encoder's ``encode_batch`` in batches of its default size; the two run interleaved
(``--repeats`` rounds, the order rotated each round, so a noisy neighbour hurts both alike), and the
ratio is taken per round (quartiles over rounds). Cache cost: the float32 row, ``dim x 4`` bytes per
image, and the bytes per image of the cache folders the run's training left (npz shards + encoder.json),
where they exist.

Example::

    python benchmarks/bench_fne_encode.py --manifest ~/.cache/xmr/datasets/openclipart/manifest.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from xmr.bench.common import command_line, fmt_ratio, interleaved, load_note, markdown, median, paired_ratio
from xmr.data.manifest import read_manifest
from xmr.encoders import FeatureCache, create_image_encoder
from xmr.encoders.base import ImageEncoder
from xmr.workflows.features import feature_cache_dir

OUT = Path(__file__).resolve().parent / "results" / "encoders"


def cache_bytes_per_image(enc: ImageEncoder, root: Path) -> tuple[int, float | None]:
    """(rows held, bytes on disk per row) of ``enc``'s cache folder under ``root`` (None: no folder)."""
    cache = FeatureCache(root, enc.describe())
    files = [p for p in cache.dir.iterdir() if p.is_file()] if cache.dir.is_dir() else []
    n = len(cache)
    return n, (sum(p.stat().st_size for p in files) / n if n else None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--encoders", nargs="+", default=["efficientnet-lite0", "efficientnet-lite0-fne"])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--name", default="fne_encode", help="stem of the report under --out")
    a = ap.parse_args(argv)
    load_before = load_note()
    encs = {name: create_image_encoder(name) for name in a.encoders}
    items = read_manifest(a.manifest)[: a.images]
    arrays = [next(iter(encs.values())).load(it.image) for it in items]
    for e in encs.values():  # weights loaded and one batch run before timing
        e.encode_batch(arrays[:2])

    def case(enc: ImageEncoder):  # type: ignore[no-untyped-def]
        def run(_: int) -> None:
            bs = enc.default_batch_size
            for i in range(0, len(arrays), bs):
                enc.encode_batch(arrays[i:i + bs])
        return run

    with torch.inference_mode():
        secs = interleaved({n: case(e) for n, e in encs.items()}, a.repeats)
    base = a.encoders[0]
    root = feature_cache_dir()
    rows, data = [], {}
    for name, enc in encs.items():
        rate = len(arrays) / median(secs[name])
        held, on_disk = cache_bytes_per_image(enc, root)
        ratio = "1 (baseline)" if name == base else fmt_ratio(paired_ratio(secs[base], secs[name]))
        rows.append([f"`{name}`", enc.dim, f"{rate:.1f}", ratio, enc.dim * 4,
                     f"{on_disk:.0f} ({held} rows)" if on_disk else "-"])
        data[name] = {"dim": enc.dim, "encoder_id": enc.encoder_id, "images_per_s": rate, "seconds": secs[name],
                      "row_bytes": enc.dim * 4, "cache_rows": held, "cache_bytes_per_row": on_disk}
    text = "\n\n".join([
        "# Encode cost: full-network embedding vs EfficientNet-Lite0",
        f"Command: `{command_line()}`",
        f"{len(arrays)} images of `{a.manifest}` (read and preprocessed once, not timed), "
        f"`encode_batch` at each encoder's batch size, {a.repeats} interleaved rounds, torch threads "
        f"{torch.get_num_threads()}; median images/s, and the per-round time ratio base / other "
        "(median, quartiles; < 1: slower than the baseline).",
        markdown(["encoder", "dim", "images/s", f"speed vs `{base}`", "float32 row bytes",
                  "cache bytes per image on disk"], rows),
        f"Load: {load_before} before; {load_note()} after."])
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.name}.md").write_text(text + "\n")
    from xmr.utils.io import save_json
    save_json(a.out / f"{a.name}.json", {"command": command_line(), "images": len(arrays), **data})
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
