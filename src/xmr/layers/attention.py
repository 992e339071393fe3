"""K-head context-aware attention pooling of a set of local features (A3VSE Eq. 1).

Huang et al., "Annotation Efficient Cross-Modal Retrieval with Adversarial Attentive Alignment"
(A3VSE, ACM MM 2019), Sec. 3.3, Eq. 1. For the local features V = [v_1 .. v_N] of one image
(regions) or sentence (tokens), head k pools them with softmax weights over the N positions,
and the instance feature concatenates the K pooled vectors:

    c_k       = 1/N sum_i' tanh(Q_k v_i')                  context vector of head k (K')
    a_ik      = tanh( (P_k v_i)^T c_k )                     score of entity i, in [-1, 1]
    alpha_ik  = exp(lam a_ik) / sum_i' exp(lam a_i'k)       softmax over the N entities
    E(V)      = [alpha_0 V^T, alpha_1 V^T, .., alpha_{K-1} V^T]    (K * H)

with P_k, Q_k in R^{K' x H}; the paper sets K = 3 and K' = H ("the same dimension is shared by
all the context vectors"), and lam (lambda_v) is "a constant temperature" whose value it does not
give.

How this reading follows from the printed Eq. 1, which is typeset inconsistently:

* ``W_k in R^{1 x M^v}`` has one entry per entity (M^v is the number of entities, the same M^v as
  in the 1/M^v of the context mean), so ``W_k V^T`` is a weighted sum of the entities: W_k *is*
  the attention row [alpha_1k .. alpha_Nk], computed, not a free parameter.
* The printed ``alpha_ik = exp(lam alpha_ik) / ...`` reuses one symbol for the score and the
  weight; the score is written a_ik here.
* The printed score ``tanh(P_k 1/M sum_i' v_i'^T tanh(Q_k v_i'))`` never mentions entity i, so it
  cannot rank the entities; the reading above scores entity i by its P_k-projection against the
  head's Q_k context (a context-aware attention in the spirit of the DAN/OIIAN works A3VSE cites),
  keeping every printed operator: the outer tanh (which bounds the score, hence the
  temperature), P_k, the 1/M mean over i', and tanh(Q_k v_i').

Not in the paper: an optional linear projection K*H -> ``out_dim`` after the concatenation, and
``merge="mean"`` (average the heads instead of concatenating). Both off by default.
"""

from __future__ import annotations

import torch
from torch import nn

from xmr.errors import XmrError

_MERGES = ("concat", "mean")


class ContextAttentionPool(nn.Module):
    """K-head context-aware attention pooling (A3VSE Eq. 1), see the module docstring.

    Args:
        dim: H, the dimension of the local features.
        heads: K, the number of attention heads (A3VSE: 3).
        context_dim: K', the dimension of the context vectors (default and A3VSE: H).
        scale: lambda, the softmax "temperature" multiplying the scores (the paper gives none).
        merge: "concat" (the paper: output K * H) or "mean" (output H).
        out_dim: if set, a linear projection of the merged vector to this size.

    Shape:
        ``forward(x, mask)``: x (B, N, H), mask (B, N) bool with True = a real entity
        -> (B, out_dim or K * H or H). ``attention_weights(x, mask)`` -> (B, K, N).

    Example::

        >>> pool = ContextAttentionPool(8, heads=3)
        >>> tuple(pool(torch.randn(2, 5, 8)).shape)
        (2, 24)
    """

    def __init__(self, dim: int, *, heads: int = 3, context_dim: int | None = None, scale: float = 1.0,
                 merge: str = "concat", out_dim: int | None = None) -> None:
        super().__init__()
        context_dim = dim if context_dim is None else context_dim
        for name, value in (("dim", dim), ("heads", heads), ("context_dim", context_dim)):
            if value < 1:
                raise XmrError(f"{name} must be >= 1, got {value}")
        if not scale > 0:
            raise XmrError(f"scale must be > 0, got {scale}")
        if merge not in _MERGES:
            raise XmrError(f"merge must be 'concat' or 'mean', got {merge!r}")
        if out_dim is not None and out_dim < 1:
            raise XmrError(f"out_dim must be >= 1, got {out_dim}")
        self.dim, self.heads, self.context_dim, self.scale, self.merge = dim, heads, context_dim, float(scale), merge
        # P_k and Q_k of all heads stacked: row block k is head k's K' x H matrix
        self.p = nn.Linear(dim, heads * context_dim, bias=False)
        self.q = nn.Linear(dim, heads * context_dim, bias=False)
        nn.init.xavier_uniform_(self.p.weight)  # A3VSE: Xavier initialisation throughout
        nn.init.xavier_uniform_(self.q.weight)
        merged = heads * dim if merge == "concat" else dim
        self.proj = nn.Linear(merged, out_dim) if out_dim is not None else None
        self.out_dim = out_dim if out_dim is not None else merged

    def _check(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if x.ndim != 3 or x.shape[2] != self.dim:
            raise XmrError(f"local features must be (B, N, {self.dim}), got {tuple(x.shape)}")
        if mask is None:
            return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if mask.shape != x.shape[:2]:
            raise XmrError(f"mask must have shape {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
        return mask.bool()

    def attention_weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """alpha_ik of every head: softmax over the valid entities, 0 at masked ones.

        A sample with no valid entity gets all-zero weights (and so a zero pooled vector).
        Shape: x (B, N, H), mask (B, N) -> (B, K, N).
        """
        valid = self._check(x, mask)
        b, n, _ = x.shape
        counts = valid.sum(dim=1).clamp(min=1).to(x.dtype)  # (B,)
        ctx = torch.tanh(self.q(x)).view(b, n, self.heads, self.context_dim)  # tanh(Q_k v_i')
        ctx = (ctx * valid[:, :, None, None]).sum(dim=1) / counts[:, None, None]  # c_k: (B, K, K')
        proj = self.p(x).view(b, n, self.heads, self.context_dim)  # P_k v_i
        scores = torch.tanh(torch.einsum("bnkc,bkc->bkn", proj, ctx))  # a_ik: (B, K, N)
        # a sample with no valid entity would softmax over all -inf (NaN): let it see every
        # position, then zero its weights with the mask below
        keep = valid | ~valid.any(dim=1, keepdim=True)
        logits = (self.scale * scores).masked_fill(~keep[:, None, :], float("-inf"))
        return torch.softmax(logits, dim=2) * valid[:, None, :]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        weights = self.attention_weights(x, mask)  # (B, K, N)
        pooled = torch.einsum("bkn,bnh->bkh", weights, x)  # head k: alpha_k V^T
        merged = pooled.flatten(1) if self.merge == "concat" else pooled.mean(dim=1)
        return self.proj(merged) if self.proj is not None else merged

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, heads={self.heads}, context_dim={self.context_dim}, scale={self.scale:g}, "
                f"merge={self.merge!r}, out_dim={self.out_dim}")
