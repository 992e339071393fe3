"""Region features of images: a frozen CNN's final feature map, pooled to a small grid, cached.

A3VSE (Huang et al., ACM MM 2019, Sec. 3.2) attends over the region features of an image
(Faster R-CNN, 36 x 2048). xmr has no detector; it uses the cells of EfficientNet-Lite0's last
feature map as "regions" instead. The 7 x 7 x 1280 map of 7,640 emoji would take ~960 MB even in
float16, so the map is average-pooled (``adaptive_avg_pool2d``) to a ``grid x grid`` map first:
the default 3 x 3 keeps 9 regions of 1280-d, 46 KB per image in float32.

The pooled map is stored flattened, (grid * grid * C,), region-major, in the ordinary
:class:`~xmr.encoders.cache.FeatureCache` under its own encoder id
(``<base id>/regions<g>x<g>``), so the pooled features of the base encoder are never confused
with it; :func:`encode_regions` reshapes it back to (n, grid * grid, C).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from xmr.data.manifest import Item
from xmr.encoders.base import ENCODERS, ImageEncoder, create_image_encoder
from xmr.encoders.image_io import ImageSource
from xmr.encoders.pipeline import encode_images
from xmr.errors import XmrError
from xmr.runtime.device import to_numpy


class SpatialImageEncoder(Protocol):
    """An image encoder with a feature map: ``spatial_features(x (B, 3, S, S)) -> (B, C, h, w)``."""

    dim: int
    encoder_id: str
    image_size: int
    default_batch_size: int

    def load(self, path: ImageSource) -> np.ndarray: ...

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor: ...


def pool_regions(fmap: torch.Tensor, grid: int) -> torch.Tensor:
    """Average-pool a feature map to ``grid x grid`` cells and list the cells as regions.

    Args:
        fmap: a batch of feature maps. Shape: (B, C, h, w).
        grid: cells per side (``adaptive_avg_pool2d``; with h = 7 and grid = 3 the cells
            overlap by one row/column: [0, 3), [2, 5), [4, 7)).

    Returns:
        Regions in row-major cell order. Shape: (B, grid * grid, C).
    """
    if fmap.ndim != 4:
        raise XmrError(f"feature map must be (B, C, h, w), got {tuple(fmap.shape)}")
    if grid < 1:
        raise XmrError(f"region grid must be >= 1, got {grid}")
    pooled = F.adaptive_avg_pool2d(fmap, grid)  # (B, C, g, g)
    return pooled.flatten(2).transpose(1, 2).contiguous()


def _efficientnet_input(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    from xmr.encoders.efficientnet import to_model_input

    return to_model_input(arrays)


class RegionEncoder(ImageEncoder):
    """Wraps a spatial image encoder: output = its feature map pooled to a grid, flattened.

    Args:
        base: an encoder with ``load`` and ``spatial_features`` (e.g. EfficientNet-Lite0).
        grid: cells per side of the pooled map.
        to_input: stacks loaded images into ``base``'s input batch (default: EfficientNet's
            normalisation, :func:`xmr.encoders.efficientnet.to_model_input`).

    Shape:
        ``encode_batch``: loaded images -> (B, grid * grid * C) float32; ``dim`` = grid^2 * C.
    """

    def __init__(self, base: SpatialImageEncoder, *, grid: int = 3,
                 to_input: Callable[[Sequence[np.ndarray]], torch.Tensor] | None = None) -> None:
        if not hasattr(base, "spatial_features"):
            raise XmrError(f"encoder {getattr(base, 'encoder_id', base)!r} has no spatial_features(); "
                           "region features need a feature map")
        if grid < 1:
            raise XmrError(f"region grid must be >= 1, got {grid}")
        self.base, self.grid = base, grid
        self.channels = int(base.dim)
        self.n_regions = grid * grid
        self.dim = self.n_regions * self.channels
        self.encoder_id = f"{base.encoder_id}/regions{grid}x{grid}"
        self.default_batch_size = base.default_batch_size
        self._to_input = to_input or _efficientnet_input

    def load(self, path: ImageSource) -> np.ndarray:
        return self.base.load(path)

    @torch.inference_mode()
    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        fmap = self.base.spatial_features(self._to_input(inputs))  # type: ignore[arg-type]  # loaded arrays
        if fmap.shape[1] != self.channels:
            raise XmrError(f"{self.base.encoder_id} feature map has {fmap.shape[1]} channels, "
                           f"expected {self.channels}")
        regions = pool_regions(fmap.float(), self.grid)
        return to_numpy(regions.flatten(1))


def encode_regions(items_or_paths: Sequence[Item | str | Path], encoder: SpatialImageEncoder | RegionEncoder, *,
                   cache_dir: str | Path, grid: int = 3, dtype: type[np.floating] = np.float32,
                   show_progress: bool | None = None) -> np.ndarray:
    """Grid-pooled region features of images, through the feature cache.

    Args:
        items_or_paths: manifest items (their ``image``) or image paths.
        encoder: a spatial encoder (wrapped in a :class:`RegionEncoder` with ``grid``) or a
            :class:`RegionEncoder` (its own grid wins).
        cache_dir: feature cache root (e.g. ``xmr.workflows.features.feature_cache_dir()``).
        grid: cells per side when ``encoder`` is not already a :class:`RegionEncoder`.
        dtype: dtype of the returned array (float16 halves the memory).
        show_progress: progress bar (None: only on a TTY).

    Returns:
        Region features. Shape: (n, grid * grid, C).

    Raises:
        XmrError: an image is missing or unreadable (naming it).
    """
    region_enc = encoder if isinstance(encoder, RegionEncoder) else RegionEncoder(encoder, grid=grid)
    paths = [it.image if isinstance(it, Item) else it for it in items_or_paths]
    res = encode_images(region_enc, paths, cache_dir=cache_dir, skip_bad=False, show_progress=show_progress)
    return res.feats.reshape(len(paths), region_enc.n_regions, region_enc.channels).astype(dtype, copy=False)


@ENCODERS.register("efficientnet-lite0-regions")
def efficientnet_regions(*, grid: int = 3) -> RegionEncoder:
    """EfficientNet-Lite0's final 7 x 7 x 1280 map pooled to ``grid x grid`` regions (A3VSE's image input)."""
    return RegionEncoder(create_image_encoder("efficientnet-lite0"), grid=grid)  # type: ignore[arg-type]  # has spatial_features


@ENCODERS.register("efficientnet-lite0-regions7x7")
def efficientnet_regions_7x7() -> RegionEncoder:
    """EfficientNet-Lite0's whole final 7 x 7 x 1280 map as 49 regions (no pooling; 251 KB per image in float32)."""
    return RegionEncoder(create_image_encoder("efficientnet-lite0"), grid=7)  # type: ignore[arg-type]  # has spatial_features


@ENCODERS.register("toy-image-regions")
def toy_regions(*, grid: int = 2, dim: int = 64, seed: int = 0) -> RegionEncoder:
    """The toy image encoder's 8 x 8 map pooled to ``grid x grid`` regions (tests and examples)."""
    from xmr.encoders.toy import ToyImageEncoder

    base = ToyImageEncoder(dim=dim, seed=seed)
    return RegionEncoder(base, grid=grid, to_input=base.to_input)
