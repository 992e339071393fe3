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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xmr.encoders.base import ENCODERS, EncoderFamily, ImageEncoder, register_encoder_family
from xmr.encoders.efficientnet import EfficientNetLite0, to_model_input
from xmr.encoders.image_io import ImageSource
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


class FullNetworkEmbedding(ImageEncoder):
    """Frozen EfficientNet-Lite0, several blocks' pooled outputs scaled and concatenated (module docstring).

    Shape: ``encode_batch``: loaded (S, S, 3) uint8 arrays -> (B, ``config.dim``) float32.
    """

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


@ENCODERS.register(FAMILY)
def efficientnet_fne() -> FullNetworkEmbedding:
    """EfficientNet-Lite0's full-network embedding at its defaults (:data:`DEFAULT_FNE`)."""
    return FullNetworkEmbedding(DEFAULT_FNE)


def _build(arg: str, side: Modality) -> FullNetworkEmbedding:
    return FullNetworkEmbedding(FneConfig.parse(arg))


def _check(arg: str) -> None:
    FneConfig.parse(arg)


def _canonical(arg: str) -> str:
    try:
        return FneConfig.parse(arg).spec
    except XmrError:
        return arg


FNE_FAMILY = register_encoder_family(EncoderFamily(FAMILY, "TAPS[:SCALE[:ternary]]", _build, modalities=("image",),
                                                   check=_check, canonical=_canonical))
