"""What a frozen sentence encoder costs: texts/s against minilm-l6 in the same run, and cache bytes per text.

The same ``--n`` texts (a seeded draw of a manifest's distinct texts) go through each encoder's
``encode_batch`` in batches of ``--batch``, in ``--slices`` slices, the encoders interleaved
round by round (:func:`xmr.bench.common.interleaved`: a noisy neighbour slows every encoder
alike); texts/s is the median over (round, slice) samples and the speed ratio is paired per
sample (p25 / median / p75). Weights load before the clock starts. The feature cache keeps
float32 rows: ``4 * dim`` bytes per text.

Example::

    python benchmarks/bench_sentence_encoders.py ~/.cache/xmr/datasets/openclipart/manifest.jsonl \\
        --encoders minilm-l6 all-mpnet
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

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
from xmr.encoders import create_text_encoder
from xmr.utils.io import save_json

OUT = Path(__file__).resolve().parent / "results" / "encoders"


def manifest_texts(manifest: Path, n: int, seed: int) -> list[str]:
    """``n`` distinct texts of a manifest, drawn with ``seed`` (in file order first, so the draw is stable)."""
    seen: dict[str, None] = {}
    with open(manifest) as fh:
        for line in fh:
            for t in json.loads(line).get("texts", []):
                if t.strip():
                    seen.setdefault(t, None)
    texts = list(seen)
    random.Random(seed).shuffle(texts)
    return texts[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--encoders", nargs="+", default=["minilm-l6", "all-mpnet"], help="the first is the baseline")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--slices", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = manifest_texts(args.manifest.expanduser(), args.n, args.seed)
    step = -(-len(texts) // args.slices)
    slices = [texts[i:i + step] for i in range(0, len(texts), step)]
    encoders = {name: create_text_encoder(name) for name in args.encoders}
    for enc in encoders.values():
        enc.encode_batch(texts[:args.batch])  # load the weights before the clock

    def case(name: str):  # noqa: ANN202
        enc = encoders[name]

        def run(s: int) -> None:
            for i in range(0, len(slices[s]), args.batch):
                enc.encode_batch(slices[s][i:i + args.batch])
        return run

    before = load_note()
    times = interleaved({name: case(name) for name in encoders}, args.repeat, n_slices=len(slices))
    after = load_note()
    sizes = [len(slices[i % len(slices)]) for i in range(len(next(iter(times.values()))))]
    base = args.encoders[0]
    rows, result = [], {"command": command_line(), "texts": len(texts), "batch": args.batch,
                        "threads": torch.get_num_threads(), "load_before": before, "load_after": after,
                        "encoders": {}}
    for name, enc in encoders.items():
        rate = median([n / t for n, t in zip(sizes, times[name])])
        ratio = paired_ratio(times[name], times[base])  # > 1: the baseline is faster by that factor
        per_text = 4 * int(enc.dim)
        result["encoders"][name] = {"encoder_id": enc.encoder_id, "dim": enc.dim, "texts_per_s": rate,
                                    "time_vs_baseline": ratio, "cache_bytes_per_text": per_text,
                                    "seconds": times[name]}
        rows.append([f"`{name}` ({enc.encoder_id})", enc.dim, f"{rate:.1f}",
                     "1 (baseline)" if name == base else f"{fmt_ratio(ratio)} slower", f"{per_text:,}"])
    text = "\n".join([
        "# Frozen sentence encoders: encode rate and cache size", "", f"`{command_line()}`", "",
        f"{len(texts)} distinct texts of `{args.manifest.name}` (seed {args.seed}), batches of {args.batch}, "
        f"{len(slices)} slices x {args.repeat} rounds interleaved, torch threads {torch.get_num_threads()}.",
        f"Load: before {before}; after {after}.", "",
        markdown(["encoder", "dim", "texts/s (median)", f"time / {base}'s (p25 / median / p75)",
                  "cache bytes per text (float32)"], rows), ""])
    print(text)
    save_json(args.out / "sentence_cost.json", result)
    write_report(args.out, "sentence_cost.md", text)


if __name__ == "__main__":
    main()
