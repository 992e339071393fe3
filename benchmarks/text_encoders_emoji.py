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
import sys
from pathlib import Path
from typing import Literal

from objectives_emoji import METRICS, SEED, train_one
from xmr.bench.common import add_session_options, command_line, markdown, start_session
from xmr.data import fetch_dataset, read_items, select_split
from xmr.text import TextEncoderConfig, Vocabulary, load_glove, tokenize, vector_coverage
from xmr.training import TrainConfig
from xmr.workflows.demo import EVAL_TEXTS_PER_ITEM
from xmr.workflows.evaluate import evaluate_run

log = logging.getLogger("text_encoders_emoji")

#: row name -> (run folder, RunConfig text fields)
def _word_model(kind: Literal["textcnn", "bigru"], init: Literal["glove", "random"], shift: bool
                ) -> dict[str, object]:
    return {"text_encoder": kind, "text_model": TextEncoderConfig(kind=kind, init=init, position_shift=shift)}


VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "MiniLM-L6 (frozen)": ("minilm", {"text_encoder": "minilm-l6"}),
    **{f"text CNN, {'GloVe' if init == 'glove' else init}, {'position shift' if shift else 'left-aligned'}":
       (f"textcnn-{init}-{'shift' if shift else 'left'}", _word_model("textcnn", init, shift))
       for init in ("glove", "random") for shift in (True, False)},
    **{f"bi-GRU, {'GloVe' if init == 'glove' else init}": (f"bigru-{init}", _word_model("bigru", init, False))
       for init in ("glove", "random")},
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
    add_session_options(ap, runs="runs/text-encoders", out=Path(__file__).resolve().parent / "results" / "objectives")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args(argv)
    session = start_session(args)
    cache_dir, runs, out = session.cache_dir, args.runs, args.out
    manifest = fetch_dataset("emoji", cache_dir)
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
        f"Command: `{session.command}`",
        "",
        session.footer(),
        "",
    ])
    session.write(out, "text_encoders_emoji", text, {"rows": rows, "coverage": cov, "seed": SEED,
                                                     "epochs": args.epochs})
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
