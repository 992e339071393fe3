"""Heads over region features: A3VSE's image branch G^v as a registered projection head.

Huang et al., "Annotation Efficient Cross-Modal Retrieval with Adversarial Attentive Alignment"
(A3VSE, ACM MM 2019), Sec. 3.2: each region feature goes through F^v's trainable FC layer, then
K-head context-aware attention pooling (Eq. 1, :class:`~xmr.layers.attention.ContextAttentionPool`)
merges the regions into one image vector. The "w/o attention" ablation averages the projected
regions instead. ``region-gpo`` pools them with VSE-infinity's learned Generalized Pooling
Operator instead (Chen et al., CVPR 2021, Sec. 3; :class:`~xmr.layers.gpo.GeneralizedPooling`).

The input is a region encoder's flattened row (:class:`xmr.encoders.regions.RegionEncoder`,
e.g. ``efficientnet-lite0-regions``: 3 x 3 cells x 1280 channels, region-major), so these heads
plug into :class:`~xmr.models.JointModel`, the trainer, the index and search unchanged; the
model passes ``regions`` (the encoder's ``n_regions``) because a flat row does not say it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xmr.errors import XmrError
from xmr.layers.attention import ContextAttentionPool
from xmr.layers.gpo import GeneralizedPooling
from xmr.models.heads import HEADS


@HEADS.register("region-mean")
class RegionMeanHead(nn.Module):
    """A3VSE's "w/o attention" image branch: (B, R * C) -> (B, R, C) -> per-region FC -> mean -> L2.

    :class:`RegionAttentionHead` replaces the mean by attention pooling (:meth:`pool`).

    Shape:
        (B, R * C) -> (B, out_dim)
    """

    needs_regions = True

    def __init__(self, in_dim: int, out_dim: int, *, regions: int, hidden_dim: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        if regions < 1 or in_dim % regions:
            raise XmrError(f"a region head needs the input ({in_dim}-d) to split into {regions} equal regions; "
                           "use a region image encoder such as efficientnet-lite0-regions")
        self.regions, self.region_dim = regions, in_dim // regions
        self.region_fc = nn.Linear(self.region_dim, out_dim)  # F^v's trainable FC, per region
        nn.init.xavier_uniform_(self.region_fc.weight)
        self.dropout = nn.Dropout(dropout)

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        """Merge the projected regions. Shape: (B, R, out_dim) -> (B, out_dim)."""
        return h.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.region_fc(self.dropout(x.view(x.shape[0], self.regions, self.region_dim)))  # (B, R, out)
        return F.normalize(self.pool(h), dim=-1)


@HEADS.register("region-attention")
class RegionAttentionHead(RegionMeanHead):
    """A3VSE's G^v: per-region FC, K-head context attention (Eq. 1, K = 3), projection, L2.

    Args:
        in_dim: R * C, the flattened region row.
        out_dim: H, the joint dimension (the K concatenated heads are projected back to it).
        regions: R.
        hidden_dim: K', the attention context dimension (0: H).
        dropout: on the region features.

    Shape:
        (B, R * C) -> (B, out_dim)
    """

    def __init__(self, in_dim: int, out_dim: int, *, regions: int, hidden_dim: int = 0, dropout: float = 0.0,
                 heads: int = 3) -> None:
        super().__init__(in_dim, out_dim, regions=regions, dropout=dropout)
        self.attention = ContextAttentionPool(out_dim, heads=heads, context_dim=hidden_dim or out_dim,
                                              out_dim=out_dim)

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        return self.attention(h)



@HEADS.register("region-gpo")
class RegionGPOHead(RegionMeanHead):
    """VSE-infinity's image side over grid features: per-region FC, GPO, L2.

    Chen et al., "Learning the Best Pooling Strategy for Visual Semantic Embedding" (CVPR 2021),
    Sec. 3: each region is projected to the joint space, then every dimension is sorted over the
    regions and summed with the weights theta_1..theta_R that a bi-GRU over the positions' sin/cos
    encoding gives (:class:`~xmr.layers.gpo.GeneralizedPooling`; mean, max and K-max pooling are
    special cases).

    Args:
        in_dim: R * C, the flattened region row.
        out_dim: H, the joint dimension.
        regions: R.
        hidden_dim: unused (the run's MLP width); GPO's own sizes are ``gpo_pe_dim`` / ``gpo_hidden``.
        dropout: on the region features.
        gpo_pe_dim, gpo_hidden, gpo_temperature: GPO's positional encoding size, bi-GRU hidden
            size and softmax temperature (the paper's 32, 32 and 0.1).

    Shape:
        (B, R * C) -> (B, out_dim)
    """

    def __init__(self, in_dim: int, out_dim: int, *, regions: int, hidden_dim: int = 0, dropout: float = 0.0,
                 gpo_pe_dim: int = 32, gpo_hidden: int = 32, gpo_temperature: float = 0.1) -> None:
        super().__init__(in_dim, out_dim, regions=regions, dropout=dropout)
        self.gpo = GeneralizedPooling(pe_dim=gpo_pe_dim, hidden_dim=gpo_hidden, temperature=gpo_temperature)

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        return self.gpo(h)
