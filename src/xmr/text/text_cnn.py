"""The deep text CNN of the dual-path image-text embedding.

Zheng, Zheng, Garrett, Yang, Xu, Shen: "Dual-Path Convolutional Image-Text Embeddings with
Instance Loss", ACM TOMM 2020, Sec. III-B, Figs. 2-3. A sentence is a one-hot matrix
``T`` (32 x d, Eq. 2); a 1 x 1 convolution over it is a lookup table initialised from word
vectors; residual blocks of 1 x 2 convolutions (neighbouring words form phrases) follow,
then global pooling and a fully connected layer.

Where we differ from the paper, and why:

* The lookup is an ``nn.Embedding`` with ``padding_idx=0``: identical to the 1 x 1 conv over
  one-hot columns (a zero column gives a zero vector), without materialising ``T``.
* A 1 x 1 convolution + BN + ReLU (the "stem") maps the word vectors (50-d GloVe, not 300-d
  word2vec) to the block width ``hidden``; the paper feeds the 300-d lookup output directly.
* The text gives the block only as "Fig. 3: the ResNet basic block with 1 x 2 filters and
  length padding, output F(x) + x". We use the ResNet-50 bottleneck it mirrors:
  1x1 (hidden -> hidden/4) BN ReLU, 1x2 (hidden/4) BN ReLU, 1x1 (hidden/4 -> hidden) BN,
  + x, ReLU. "Length padding" for an even kernel is one zero appended after the last
  position, so position ``t`` combines words ``t`` and ``t+1`` and the length is kept.
* ``blocks`` (default 2) blocks of constant width, no strided stages: the paper matches
  ResNet-50's 16 blocks but reports (Table III) that deeper text CNNs do not help, and our
  sentences are short.
* Global *max* pooling by default (``pool="avg"`` gives the paper's Fig. 2 average): the max
  does not depend on how many padding positions a sentence has. Pooling covers all positions.
* The paper's fc-BN-ReLU-fc and shared classifier belong to its instance loss; here one fc maps
  to ``out_dim`` (L2-normalised by default, like :mod:`xmr.models.heads`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xmr.errors import XmrError
from xmr.text.embedding import WordSequenceModel
from xmr.text.registry import TEXT_MODELS


class ResidualBlock1x2(nn.Module):
    """Bottleneck residual block over word positions with a 1 x 2 middle convolution.

    ``y = relu(x + bn3(conv3(relu(bn2(conv2(pad_right(relu(bn1(conv1(x))))))))))`` where
    conv1/conv3 are 1 x 1 and conv2 has kernel 2 over positions (Zheng et al. 2020, Fig. 3).

    Args:
        channels: input = output width.
        bottleneck: the width of the inner 1 x 2 convolution.

    Shape:
        (B, channels, L) -> (B, channels, L)
    """

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, bottleneck, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm1d(bottleneck)
        self.conv2 = nn.Conv1d(bottleneck, bottleneck, kernel_size=2, bias=False)
        self.bn2 = nn.BatchNorm1d(bottleneck)
        self.conv3 = nn.Conv1d(bottleneck, channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(F.pad(h, (0, 1)))))  # one zero after the end keeps the length
        return F.relu(x + self.bn3(self.conv3(h)))


@TEXT_MODELS.register("textcnn")
class TextCNN(WordSequenceModel):
    """Word ids -> sentence embedding with the dual-path paper's residual text CNN.

    Args:
        embedding: the initial word table (row 0, padding, should be zero); trainable.
        hidden: the width of the residual blocks.
        out_dim: the output size.
        blocks: how many residual blocks.
        pool: ``"max"`` or ``"avg"`` over positions.
        dropout: dropout before the fc (the paper uses 0.75).
        normalize: L2-normalise the output.

    Shape:
        embedding: (V, word_dim); input ids: (B, L) int64 with 0 = padding -> (B, out_dim)
    """

    POOLS = ("max", "avg")

    def __init__(
        self,
        embedding: np.ndarray | torch.Tensor,
        *,
        hidden: int = 256,
        out_dim: int = 256,
        blocks: int = 2,
        pool: str = "max",
        dropout: float = 0.0,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if hidden < 4 or blocks < 0:
            raise XmrError(f"TextCNN needs hidden >= 4 and blocks >= 0, got hidden={hidden}, blocks={blocks}")
        self._init_words(embedding, pool)
        self.stem = nn.Sequential(nn.Conv1d(self.embed.embedding_dim, hidden, kernel_size=1, bias=False),
                                  nn.BatchNorm1d(hidden), nn.ReLU())
        self.blocks = nn.Sequential(*(ResidualBlock1x2(hidden, max(1, hidden // 4)) for _ in range(blocks)))
        self._init_output(hidden, out_dim, dropout, normalize)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids).transpose(1, 2)  # (B, word_dim, L): channels first, like the paper's 1 x L x d
        x = self.blocks(self.stem(x))
        x = x.amax(dim=2) if self.pool == "max" else x.mean(dim=2)
        return self._output(x)
