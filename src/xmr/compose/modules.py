"""Composition modules f_compose(psi_x, phi_t) -> psi_xt for composed (image + text) queries.

A composed query is a reference image x plus a modification text t ("make the dress red"); the
composed feature psi_xt must land near the target image's feature, so every composer maps into
the *image* representation space (output dim ``image_dim``) and is compared with target images.
Seed paper ("Learning a joint image-text embedding manifold"), Sec. 3.3 "Compositional Module",
and Sec. 4.4; run "in Joint", psi_x and phi_t are first passed through the joint-space heads g
(Eq. 2: psi_xt = f_compose(g(psi_x), g(phi_t))), so image_dim == text_dim == the joint dim.

Registered (``create_composer(name, image_dim, text_dim, **kw)``):

* ``tirg``: Vo et al., "Composing Text and Image for Image Retrieval - An Empirical Odyssey",
  CVPR 2019: a gated image feature plus a residual, both learned from [psi_x, phi_t].
* ``relation``: Santoro et al., "A simple neural network module for relational reasoning",
  NeurIPS 2017, TIRG's "Relationship" baseline: an MLP over every pair of local image features
  plus the text, summed, then another MLP. Takes local features (B, R, C), not a pooled vector.
* ``concat``: an MLP of [psi_x, phi_t] (TIRG's "Concat" baseline).
* ``add``: psi_x + W phi_t, with W the identity when both already live in one (joint) space.

Every composer has a class attribute ``needs_regions``: True when ``forward`` takes the local
features (B, R, region_dim) of the image instead of its pooled vector (B, image_dim).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xmr.errors import XmrError
from xmr.registry import Registry

COMPOSERS: Registry[type[nn.Module]] = Registry("composer")


class _VectorComposer(nn.Module):
    """A composer of pooled vectors with a hidden width (TIRG, concat): checks and keeps the sizes."""

    needs_regions = False

    def __init__(self, image_dim: int, text_dim: int, hidden: int | None) -> None:
        super().__init__()
        self.hidden = image_dim + text_dim if hidden is None else hidden
        _check_dims(image_dim=image_dim, text_dim=text_dim, hidden=self.hidden)
        self.image_dim, self.text_dim = image_dim, text_dim

    def extra_repr(self) -> str:
        return f"image_dim={self.image_dim}, text_dim={self.text_dim}, hidden={self.hidden}"


def _check_dims(**dims: int) -> None:
    for name, value in dims.items():
        if not isinstance(value, int) or value < 1:
            raise XmrError(f"{name} must be an int >= 1, got {value!r}")


def _check_vectors(image: torch.Tensor, text: torch.Tensor, image_dim: int, text_dim: int) -> None:
    """image (B, image_dim) and text (B, text_dim) with one B, else a one-line XmrError."""
    if (image.ndim != 2 or text.ndim != 2 or image.shape[1] != image_dim or text.shape[1] != text_dim
            or image.shape[0] != text.shape[0]):
        raise XmrError(f"composer expects image (B, {image_dim}) and text (B, {text_dim}); "
                       f"got image {tuple(image.shape)} and text {tuple(text.shape)}")


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Linear(in_dim, hidden) -> ReLU -> Linear(hidden, out_dim)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


@COMPOSERS.register("tirg")
class TIRGComposer(_VectorComposer):
    """Text Image Residual Gating (Vo et al., CVPR 2019, Eq. 1-3; seed paper Sec. 3.3).

    With x = [psi_x, phi_t] (concatenation, image_dim + text_dim):

        gate = sigmoid(MLP_g(x))                    (B, image_dim), a "filter" on the image
        res  = MLP_r(x)                             (B, image_dim), the modification
        out  = w_g * gate * psi_x + w_r * res       (element-wise products)

    where each MLP is ``Linear(image_dim + text_dim, hidden) -> ReLU -> Linear(hidden, image_dim)``
    (``self.gate_mlp``, ``self.res_mlp``) and w_g, w_r are learnable scalars initialised to 1.0 and
    10.0 as in the authors' code (``self.a = [1.0, 10.0, ...]``).

    Differs from the authors' vector TIRG, which uses BatchNorm1d -> ReLU -> Linear for the gate
    and BatchNorm1d -> ReLU -> Linear -> ReLU -> Linear for the residual: no BatchNorm here (so
    the output does not depend on the rest of the batch or on train/eval mode, and B = 1 works),
    and both branches share the Linear -> ReLU -> Linear shape. The seed paper describes the
    spatial TIRG (two 3x3 convolutions on a feature map); this is the pooled-vector form.

    Args:
        image_dim: dimension of psi_x, and of the output.
        text_dim: dimension of phi_t.
        hidden: hidden width of both MLPs (default image_dim + text_dim, as in the authors' code).

    Shape:
        ``forward(image, text)``: image (B, image_dim), text (B, text_dim) -> (B, image_dim).

    Example::

        >>> m = TIRGComposer(8, 6)
        >>> tuple(m(torch.randn(3, 8), torch.randn(3, 6)).shape)
        (3, 8)
    """

    def __init__(self, image_dim: int, text_dim: int, *, hidden: int | None = None) -> None:
        super().__init__(image_dim, text_dim, hidden)
        self.gate_mlp = _mlp(image_dim + text_dim, self.hidden, image_dim)
        self.res_mlp = _mlp(image_dim + text_dim, self.hidden, image_dim)
        self.w_g = nn.Parameter(torch.tensor(1.0))
        self.w_r = nn.Parameter(torch.tensor(10.0))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        _check_vectors(image, text, self.image_dim, self.text_dim)
        x = torch.cat([image, text], dim=1)
        gate = torch.sigmoid(self.gate_mlp(x))
        return self.w_g * gate * image + self.w_r * self.res_mlp(x)


@COMPOSERS.register("relation")
class RelationComposer(nn.Module):
    """Relation-network composition (Santoro et al. 2017; TIRG's "Relationship"; seed paper Sec. 3.3).

    For the R local features r_1 .. r_R of an image (e.g. the cells of the CNN's spatial map) and
    the text feature t:

        out = f_phi( sum_{i=1..R} sum_{j=1..R} g_theta([r_i, r_j, t]) )

    over all R * R ordered pairs, *including* i == j, as in Santoro et al.'s code (every object is
    paired with every object). g_theta is ``Linear(2 * region_dim + text_dim, hidden) -> ReLU ->
    Linear(hidden, hidden) -> ReLU`` (``self.g1``, ``self.g2``) and f_phi is ``Linear(hidden, hidden)
    -> ReLU -> Linear(hidden, image_dim)`` (``self.f``). Santoro et al. use a 4-layer g_theta and
    tag each object with its (x, y) coordinates; neither is done here (append coordinates to the
    regions if they should be position-aware).

    The first layer of g_theta is applied as W_a r_i + W_b r_j + (W_c t + b), the column blocks of
    ``self.g1.weight``, so no (B, R, R, 2C + D_t) tensor is built; the result is the same.

    Args:
        image_dim: dimension of the output (the image representation the targets live in).
        text_dim: dimension of t.
        region_dim: C, dimension of each local feature.
        hidden: width of g_theta and f_phi (Santoro et al.: 256).

    Shape:
        ``forward(image, text)``: image = local features (B, R, region_dim), text (B, text_dim)
        -> (B, image_dim).

    Example::

        >>> m = RelationComposer(8, 6, region_dim=5, hidden=16)
        >>> tuple(m(torch.randn(3, 4, 5), torch.randn(3, 6)).shape)
        (3, 8)
    """

    needs_regions = True

    def __init__(self, image_dim: int, text_dim: int, *, region_dim: int, hidden: int = 256) -> None:
        super().__init__()
        _check_dims(image_dim=image_dim, text_dim=text_dim, region_dim=region_dim, hidden=hidden)
        self.image_dim, self.text_dim, self.region_dim, self.hidden = image_dim, text_dim, region_dim, hidden
        self.g1 = nn.Linear(2 * region_dim + text_dim, hidden)
        self.g2 = nn.Linear(hidden, hidden)
        self.f = _mlp(hidden, hidden, image_dim)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if (image.ndim != 3 or text.ndim != 2 or image.shape[1] < 1 or image.shape[2] != self.region_dim
                or text.shape[1] != self.text_dim or image.shape[0] != text.shape[0]):
            raise XmrError(f"relation composer expects local features (B, R, {self.region_dim}) and text "
                           f"(B, {self.text_dim}); got {tuple(image.shape)} and {tuple(text.shape)}")
        c = self.region_dim
        w = self.g1.weight  # (hidden, 2C + D_t): column blocks act on r_i, r_j and t
        first = F.linear(image, w[:, :c])  # (B, R, hidden)
        second = F.linear(image, w[:, c:2 * c])  # (B, R, hidden)
        txt = F.linear(text, w[:, 2 * c:], self.g1.bias)  # (B, hidden)
        h = F.relu(first[:, :, None] + second[:, None, :] + txt[:, None, None])  # (B, R, R, hidden)
        pairs = F.relu(self.g2(h))
        return self.f(pairs.sum(dim=(1, 2)))

    def extra_repr(self) -> str:
        return (f"image_dim={self.image_dim}, text_dim={self.text_dim}, region_dim={self.region_dim}, "
                f"hidden={self.hidden}")


@COMPOSERS.register("concat")
class ConcatComposer(_VectorComposer):
    """out = MLP([psi_x, phi_t]), MLP = Linear(image_dim + text_dim, hidden) -> ReLU -> Linear(hidden, image_dim).

    TIRG's "Concat" baseline (Vo et al. 2019, Sec. 4); ``self.mlp``.

    Args:
        image_dim: dimension of psi_x, and of the output.
        text_dim: dimension of phi_t.
        hidden: hidden width (default image_dim + text_dim).

    Shape:
        ``forward(image, text)``: image (B, image_dim), text (B, text_dim) -> (B, image_dim).
    """

    def __init__(self, image_dim: int, text_dim: int, *, hidden: int | None = None) -> None:
        super().__init__(image_dim, text_dim, hidden)
        self.mlp = _mlp(image_dim + text_dim, self.hidden, image_dim)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        _check_vectors(image, text, self.image_dim, self.text_dim)
        return self.mlp(torch.cat([image, text], dim=1))


@COMPOSERS.register("add")
class AddComposer(nn.Module):
    """out = psi_x + W phi_t: move the image feature along a direction given by the text.

    W is ``nn.Linear(text_dim, image_dim, bias=False)`` (``self.proj``) when the dims differ, and
    the identity with no parameters (``self.proj is None``) when they are equal, the "in Joint"
    case (seed paper Eq. 2) where g(psi_x) and g(phi_t) already share the joint space.

    Shape:
        ``forward(image, text)``: image (B, image_dim), text (B, text_dim) -> (B, image_dim).
    """

    needs_regions = False

    def __init__(self, image_dim: int, text_dim: int) -> None:
        super().__init__()
        _check_dims(image_dim=image_dim, text_dim=text_dim)
        self.image_dim, self.text_dim = image_dim, text_dim
        self.proj = nn.Linear(text_dim, image_dim, bias=False) if text_dim != image_dim else None

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        _check_vectors(image, text, self.image_dim, self.text_dim)
        return image + (self.proj(text) if self.proj is not None else text)

    def extra_repr(self) -> str:
        return f"image_dim={self.image_dim}, text_dim={self.text_dim}, identity={self.proj is None}"


def create_composer(name: str, image_dim: int, text_dim: int, **kwargs: int) -> nn.Module:
    """The composer registered as ``name`` mapping (image, text) -> (B, image_dim).

    Extra keyword arguments go to its constructor, e.g. ``region_dim=`` for ``relation``.
    """
    return COMPOSERS.get(name)(image_dim, text_dim, **kwargs)
