"""Projection heads: encoder features -> the d-dim L2-normalised joint space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xmr.errors import XmrError
from xmr.registry import Registry

HEADS: Registry[type[nn.Module]] = Registry("head")


@HEADS.register("linear")
class LinearHead(nn.Module):
    """y = normalize(W x + b). Shape: (B, in_dim) -> (B, out_dim)."""

    def __init__(self, in_dim: int, out_dim: int, *, hidden_dim: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.dropout(x)), dim=-1)


@HEADS.register("mlp")
class MLPHead(nn.Module):
    """Two layers with a residual linear path: normalize(W2 gelu(LN(W1 x)) + W0 x).

    The linear shortcut lets the head start as a good linear projection and learn the
    non-linear correction on top. Shape: (B, in_dim) -> (B, out_dim).
    """

    def __init__(self, in_dim: int, out_dim: int, *, hidden_dim: int = 1024, dropout: float = 0.1) -> None:
        super().__init__()
        self.shortcut = nn.Linear(in_dim, out_dim)
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        h = self.fc2(self.dropout(F.gelu(self.norm(self.fc1(x)))))
        return F.normalize(self.shortcut(x) + h, dim=-1)


@HEADS.register("identity")
class IdentityHead(nn.Module):
    """y = normalize(x): the encoder's own space, no parameters. Shape: (B, d) -> (B, d).

    For an encoder pair that already shares a space (``hf-clip:PATH`` on both sides): with
    ``embed_dim`` = the encoders' feature size the run serves that space as it is (zero-shot;
    training then moves only the temperature, which does not change any ranking). ``in_dim``
    must equal ``out_dim``; ``hidden_dim`` and ``dropout`` are ignored.
    """

    def __init__(self, in_dim: int, out_dim: int, *, hidden_dim: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        if int(in_dim) != int(out_dim):
            raise XmrError(f"the identity head keeps the encoder's {in_dim}-d features and cannot make them "
                           f"{out_dim}-d; set embed_dim to {in_dim} (or use the linear or mlp head)")
        self.dim = int(in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def create_head(name: str, in_dim: int, out_dim: int, **kwargs: float | int) -> nn.Module:
    """The head registered as ``name`` mapping in_dim -> out_dim."""
    return HEADS.get(name)(in_dim, out_dim, **kwargs)
