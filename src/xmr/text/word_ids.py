"""Word ids as "features": the input side of a trainable word-level text encoder.

xmr's training and serving pipelines move cached per-text feature rows (:mod:`xmr.encoders.cache`).
A trainable text model (:mod:`xmr.text`, the dual-path text CNN or the bi-GRU) starts from token
ids instead, so :class:`WordIdsEncoder` turns a text into its left-aligned, fixed-length id row
(:func:`xmr.text.encode_ids`) stored as float32 (exact for vocabularies below 2**24 words).
The model casts the row back to int64 and applies position shift during training
(:func:`xmr.text.shift_positions`).

It is not in the :data:`~xmr.encoders.ENCODERS` registry: it needs the run's vocabulary, which
``xmr train`` builds from the training texts and saves beside the model (``vocab.json``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xmr.encoders.base import TextEncoder
from xmr.errors import XmrError
from xmr.text.ids import encode_ids
from xmr.text.vocab import Vocabulary

_FLOAT_EXACT = 2 ** 24


class WordIdsEncoder(TextEncoder):
    """Texts -> float32 id rows of one vocabulary.

    Args:
        vocab: the training vocabulary (unknown words map to ``UNK_ID``).
        length: the fixed row length (the dual-path paper's 32).

    Shape:
        ``encode_batch``: n texts -> (n, length) float32 holding integer ids.
    """

    default_batch_size = 4096

    def __init__(self, vocab: Vocabulary, length: int = 32) -> None:
        if len(vocab) >= _FLOAT_EXACT:
            raise XmrError(f"a vocabulary of {len(vocab)} ids does not fit float32 id rows (max {_FLOAT_EXACT - 1})")
        self.vocab, self.dim = vocab, int(length)
        self.encoder_id = f"words-{vocab.digest()}-L{self.dim}"

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        return encode_ids([str(t) for t in inputs], self.vocab, self.dim).astype(np.float32)
