"""The Generalized Pooling Operator (GPO) of VSE-infinity: a learned pooling of a set of features.

Chen et al., "Learning the Best Pooling Strategy for Visual Semantic Embedding" (CVPR 2021),
Sec. 3. For a set of N feature vectors {phi_n} (N x d), GPO sorts every dimension over the set
in descending order and takes a weighted sum of the sorted values:

    f_i     = sum_{k=1..N} theta_k * max_k({phi_n,i}_{n=1..N})      (max_k: the k-th largest)
    theta_k = softmax_k( w^T GRU(PE(k, N)) / tau )                  tau = 0.1

The weights depend on the set size N alone, not on the features: a sin/cos positional encoding
of k (32-d) runs through a one-layer bidirectional GRU (hidden 32), its two directions are
averaged, a linear map (no bias) scores each position, and a softmax over the N positions with
temperature tau makes them sum to 1. One-hot weights at k = 1 give max pooling, uniform weights
mean pooling, weights uniform over the first K positions K-max pooling.

The paper's text is not in ``shared/papers``: this follows the formulas above (the paper's
Eqs. 2-4 as the task states them); three details the description leaves open follow the
authors' public code: the two GRU directions are averaged (not concatenated), the scoring
linear map has no bias, and in a batch of sets of different sizes the padded positions sort
last and get weight 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from xmr.errors import XmrError


def positional_encoding(length: int, dim: int) -> torch.Tensor:
    """The sinusoidal encoding of the positions 0..length-1 (Vaswani et al., 2017).

    ``pe[k, 2i] = sin(k / 10000^(2i/dim))``, ``pe[k, 2i+1] = cos(k / 10000^(2i/dim))``.

    Shape:
        -> (length, dim)
    """
    if dim < 2 or dim % 2:
        raise XmrError(f"a sin/cos positional encoding needs an even size >= 2, got {dim}")
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(position * rate)
    pe[:, 1::2] = torch.cos(position * rate)
    return pe


def _valid_mask(lengths: torch.Tensor | None, batch: int, n: int, device: torch.device) -> torch.Tensor:
    """(B, N) True where position k < the set's length (all True without ``lengths``)."""
    if lengths is None:
        return torch.ones(batch, n, dtype=torch.bool, device=device)
    lengths = lengths.to(device)
    if lengths.shape != (batch,) or bool((lengths < 1).any()) or bool((lengths > n).any()):
        raise XmrError(f"set lengths must be {batch} counts in 1..{n}, got {lengths.tolist()}")
    return torch.arange(n, device=device).unsqueeze(0) < lengths.unsqueeze(1)


def gpo_pool(features: torch.Tensor, weights: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """GPO's pooling for given weights: every dimension sorted over the set, then weighted.

    Args:
        features: B sets of N d-dim vectors; with ``lengths``, set b holds its first
            ``lengths[b]`` rows and the rest is padding. Shape: (B, N, d).
        weights: theta, one weight per sorted position, shared (N,) or per set (B, N); a
            set's padded positions are ignored (their sorted values are taken as 0).
        lengths: each set's size, or None (every set has N). Shape: (B,).

    Returns:
        ``sum_k theta_k * (k-th largest value of each dimension)``. Shape: (B, d).
    """
    if features.ndim != 3:
        raise XmrError(f"GPO pools sets (B, N, d), got {tuple(features.shape)}")
    b, n, _ = features.shape
    if weights.shape not in ((n,), (b, n)):
        raise XmrError(f"GPO needs {n} weights (or {b} x {n}), got {tuple(weights.shape)}")
    valid = _valid_mask(lengths, b, n, features.device).unsqueeze(-1)  # (B, N, 1)
    if lengths is not None:  # padding sorts last: below every real value
        features = features.masked_fill(~valid, float("-inf"))
    ranked = features.sort(dim=1, descending=True).values
    if lengths is not None:
        ranked = torch.where(valid, ranked, torch.zeros((), dtype=ranked.dtype, device=ranked.device))
    theta = weights.expand(b, n).unsqueeze(-1).to(ranked.dtype)  # (B, N, 1)
    return (ranked * theta).sum(dim=1)


class GeneralizedPooling(nn.Module):
    """GPO (VSE-infinity, Sec. 3): the weights theta of a set size from a bi-GRU, then :func:`gpo_pool`.

    Args:
        pe_dim: size of the positional encoding of k (the paper: 32).
        hidden_dim: the bi-GRU's hidden size per direction (the paper: 32).
        temperature: tau of the softmax over positions (the paper: 0.1).

    Shape:
        ``forward``: (B, N, d) [, lengths (B,)] -> (B, d); ``pool_weights(n)``: -> (n,).
    """

    def __init__(self, *, pe_dim: int = 32, hidden_dim: int = 32, temperature: float = 0.1) -> None:
        super().__init__()
        if not temperature > 0:
            raise XmrError(f"GPO's temperature must be > 0, got {temperature}")
        if hidden_dim < 1:
            raise XmrError(f"GPO's GRU needs a hidden size >= 1, got {hidden_dim}")
        positional_encoding(1, pe_dim)  # checks pe_dim
        self.pe_dim, self.temperature = int(pe_dim), float(temperature)
        self.gru = nn.GRU(self.pe_dim, hidden_dim, num_layers=1, batch_first=True, bidirectional=True)
        self.score = nn.Linear(hidden_dim, 1, bias=False)

    def pool_weights(self, n: int) -> torch.Tensor:
        """theta_1..theta_n for a set of n: positive, summing to 1. Shape: -> (n,)."""
        if n < 1:
            raise XmrError(f"GPO pools sets of at least one vector, got {n}")
        weight = self.score.weight
        pe = positional_encoding(n, self.pe_dim).to(device=weight.device, dtype=weight.dtype)
        out, _ = self.gru(pe.unsqueeze(0))  # (1, n, 2 * hidden)
        forward, backward = out[0].chunk(2, dim=-1)
        scores = self.score((forward + backward) / 2).squeeze(-1)  # (n,)
        return torch.softmax(scores.float() / self.temperature, dim=0)

    def set_weights(self, lengths: torch.Tensor, n: int) -> torch.Tensor:
        """Each set's theta, zero past its length: one GRU pass per distinct size. Shape: (B,) -> (B, n)."""
        weights = torch.zeros(len(lengths), n, device=self.score.weight.device)
        for size in torch.unique(lengths).tolist():
            rows = (lengths == size).nonzero().squeeze(1).to(weights.device)
            weights[rows, :size] = self.pool_weights(int(size))
        return weights

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if features.ndim != 3:
            raise XmrError(f"GPO pools sets (B, N, d), got {tuple(features.shape)}")
        n = features.shape[1]
        if lengths is None:
            return gpo_pool(features, self.pool_weights(n))
        _valid_mask(lengths, features.shape[0], n, features.device)  # checks the lengths first
        return gpo_pool(features, self.set_weights(lengths.cpu(), n), lengths)

    def extra_repr(self) -> str:
        return f"pe_dim={self.pe_dim}, temperature={self.temperature}"
