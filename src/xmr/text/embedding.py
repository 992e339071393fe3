"""What the word-level text models (text CNN, bi-GRU, LSTM) share: the trainable word table and
the output projection (:class:`WordSequenceModel`)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xmr.errors import XmrError
from xmr.text.vocab import PAD_ID


def trainable_word_table(embedding: np.ndarray | torch.Tensor) -> nn.Embedding:
    """An ``nn.Embedding`` initialised from ``embedding`` (V, word_dim), trainable, padding row ``PAD_ID``.

    This is the dual-path paper's 1x1 convolution over one-hot words, as a lookup.
    """
    weight = torch.as_tensor(np.asarray(embedding), dtype=torch.float32)
    return nn.Embedding.from_pretrained(weight, freeze=False, padding_idx=PAD_ID)


class WordSequenceModel(nn.Module):
    """What the word-level text models share: the word table, the pooling check and the output.

    A subclass sets ``POOLS`` (its poolings, default first), calls :meth:`_init_words` and
    :meth:`_init_output` in its constructor, and ends ``forward`` with :meth:`_output`. The
    attribute names (``embed``, ``fc``) are those of the checkpoints' state dicts.
    """

    #: the poolings the model offers; the first is its default (read by TextEncoderConfig)
    POOLS: ClassVar[tuple[str, ...]] = ()

    def _init_words(self, embedding: np.ndarray | torch.Tensor, pool: str) -> None:
        if pool not in self.POOLS:
            raise XmrError(f"{type(self).__name__} pool must be one of {', '.join(map(repr, self.POOLS))}, "
                           f"got {pool!r}")
        self.embed = trainable_word_table(embedding)
        self.pool = pool

    def _init_output(self, in_dim: int, out_dim: int, dropout: float, normalize: bool) -> None:
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_dim, out_dim)
        self.normalize = normalize

    def _output(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout, the fc, then L2 normalisation if asked. Shape: (B, in_dim) -> (B, out_dim)."""
        y = self.fc(self.dropout(x))
        return F.normalize(y, dim=-1) if self.normalize else y
