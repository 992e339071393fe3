"""Query-text encoders: the torch MiniLM (``minilm-l6``) vs its int8 ONNX stand-in (``minilm-l6-int8``).

What ``xmr serve`` pays per query text, and how close the stand-in's features are. Per batch
size, the two encoders run interleaved (``--repeats`` rounds of each, best round kept, so a
noisy neighbour hurts both alike): ms per text, and the ratio torch ÷ int8 measured in the same
run. The int8 model is timed with one intra-op thread per call (as each of the service's
encoder workers runs it) and with two; torch with its threads set as asked (``--torch-threads``;
the service runs its heads at 1, this is the run's own encoder as ``xmr search`` uses it).
Agreement: cosine of the two encoders' features for every query text, and whether each text's
nearest other text is the same under both.

Example::

    python benchmarks/bench_text_encoders.py
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from xmr.bench.common import command_line, load_note, markdown
from xmr.encoders import create_text_encoder
from xmr.encoders.minilm_int8 import MiniLML6Int8
from xmr.utils.io import atomic_write_text, save_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import queries  # noqa: E402  (the load benchmark's query sentences)


def best_ms_per_text(fn: Callable[[list[str]], object], texts: list[str], batch: int, seconds: float,
                     repeats: int) -> float:
    """The best of ``repeats`` rounds (each ~``seconds`` long) of ms per text at ``batch``."""
    rounds = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            start = (n * batch) % (len(texts) - batch)
            fn(texts[start:start + batch])
            n += 1
        rounds.append((time.perf_counter() - t0) / (n * batch) * 1000)
    return min(rounds)


def run_recall(run: Path) -> str:
    """Test text->image R@1/5/10 over the run's index (``xmr index RUN``: the whole gallery), each test
    text's own image the answer, with the run's encoder and with the stand-in as query encoder."""
    from xmr.data.manifest import read_manifest
    from xmr.runs.config import load_run
    from xmr.search import Searcher

    cfg, _ = load_run(run)
    test = [it for it in read_manifest(cfg.manifest) if it.split == "test" and it.texts]
    rows = []
    for name, fast in (("run's own (torch MiniLM)", False), ("int8 ONNX stand-in", True)):
        s = Searcher.from_run(run, fast_text=fast)
        position = {str(Path(it.image).resolve()): i for i, it in enumerate(s.items)}
        wanted = np.array([position[str(Path(it.image).resolve())] for it in test])
        _, ids = s.search_vectors(s.embed_texts([it.texts[0] for it in test]), 10)
        hit = ids == wanted[:, None]
        rows.append([name, *(f"{100 * hit[:, :k].any(axis=1).mean():.1f}" for k in (1, 5, 10))])
    return (f"Text->image over `{run}`'s index ({len(s.items)} images), the {len(test)} test titles as queries:\n\n"
            + markdown(["query encoder", "R@1", "R@5", "R@10"], rows))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 32])
    ap.add_argument("--texts", type=int, default=1000, help="distinct query sentences")
    ap.add_argument("--seconds", type=float, default=1.0, help="length of one timing round")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--torch-threads", type=int, default=2)
    ap.add_argument("--run", type=Path, default=None,
                    help="an indexed run: also its test text->image recall with each encoder for the queries")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "serve")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    load_before = load_note()
    texts = queries(args.texts)
    exact = create_text_encoder("minilm-l6")
    fast = {1: MiniLML6Int8(threads=1), 2: MiniLML6Int8(threads=2)}
    a = exact.encode_batch(texts)
    b = fast[1].encode_batch(texts)
    cos = (a * b).sum(axis=1)
    sim_a, sim_b = a @ a.T, b @ b.T
    np.fill_diagonal(sim_a, -2)
    np.fill_diagonal(sim_b, -2)
    same_nn = float((sim_a.argmax(axis=1) == sim_b.argmax(axis=1)).mean())
    rows = []
    for batch in args.batches:
        t_exact = best_ms_per_text(exact.encode_batch, texts, batch, args.seconds, args.repeats)
        t1 = best_ms_per_text(fast[1].encode_batch, texts, batch, args.seconds, args.repeats)
        t2 = best_ms_per_text(fast[2].encode_batch, texts, batch, args.seconds, args.repeats)
        rows.append({"batch": batch, "torch": t_exact, "int8_1": t1, "int8_2": t2})
    table = markdown(["batch", f"torch MiniLM ({args.torch_threads} threads) ms/text",
                      "int8 ONNX, 1 thread ms/text", "int8 ONNX, 2 threads ms/text",
                      "torch ÷ int8 (1 thread)", "torch ÷ int8 (2 threads)"],
                     [[r["batch"], f"{r['torch']:.2f}", f"{r['int8_1']:.2f}", f"{r['int8_2']:.2f}",
                       f"{r['torch'] / r['int8_1']:.2f}", f"{r['torch'] / r['int8_2']:.2f}"] for r in rows])
    agree = (f"Agreement over {len(texts)} query texts: cosine min {cos.min():.5f}, mean {cos.mean():.5f}; "
             f"the nearest other text is the same under both encoders for {100 * same_nn:.1f} %.")
    recall = "" if args.run is None else run_recall(args.run)
    text = "\n\n".join(["# Query-text encoders: torch MiniLM vs its int8 ONNX stand-in", f"Command: `{command_line()}`",
                        table, agree, recall, f"{load_before} at start."])
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "bench_text_encoders.md", text + "\n")
    save_json(args.out / "bench_text_encoders.json", {"command": command_line(), "rows": rows,
                                                      "cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
                                                      "same_nearest": same_nn})
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
