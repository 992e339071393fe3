"""A one-directional LSTM sentence encoder over word vectors: TIRG's query-text encoder.

Vo et al., "Composing Text and Image for Image Retrieval" (TIRG, CVPR 2019) encode the
modification text with a standard LSTM (hidden size 512) trained from scratch; the joint-manifold
seed (Sec. 4.4) keeps that encoder "to allow for a fair comparison". The sentence vector is the
last hidden state (``pool="last"``, TIRG's choice) or the mean of the outputs over the real tokens.
Padding is ignored exactly (rows are compacted and packed, as in :mod:`xmr.text.bigru`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from xmr.text.bigru import compact_left
from xmr.text.embedding import WordSequenceModel
from xmr.text.registry import TEXT_MODELS


@TEXT_MODELS.register("lstm")
class LSTMTextEncoder(WordSequenceModel):
    """Word ids -> sentence vector: embedding, 1-layer LSTM, last state or mean, fc.

    Args:
        embedding: the initial word table (row 0 = padding); trainable.
        hidden: LSTM state size (TIRG: 512).
        out_dim: output size.
        pool: ``"last"`` hidden state or ``"mean"`` over real tokens.
        dropout: dropout before the fc.
        normalize: L2-normalise the output.

    Shape:
        ids (B, L) int64, 0 = padding -> (B, out_dim)
    """

    POOLS = ("last", "mean")

    def __init__(self, embedding: np.ndarray | torch.Tensor, *, hidden: int = 512, out_dim: int = 512,
                 pool: str = "last", dropout: float = 0.0, normalize: bool = True) -> None:
        super().__init__()
        self._init_words(embedding, pool)
        self.lstm = nn.LSTM(self.embed.embedding_dim, hidden, num_layers=1, batch_first=True)
        self._init_output(hidden, out_dim, dropout, normalize)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids, lengths = compact_left(ids)
        lengths = lengths.clamp(min=1)  # an all-padding row runs on one zero vector
        packed = pack_padded_sequence(self.embed(ids), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.lstm(packed)
        if self.pool == "last":
            x = h_n[-1]
        else:
            padded, _ = pad_packed_sequence(out, batch_first=True)
            x = padded.sum(dim=1) / lengths.to(padded.dtype).unsqueeze(1)
        return self._output(x)
