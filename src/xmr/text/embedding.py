"""The trainable word table shared by the word-level text models (text CNN, bi-GRU)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from xmr.text.vocab import PAD_ID


def trainable_word_table(embedding: np.ndarray | torch.Tensor) -> nn.Embedding:
    """An ``nn.Embedding`` initialised from ``embedding`` (V, word_dim), trainable, padding row ``PAD_ID``.

    This is the dual-path paper's 1x1 convolution over one-hot words, as a lookup.
    """
    weight = torch.as_tensor(np.asarray(embedding), dtype=torch.float32)
    return nn.Embedding.from_pretrained(weight, freeze=False, padding_idx=PAD_ID)
