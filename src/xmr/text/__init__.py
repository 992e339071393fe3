"""Trainable word-level text encoders: tokenizer, vocabulary, GloVe init, text CNN, bi-GRU.

Unlike :mod:`xmr.encoders` (frozen networks whose features are cached), these models are
trained end to end from token ids (:func:`encode_ids`).
"""

from __future__ import annotations

from xmr.text.bigru import BiGRUTextEncoder
from xmr.text.factory import TextEncoderConfig, create_text_model
from xmr.text.ids import encode_ids, shift_positions
from xmr.text.lstm import LSTMTextEncoder
from xmr.text.registry import TEXT_MODELS
from xmr.text.text_cnn import ResidualBlock1x2, TextCNN
from xmr.text.vocab import PAD_ID, UNK_ID, VocabConfig, Vocabulary, tokenize
from xmr.text.word_vectors import Coverage, embedding_matrix, load_glove, vector_coverage

__all__ = ["BiGRUTextEncoder", "LSTMTextEncoder", "TextEncoderConfig", "create_text_model", "encode_ids",
           "shift_positions", "TEXT_MODELS",
           "ResidualBlock1x2", "TextCNN", "PAD_ID", "UNK_ID", "VocabConfig", "Vocabulary", "tokenize",
           "Coverage", "embedding_matrix", "load_glove", "vector_coverage"]
