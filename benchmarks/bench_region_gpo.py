"""What grid features with a GPO head cost: encode rate, cache bytes and head rate against the defaults.

Encoders, on the same images (the first ``--items`` of a manifest, read once beforehand, so only
the network and the pooling are timed): ``efficientnet-lite0`` (the default, 1280-d pooled
features) vs ``efficientnet-lite0-regions`` (its last map pooled to 3 x 3 cells) and
``efficientnet-lite0-regions7x7`` (all 49 cells), interleaved rounds (A B C, B C A, ...) so a noisy
neighbour hurts every case alike; images/s from the median round and the ratio against
efficientnet-lite0 paired round by round. Heads, on random cached-feature rows (eval mode, no
grad): the default image head (``mlp`` on 1280-d) vs ``region-mean`` and ``region-gpo`` on 3 x 3
and 7 x 7 regions, rows/s. Cache: bytes per item of each encoder's float32 row.

Example::

    python benchmarks/bench_region_gpo.py ~/.cache/xmr/datasets/openclipart/manifest.jsonl
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

from xmr.bench.common import command_line, interleaved, load_note, markdown, median, paired_ratio
from xmr.data.manifest import read_manifest
from xmr.encoders import create_image_encoder
from xmr.models import create_head
from xmr.utils.io import atomic_write_text, save_json

ENCODERS = ("efficientnet-lite0", "efficientnet-lite0-regions", "efficientnet-lite0-regions7x7")


def encoder_rates(paths: list[str], repeat: int, batch: int) -> list[dict[str, object]]:
    encoders = {name: create_image_encoder(name) for name in ENCODERS}
    arrays = [encoders[ENCODERS[0]].load(p) for p in paths]  # every encoder here reads images alike
    for enc in encoders.values():
        enc.encode_batch(arrays[:2])  # weights loaded, first call's set-up out of the timings

    def case(enc: object) -> Callable[[int], object]:
        return lambda _s: [enc.encode_batch(arrays[i:i + batch]) for i in range(0, len(arrays), batch)]  # type: ignore[attr-defined]

    times = interleaved({name: case(enc) for name, enc in encoders.items()}, repeat)
    base = times[ENCODERS[0]]
    return [{"encoder": name, "dim": int(encoders[name].dim), "bytes_per_item": 4 * int(encoders[name].dim),
             "images_per_s": len(paths) / median(t), "ratio_vs_base": paired_ratio(base, t)}
            for name, t in times.items()]


def head_rates(rows: int, repeat: int, embed_dim: int) -> list[dict[str, object]]:
    g = torch.Generator().manual_seed(0)
    cases = [("mlp", 1), ("region-mean", 9), ("region-gpo", 9), ("region-mean", 49), ("region-gpo", 49)]
    heads, feats = {}, {}
    for name, regions in cases:
        kw = {"regions": regions} if regions > 1 else {}
        heads[f"{name} x{regions}"] = create_head(name, regions * 1280, embed_dim, **kw).eval()
        feats[f"{name} x{regions}"] = torch.randn(rows, regions * 1280, generator=g)

    def case(key: str) -> Callable[[int], object]:
        def run(_s: int) -> None:
            with torch.no_grad():
                for i in range(0, rows, 1024):
                    heads[key](feats[key][i:i + 1024])
        return run

    times = interleaved({k: case(k) for k in heads}, repeat)
    return [{"head": k, "rows_per_s": rows / median(t), "params": sum(p.numel() for p in heads[k].parameters())}
            for k, t in times.items()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--head-rows", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "encoders")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = load_note()
    paths = [it.image for it in read_manifest(args.manifest) if it.image][:args.items]
    enc = encoder_rates(paths, args.repeat, args.batch)
    heads = head_rates(args.head_rows, args.repeat, 256)
    enc_table = markdown(["encoder", "row dim", "cache bytes / item (float32)", "images/s", "time ratio base ÷ this"],
                         [[r["encoder"], r["dim"], r["bytes_per_item"], f"{r['images_per_s']:.1f}",
                           "{1:.2f} ({0:.2f}-{2:.2f})".format(*r["ratio_vs_base"])] for r in enc])  # type: ignore[str-format]
    head_table = markdown(["image head x regions", "parameters", "rows/s"],
                          [[r["head"], r["params"], f"{r['rows_per_s']:.0f}"] for r in heads])
    text = "\n\n".join([
        "# Grid features + GPO head: cost against the defaults", f"Command: `{command_line()}`",
        f"Encoders: {len(paths)} images of `{args.manifest.parent.name}`, read once, batches of {args.batch}, "
        f"{args.threads} torch threads, {args.repeat} interleaved rounds (median; the ratio's quartiles over rounds).",
        enc_table, f"Heads: {args.head_rows} random rows, embed_dim 256, eval mode, batches of 1024.", head_table,
        f"{load_before} at start; {load_note()} at the end."])
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "region-gpo-cost.md", text + "\n")
    save_json(args.out / "region-gpo-cost.json", {"command": command_line(), "encoders": enc, "heads": heads})
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
