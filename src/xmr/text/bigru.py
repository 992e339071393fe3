"""A bi-directional GRU sentence encoder over word vectors.

Gu, Cai, Joty, Niu, Wang: "Look, Imagine and Match", CVPR 2018, Sec. 3.2 and Table 1
(``GRU_Bi``: a bi-directional GRU beats a one-way GRU as the sentence encoder); word
embeddings initialised from pretrained vectors as in Chen et al., "Annotation Efficient
Cross-Modal Retrieval with Adversarial Attentive Alignment", MM 2019, Sec. 5 (GloVe).

Pooling: ``"mean"`` (default) averages the concatenated forward/backward outputs over the real
tokens; ``"last"`` concatenates the final forward state with the final backward state (the
VSE-style sentence vector). Both ignore padding exactly: the real tokens of each row are
first moved to the front in their order (so position-shifted rows work too) and the GRU runs
on a packed sequence, so adding padding anywhere does not change the output.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from xmr.layers.attention import ContextAttentionPool
from xmr.text.embedding import WordSequenceModel
from xmr.text.registry import TEXT_MODELS
from xmr.text.vocab import PAD_ID


def compact_left(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's non-padding ids to the front, keeping their order.

    Returns:
        ``(ids, lengths)``: the left-aligned ids and the number of real tokens per row.

    Shape:
        (B, L) -> (B, L), (B,)
    """
    is_pad = (ids == PAD_ID).to(torch.int8)
    order = torch.argsort(is_pad, dim=1, stable=True)
    return ids.gather(1, order), (1 - is_pad).sum(dim=1)


@TEXT_MODELS.register("bigru")
class BiGRUTextEncoder(WordSequenceModel):
    """Word ids -> sentence embedding: embedding, 1-layer bi-GRU, pooling, fc.

    Args:
        embedding: the initial word table (row 0, padding, should be zero); trainable.
        hidden: the GRU state size per direction.
        out_dim: the output size.
        pool: ``"mean"`` over real tokens, ``"last"`` states (see the module docstring), or
            ``"attention"``: A3VSE's K-head context-aware attention over the token outputs
            (Eq. 1 on the text side, E^t; :class:`xmr.layers.attention.ContextAttentionPool`,
            K = 3, padding masked out, the K heads projected back to 2 * hidden).
        dropout: dropout before the fc.
        normalize: L2-normalise the output.

    Shape:
        embedding: (V, word_dim); input ids: (B, L) int64 with 0 = padding -> (B, out_dim)
    """

    POOLS = ("mean", "last", "attention")

    def __init__(
        self,
        embedding: np.ndarray | torch.Tensor,
        *,
        hidden: int = 256,
        out_dim: int = 256,
        pool: str = "mean",
        dropout: float = 0.0,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self._init_words(embedding, pool)
        self.gru = nn.GRU(self.embed.embedding_dim, hidden, num_layers=1, batch_first=True, bidirectional=True)
        self.attention = ContextAttentionPool(2 * hidden, heads=3, out_dim=2 * hidden) if pool == "attention" else None
        self._init_output(2 * hidden, out_dim, dropout, normalize)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids, lengths = compact_left(ids)
        lengths = lengths.clamp(min=1)  # an all-padding row runs on one zero vector
        packed = pack_padded_sequence(self.embed(ids), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, h_n = self.gru(packed)
        if self.pool == "last":
            x = torch.cat([h_n[0], h_n[1]], dim=-1)  # (B, 2h): forward's last step, backward's first
        else:
            padded, _ = pad_packed_sequence(out, batch_first=True)  # zeros past each length
            if self.attention is not None:
                mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]  # real tokens only
                x = self.attention(padded, mask)
            else:
                x = padded.sum(dim=1) / lengths.to(padded.dtype).unsqueeze(1)
        return self._output(x)
