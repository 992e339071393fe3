"""The full-network embedding of EfficientNet-Lite0: pooled activations of several blocks, concatenated.

Vilalta et al., "Full-Network Embedding in a Multimodal Embedding Pipeline" (2017) and Garcia-Gasulla
et al., "An Out-of-the-box Full-network Embedding for Convolutional Neural Networks" (2018): the
global-average-pooled output of several layers of a frozen CNN, concatenated, standardised feature-wise
and discretised to {-1, 0, 1} (x < -0.25 -> -1, x > 0.15 -> 1), instead of the last layer alone.

Here the taps are the outputs of some of EfficientNet-Lite0's 16 MBConv blocks (``b<i>``, 0..15; the
ends of its stages are 2, 4, 7, 10, 14 and 15) and the head (``head``: the 1x1 conv, BatchNorm and
ReLU6 over block 15, the 1280-d map :class:`~xmr.encoders.efficientnet.EfficientNetLite0` pools).
Each tap's map is averaged over its cells, (B, C, h, w) -> (B, C), then *scaled within itself*:

- ``none``: the raw pooled values (the default). The taps' pooled vectors are of like norm already
  (median L2 norms over the openclipart and emoji images: b7 41, b10 33, b14 50, b15 31, head 16),
  so no tap dominates the concatenation by its scale;
- ``block-l2``: each tap's pooled vector divided by its L2 norm;
- ``block-std``: each tap's vector minus its mean over its C values, divided by their standard deviation.

The defaults (blocks 7, 10, 14, 15 — the ends of the 4th to 7th stages — and the head, unscaled:
1,984-d) have the best validation rsum of nine settings on openclipart, one seed each; every setting
with two or more blocks below the head was within a few rsum of it, the scalings included
(``benchmarks/results/encoders/efficientnet-lite0-fne.md``).

The paper's feature-wise standardisation needs each dimension's statistics over a dataset; a cached
feature must be a function of its own image (the cache keeps one row per image), so the scaling here is
per image and per tap. ``:ternary`` adds the paper's discretisation on top of ``block-std`` (the
thresholds then apply to within-tap z-scores, not the paper's dataset-wide ones).

Named ``efficientnet-lite0-fne`` (the defaults, :data:`DEFAULT_FNE`) or ``efficientnet-lite0-fne:TAPS[:SCALE
[:ternary]]`` (``efficientnet-lite0-fne:b7,b10,b14,b15,head:block-l2``); the encoder id spells the taps and the
scaling, so caches of two settings never mix. ``dim`` = the sum of the taps' widths.

Fine-tuning the last N (1..16) blocks, or ``"all"`` (the capability of :mod:`xmr.encoders.finetune`,
``xmr train ... --finetune-image-blocks N``): :class:`FneTrunk` caches, per image and in float16, Lite0's
boundary activation after block ``16 - N`` (its :class:`~xmr.encoders.trunk.TrunkEncoder` row) followed by
the pooled vectors of the taps below the cut; :class:`FneTail` wraps Lite0's own
:class:`~xmr.encoders.trunk.ImageTail` (the last N blocks + head conv), pools the taps inside it and
scales and concatenates every tap as the frozen encoder does, in the same order. Untrained, ``tail(trunk
rows)`` is the frozen embedding (to the float16 rounding). Needs the head tap and no ``ternary`` (its
gradient is zero).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from xmr.encoders.base import ENCODERS, EncoderFamily, ImageEncoder, register_encoder_family
from xmr.encoders.efficientnet import EfficientNetLite0, to_model_input
from xmr.encoders.finetune import ALL, TailDepth
from xmr.encoders.image_io import ImageSource
from xmr.encoders.trunk import TRUNK_DTYPE, ImageTail, check_tail
from xmr.errors import XmrError
from xmr.modality import Modality
from xmr.runtime.device import to_numpy

#: output channels of EfficientNet-Lite0's 16 MBConv blocks (stages of 1, 2, 2, 3, 3, 4, 1 blocks)
BLOCK_WIDTHS = (16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320)
HEAD = "head"
HEAD_WIDTH = 1280
SCALES = ("block-l2", "block-std", "none")
TERNARY = "ternary"
#: the paper's discretisation thresholds on standardised values: below -> -1, above -> 1, between -> 0
TERNARY_LOW, TERNARY_HIGH = -0.25, 0.15
_EPS = 1e-6
FAMILY = "efficientnet-lite0-fne"


@dataclass(frozen=True)
class FneConfig:
    """Which activations a full-network embedding pools and how it scales them.

    Attributes:
        blocks: MBConv block indices (0..15, increasing) whose outputs are pooled.
        head: also pool the head's 1280-d map (EfficientNet-Lite0's own features).
        scale: per-tap scaling, one of :data:`SCALES`.
        ternary: discretise to {-1, 0, 1} after scaling (needs ``scale="block-std"``).
    """

    blocks: tuple[int, ...] = (7, 10, 14, 15)
    head: bool = True
    scale: str = "none"
    ternary: bool = False

    def __post_init__(self) -> None:
        n = len(BLOCK_WIDTHS)
        if any(not isinstance(b, int) or isinstance(b, bool) or not 0 <= b < n for b in self.blocks):
            raise XmrError(f"full-network embedding blocks must be integers 0..{n - 1}, got {list(self.blocks)}")
        if list(self.blocks) != sorted(set(self.blocks)):
            raise XmrError(f"full-network embedding blocks must be increasing, got {list(self.blocks)}")
        if not self.blocks and not self.head:
            raise XmrError("a full-network embedding needs at least one tap (a block or the head)")
        if self.scale not in SCALES:
            raise XmrError(f"full-network embedding scale {self.scale!r} is not one of: {', '.join(SCALES)}")
        if self.ternary and self.scale != "block-std":
            raise XmrError("the ternary discretisation needs scale 'block-std' (it thresholds z-scores)")

    @property
    def widths(self) -> tuple[int, ...]:
        """Each tap's channels, in the order they are concatenated (the blocks, then the head)."""
        return tuple(BLOCK_WIDTHS[b] for b in self.blocks) + ((HEAD_WIDTH,) if self.head else ())

    @property
    def dim(self) -> int:
        return sum(self.widths)

    @property
    def spec(self) -> str:
        """The family argument naming this config: ``TAPS:SCALE[:ternary]`` (``b10,b14,b15,head:block-l2``)."""
        taps = ",".join([f"b{b}" for b in self.blocks] + ([HEAD] if self.head else []))
        return f"{taps}:{self.scale}" + (f":{TERNARY}" if self.ternary else "")

    @classmethod
    def parse(cls, spec: str) -> FneConfig:
        """The config a family argument names: ``TAPS[:SCALE[:ternary]]``, TAPS comma-separated ``b<i>`` / ``head``."""
        parts = spec.strip().split(":")
        if len(parts) > 3 or (len(parts) == 3 and parts[2] != TERNARY):
            raise XmrError(f"full-network embedding {spec!r}: expected TAPS[:SCALE[:{TERNARY}]], "
                           f"e.g. {DEFAULT_FNE.spec!r}")
        blocks, head = [], False
        for tap in (t.strip() for t in parts[0].split(",")):
            if tap == HEAD:
                head = True
            elif tap.startswith("b") and tap[1:].isdigit():
                blocks.append(int(tap[1:]))
            else:
                raise XmrError(f"full-network embedding tap {tap!r} is neither b<block> (b0..b{len(BLOCK_WIDTHS) - 1})"
                               f" nor {HEAD!r}")
        scale = parts[1] if len(parts) > 1 else cls.scale
        return cls(blocks=tuple(blocks), head=head, scale=scale, ternary=len(parts) == 3)


DEFAULT_FNE = FneConfig()


def pooled_taps(net: Any, x: torch.Tensor, config: FneConfig) -> list[torch.Tensor]:
    """Global-average-pooled activations of ``config``'s taps, one forward pass through the stem, the
    blocks up to the last tap and (with ``head``) the head, as the package's ``extract_features`` runs them.

    Args:
        net: the package's EfficientNet (``efficientnet_lite_pytorch.EfficientNet``), in eval mode.
        x: a normalised batch. Shape: (B, 3, S, S).
        config: the taps.

    Returns:
        One (B, C_tap) tensor per tap, in :attr:`FneConfig.widths` order.
    """
    m = net  # the package's untyped EfficientNet
    h = m._swish(m._bn0(m._conv_stem(x)))
    n_run = len(BLOCK_WIDTHS) if config.head else max(config.blocks) + 1
    wanted, out = set(config.blocks), []
    rate = float(m._global_params.drop_connect_rate or 0.0)  # inactive in eval mode
    for idx in range(n_run):
        h = m._blocks[idx](h, drop_connect_rate=rate * idx / len(BLOCK_WIDTHS))
        if idx in wanted:
            out.append(h.mean(dim=(2, 3)))
    if config.head:
        out.append(m._swish(m._bn1(m._conv_head(h))).mean(dim=(2, 3)))
    return out


def scale_taps(taps: Sequence[torch.Tensor], config: FneConfig) -> torch.Tensor:
    """Scale each pooled tap within itself (``config.scale``), concatenate, and discretise if asked.

    Shape: a list of (B, C_i) -> (B, sum C_i) float32.
    """
    parts = []
    for t in taps:
        t = t.float()
        if config.scale == "block-l2":
            t = t / t.norm(dim=1, keepdim=True).clamp_min(_EPS)
        elif config.scale == "block-std":
            t = (t - t.mean(dim=1, keepdim=True)) / t.std(dim=1, unbiased=False, keepdim=True).clamp_min(_EPS)
        parts.append(t)
    z = torch.cat(parts, dim=1)
    if config.ternary:
        z = (z > TERNARY_HIGH).float() - (z < TERNARY_LOW).float()
    return z


@ENCODERS.register(FAMILY)
class FullNetworkEmbedding(ImageEncoder):
    """Frozen EfficientNet-Lite0, several blocks' pooled outputs scaled and concatenated (module docstring);
    registered as ``efficientnet-lite0-fne`` (the defaults, :data:`DEFAULT_FNE`).

    Shape: ``encode_batch``: loaded (S, S, 3) uint8 arrays -> (B, ``config.dim``) float32.
    """

    n_blocks = len(BLOCK_WIDTHS)
    finetune_depth = len(BLOCK_WIDTHS)  # the fine-tuning capability (xmr.encoders.finetune)
    default_batch_size = EfficientNetLite0.default_batch_size
    takes_square_arrays = True  # load() is the base's image_to_array: views can be augmented

    def __init__(self, config: FneConfig = DEFAULT_FNE, *, image_size: int = 224) -> None:
        self.config = config
        self.base = EfficientNetLite0(image_size=image_size)
        self.image_size = image_size
        self.dim = config.dim
        self.encoder_id = f"{self.base.encoder_id}/fne-{config.spec.replace(',', '.').replace(':', '-')}"

    @property
    def device(self) -> torch.device:
        return self.base.device

    def to_device(self, device: torch.device) -> None:
        """Run ``encode_batch`` on ``device`` (the features still come back as CPU float32 numpy)."""
        self.base.to_device(device)

    def load(self, path: ImageSource) -> np.ndarray:
        return self.base.load(path)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding of a normalised batch. Shape: (B, 3, S, S) -> (B, dim)."""
        return scale_taps(pooled_taps(self.base.model, x.to(self.device), self.config), self.config)

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        return to_numpy(self.forward(to_model_input(inputs)))  # type: ignore[arg-type]  # load() made arrays

    def trunk_encoder(self, n_tail: TailDepth, *, freeze_bn: bool = True) -> FneTrunk:
        """The cacheable frozen part below a tail of ``n_tail`` (1..16 or ``"all"``) blocks (:class:`FneTrunk`);
        its ``make_tail()`` is the trainable rest."""
        return FneTrunk(self, n_tail, freeze_bn=freeze_bn)


class FneTrunk(ImageEncoder):
    """The frozen part of a full-network embedding below a tail of ``n_tail`` blocks, as a cacheable encoder.

    ``encode_batch``: loaded images -> (B, C*H*W + sum of the frozen taps' widths) float16: Lite0's boundary
    activation after its first ``16 - n_tail`` blocks, flattened (:class:`~xmr.encoders.trunk.TrunkEncoder`'s
    row; ``"all"``: the pixels 0..255), then the pooled outputs of the taps below the cut (``frozen``), in tap
    order. ``encoder_id`` = ``<fne id>/trunk-<16 - n_tail>`` (``"all"``: ``<fne id>/input``).

    Args:
        base: the frozen :class:`FullNetworkEmbedding`.
        n_tail: blocks of the trainable tail, 1..16, or ``"all"``.
        freeze_bn: the tails it makes keep their BatchNorm statistics (:class:`~xmr.encoders.trunk.ImageTail`).
    """

    takes_square_arrays = True

    def __init__(self, base: FullNetworkEmbedding, n_tail: TailDepth, *, freeze_bn: bool = True) -> None:
        n_tail = check_tail(n_tail, base.n_blocks, base.encoder_id)
        if n_tail == 0:
            raise XmrError(f"fine-tuning 0 blocks of {base.encoder_id} has no trunk or tail: "
                           "use the frozen encoder itself")
        if not base.config.head or base.config.ternary:
            raise XmrError(f"{base.encoder_id} cannot be fine-tuned: a fine-tuned full-network embedding needs "
                           f"the {HEAD!r} tap and no {TERNARY!r} (e.g. {FAMILY})")
        self.base, self.n_tail, self.freeze_bn = base, n_tail, bool(freeze_bn)
        self.n_trunk = 0 if n_tail == ALL else base.n_blocks - int(n_tail)
        self.frozen = tuple(b for b in base.config.blocks if b < self.n_trunk)
        self.image_size = base.image_size
        self.default_batch_size = base.default_batch_size
        self.encoder_id = f"{base.encoder_id}/input" if n_tail == ALL else f"{base.encoder_id}/trunk-{self.n_trunk}"
        self.boundary_shape: tuple[int, int, int] = base.base.boundary_shape(n_tail)
        self.dim = int(np.prod(self.boundary_shape)) + sum(BLOCK_WIDTHS[b] for b in self.frozen)

    def load(self, path: ImageSource) -> np.ndarray:
        return self.base.load(path)

    def model_tail(self, name: str) -> tuple[int, dict[str, object]]:
        """The tail's output size (the head's input, the embedding's dim) and its spec (``ModelConfig.image_tail``)."""
        return self.base.dim, {"encoder": name, "n_tail": self.n_tail, "trunk_id": self.encoder_id,
                               "freeze_bn": self.freeze_bn}

    def rows(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        """The trunk rows of loaded arrays before the cache's float16 rounding. Shape: (B, dim) float32."""
        lite = self.base.base
        taps: list[torch.Tensor] = []
        if self.n_tail == ALL:
            act = lite.to_pixels(arrays)
        else:
            act, taps = lite.trunk_pooled(lite.to_input(arrays), int(self.n_tail), self.frozen)
        return torch.cat([act.reshape(len(act), -1), *taps], dim=1)

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        """Trunk rows (class docstring), as cached. Returns float16 (len(inputs), dim)."""
        return self.rows(inputs).to(torch.float16).cpu().numpy()  # type: ignore[arg-type]  # load() made arrays

    def to_device(self, device: torch.device) -> None:
        """Run the frozen trunk on ``device`` (rows still come back as CPU numpy)."""
        self.base.to_device(device)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "dtype": TRUNK_DTYPE, "boundary_shape": list(self.boundary_shape),
                "frozen_taps": [f"b{b}" for b in self.frozen]}

    def make_tail(self, *, freeze_bn: bool | None = None) -> FneTail:
        """The trainable tail that takes this trunk's rows (a fresh copy each call); ``freeze_bn`` None:
        this trunk's."""
        inner = self.base.base.make_tail(self.n_tail, freeze_bn=self.freeze_bn if freeze_bn is None else freeze_bn)
        return FneTail(inner, self.base.config, first=self.n_trunk, encoder_id=self.base.encoder_id,
                       trunk_id=self.encoder_id)


class FneTail(nn.Module):
    """The trainable tail of a full-network embedding: Lite0's :class:`~xmr.encoders.trunk.ImageTail` (the last
    blocks + head conv) as ``self.tail``, the taps inside it pooled, every tap scaled and concatenated as
    :func:`scale_taps` does for the frozen encoder.

    ``features``: (B, trunk dim) cached rows (:class:`FneTrunk`) -> (B, ``config.dim``) float32 with grad.
    ``state_dict`` keys: ``tail.<ImageTail's keys>``; load it into ``make_tail()`` of the same trunk.

    Args:
        tail: Lite0's tail from block ``first`` on (``first`` 0 with a stem: ``"all"``).
        config: the taps and scaling; ``encoder_id`` / ``trunk_id``: the embedding's and its trunk's ids.
    """

    def __init__(self, tail: ImageTail, config: FneConfig, *, first: int, encoder_id: str, trunk_id: str) -> None:
        super().__init__()
        self.tail, self.config = tail, config
        self.frozen_widths = [BLOCK_WIDTHS[b] for b in config.blocks if b < first]
        self.inner = [b - first for b in config.blocks if b >= first]  # tap indices within the tail
        self.boundary_dim = int(np.prod(tail.boundary_shape))
        self.dim = config.dim
        self.encoder_id, self.trunk_id = encoder_id, trunk_id

    @property
    def n_tail(self) -> TailDepth:
        return self.tail.n_tail

    def features(self, rows: torch.Tensor) -> torch.Tensor:
        """The embedding of cached trunk rows. Shape: (B, boundary C*H*W + frozen taps) any float -> (B, dim)."""
        t = torch.from_numpy(np.asarray(rows)) if not isinstance(rows, torch.Tensor) else rows
        want = self.boundary_dim + sum(self.frozen_widths)
        if t.ndim != 2 or t.shape[1] != want:
            raise XmrError(f"expected full-network embedding trunk rows of shape (B, {want}), got {tuple(t.shape)}")
        frozen = list(t[:, self.boundary_dim:].float().split(self.frozen_widths, dim=1)) if self.frozen_widths else []
        head, inner = self.tail.tapped(self.tail.unflatten(t[:, :self.boundary_dim]), self.inner)
        return scale_taps([*frozen, *inner, head], self.config)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """:meth:`features`."""
        return self.features(rows)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """The inner tail's groups (:meth:`~xmr.encoders.trunk.ImageTail.layer_groups`)."""
        return self.tail.layer_groups()

    def set_checkpointing(self, on: bool) -> None:
        self.tail.set_checkpointing(on)

    def describe(self) -> dict[str, object]:
        return {**self.tail.describe(), "encoder_id": self.encoder_id, "trunk_id": self.trunk_id, "dim": self.dim,
                "taps": self.config.spec}


def _build(arg: str, side: Modality) -> FullNetworkEmbedding:
    return FullNetworkEmbedding(FneConfig.parse(arg))


def _check(arg: str) -> None:
    FneConfig.parse(arg)


def _canonical(arg: str) -> str:
    try:
        return FneConfig.parse(arg).spec
    except XmrError:
        return arg


def _depth(arg: str, side: Modality) -> int | None:
    return len(BLOCK_WIDTHS) if side == "image" else None


FNE_FAMILY = register_encoder_family(EncoderFamily(FAMILY, "TAPS[:SCALE[:ternary]]", _build, modalities=("image",),
                                                   check=_check, canonical=_canonical, depth=_depth))
