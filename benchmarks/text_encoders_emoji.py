"""Text encoders on the emoji zero-shot split: frozen MiniLM vs trained text CNN / bi-GRU.

Every run has the demo's settings (EfficientNet-Lite0 frozen image features, MLP heads to 256-d,
InfoNCE, max 30 epochs, patience 5, batch 128, lr 1e-3, seed 0, the CLDR name as the one
evaluation text per image); only the text side changes:

* ``minilm-l6``: the frozen sentence encoder's cached 384-d features (the demo run);
* ``textcnn``: the dual-path paper's text CNN (Sec. III-B; :mod:`xmr.text.text_cnn`) trained end
  to end from word ids, 32 words, GloVe 6B-50d or random word table, with or without position
  shift (random zero padding before/after the sentence during training);
* ``bigru``: a bi-directional GRU over the same word table (GXN / A3VSE's sentence encoder;
  position shift cannot change it: it reads the real tokens only).

The vocabulary is built from the *training* texts; the 29 test subgroups are never seen in
training, so a share of the test query tokens is out of vocabulary (reported) and maps to the
unknown id: the word-level models cannot know these words, MiniLM can.

The best checkpoint by val rsum is scored once on test. Example (about 40 minutes on one core)::

    XMR_CACHE_DIR=/work/xmr-cache .venv/bin/python benchmarks/text_encoders_emoji.py \
        --runs /work/xmr-runs/text-encoders --threads 1
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import torch

from objectives_emoji import METRICS, SEED, train_one
from xmr.bench.common import command_line, load_note, markdown
from xmr.data import fetch_dataset, read_items, select_split
from xmr.text import TextEncoderConfig, Vocabulary, load_glove, tokenize, vector_coverage
from xmr.training import TrainConfig
from xmr.utils.io import atomic_write_text, save_json
from xmr.workflows.demo import EVAL_TEXTS_PER_ITEM
from xmr.workflows.evaluate import evaluate_run

log = logging.getLogger("text_encoders_emoji")

#: row name -> (run folder, RunConfig text fields)
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "MiniLM-L6 (frozen)": ("minilm", {"text_encoder": "minilm-l6"}),
    "text CNN, GloVe, position shift": ("textcnn-glove-shift", {"text_encoder": "textcnn", "text_model":
                                        TextEncoderConfig(kind="textcnn", init="glove", position_shift=True)}),
    "text CNN, GloVe, left-aligned": ("textcnn-glove-left", {"text_encoder": "textcnn", "text_model":
                                      TextEncoderConfig(kind="textcnn", init="glove", position_shift=False)}),
    "text CNN, random, position shift": ("textcnn-random-shift", {"text_encoder": "textcnn", "text_model":
                                         TextEncoderConfig(kind="textcnn", init="random", position_shift=True)}),
    "text CNN, random, left-aligned": ("textcnn-random-left", {"text_encoder": "textcnn", "text_model":
                                       TextEncoderConfig(kind="textcnn", init="random", position_shift=False)}),
    "bi-GRU, GloVe": ("bigru-glove", {"text_encoder": "bigru", "text_model":
                      TextEncoderConfig(kind="bigru", init="glove", position_shift=False)}),
    "bi-GRU, random": ("bigru-random", {"text_encoder": "bigru", "text_model":
                       TextEncoderConfig(kind="bigru", init="random", position_shift=False)}),
}


def coverage_note(manifest: Path) -> dict[str, float]:
    """How many test-query tokens the training vocabulary (and GloVe) knows."""
    items = read_items(manifest)
    vocab = Vocabulary.build(t for it in select_split(items, "train") for t in it.texts)
    test_queries = sorted({it.texts[0] for it in select_split(items, "test")})  # the distinct CLDR names
    tokens = [t for q in test_queries for t in tokenize(q)]
    words, _ = load_glove(50)
    cov = vector_coverage(vocab, words, test_queries)
    return {"vocab_words": len(vocab) - 2, "vocab_with_glove": cov.words_found,
            "test_query_tokens": len(tokens), "test_tokens_in_vocab": sum(t in vocab for t in tokens),
            "test_tokens_in_vocab_and_glove": cov.tokens_found,
            "test_queries_all_oov": sum(all(t not in vocab for t in tokenize(q)) for q in test_queries),
            "test_queries": len(test_queries)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--runs", default="runs/text-encoders", help="folder of the run folders")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "objectives"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    cache_dir = os.environ.get("XMR_CACHE_DIR")
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = fetch_dataset("emoji", cache_dir)
    load_before = load_note()
    cov = coverage_note(manifest)
    train = TrainConfig(loss="infonce", epochs=args.epochs, seed=SEED)

    rows: dict[str, dict[str, object]] = {}
    for name in args.variants:
        folder, space = VARIANTS[name]
        info = train_one(manifest, train, runs / folder, cache_dir, **space)
        metrics = evaluate_run(Path(str(info["run"])), split="test", texts_per_item=EVAL_TEXTS_PER_ITEM,
                               cache_dir=cache_dir, command=command_line(), show_progress=False)
        rows[name] = {**info, "test": {k: float(metrics[k]) for k in METRICS},
                      "overlap_S": float(metrics.get("overlap_S", float("nan")))}

    header = ["text encoder", *METRICS, "overlap S", "val rsum", "best epoch", "epochs run", "train s"]
    table = markdown(header, [[name, *(f"{r['test'][k]:.1f}" for k in METRICS),  # type: ignore[index]
                               f"{r['overlap_S']:.3f}", f"{r['val_rsum']:.1f}", r["best_epoch"], r["epochs_run"],
                               f"{r['train_seconds']:.0f}"] for name, r in rows.items()])
    runtime = time.perf_counter() - t_start
    cmd = "XMR_CACHE_DIR=" + (cache_dir or "(default)") + " " + command_line()
    text = "\n".join([
        "# Text encoders on the emoji zero-shot split",
        "",
        "Test split: 1,526 images x 383 CLDR names (29 subgroups unseen in training); R@K in percent. "
        f"Every run: EfficientNet-Lite0 features, MLP heads to 256-d, InfoNCE, max {args.epochs} epochs, "
        f"patience 5, batch 128, lr 1e-3, seed {SEED}; best checkpoint by val rsum, scored once on test. "
        "Word-level models: 32 words, 50-d word table, 2 residual blocks of width 256 (text CNN) or 256 "
        "GRU units per direction (bi-GRU), 256-d output into the text head.",
        "",
        table,
        "",
        f"Vocabulary: {cov['vocab_words']} training words, {cov['vocab_with_glove']} of them in GloVe 6B. "
        f"Test names: {cov['test_tokens_in_vocab']} of {cov['test_query_tokens']} tokens are in the training "
        f"vocabulary ({cov['test_tokens_in_vocab_and_glove']} also have a GloVe vector); "
        f"{cov['test_queries_all_oov']} of the {cov['test_queries']} distinct test names have no known word at all.",
        "",
        f"Command: `{cmd}`",
        "",
        f"{load_before} at start; this invocation {runtime:.0f} s (finished runs are loaded, not retrained).",
        "",
    ])
    atomic_write_text(out / "text_encoders_emoji.md", text)
    save_json(out / "text_encoders_emoji.json", {"rows": rows, "coverage": cov, "seed": SEED,
                                                  "epochs": args.epochs, "command": cmd, "seconds": runtime})
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
