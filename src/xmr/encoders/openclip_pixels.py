"""open_clip's evaluation preprocessing, with PIL and numpy alone (no torchvision).

open_clip builds its eval transform (``open_clip.image_transform_v2(cfg, is_train=False)``) from a
model's preprocess config (``size``, ``mean``, ``std``, ``interpolation``, ``resize_mode``,
``fill_color``) out of torchvision transforms applied to a PIL image; this module does the same
steps with the same arithmetic, so the pixels are equal without torchvision installed:

* ``shortest`` (the default), square size S: ``Resize(S)`` — the shorter side to S, the longer to
  ``int(S * long / short)`` — then ``CenterCrop``; a non-square size: the shorter side matched
  with the aspect kept (``ResizeKeepRatio``, always bicubic, as open_clip has it), then ``CenterCrop``.
* ``longest``: the longer side matched with the aspect kept, then centre-cropped or padded with
  ``fill_color`` (``CenterCropOrPad``).
* ``squash``: resized to the size, aspect not kept.

Each resize is PIL's (what torchvision's ``resize`` calls on a PIL image; an image already at the
size is left as it is), each crop offset ``int(round((side - crop) / 2))``, padding
``ImageOps.expand``; then ``ToTensor`` (uint8 / 255 in float32, channels first) and ``Normalize``
(``(x - mean) / std`` in float32). Tested pixel for pixel against open_clip's own transform where
torchvision is installed, and against hand-worked sizes and offsets everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from xmr.errors import XmrError

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
RESIZE_MODES = ("shortest", "longest", "squash")


@dataclass(frozen=True)
class PixelConfig:
    """open_clip's preprocess config, checked. ``size`` is (height, width)."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0

    @classmethod
    def from_open_clip(cls, cfg: Mapping[str, object], where: str) -> PixelConfig:
        """From ``open_clip.get_model_preprocess_cfg(model)``; values open_clip would refuse are an XmrError."""
        def triple(key: str) -> tuple[float, float, float]:
            v = cfg.get(key)
            vals = [v] * 3 if isinstance(v, (int, float)) else list(v) if isinstance(v, (list, tuple)) else []
            if len(vals) != 3 or not all(isinstance(x, (int, float)) for x in vals) or (key == "std" and 0 in vals):
                raise XmrError(f"{where}: preprocess {key} must be a number or three numbers, got {v!r}")
            return float(vals[0]), float(vals[1]), float(vals[2])

        size = cfg.get("size")
        sides = [size, size] if isinstance(size, int) else list(size) if isinstance(size, (list, tuple)) else []
        if len(sides) != 2 or not all(isinstance(s, int) and s > 0 for s in sides):
            raise XmrError(f"{where}: preprocess size must be a positive int or (height, width), got {size!r}")
        interpolation = "bicubic" if cfg.get("interpolation") in (None, "random") else cfg["interpolation"]
        mode = cfg.get("resize_mode") or "shortest"
        if interpolation not in _RESAMPLE or mode not in RESIZE_MODES:
            raise XmrError(f"{where}: preprocess interpolation {interpolation!r} / resize_mode {mode!r} unknown "
                           f"(open_clip knows {', '.join(_RESAMPLE)} / {', '.join(RESIZE_MODES)})")
        fill = cfg.get("fill_color", 0)
        return cls((sides[0], sides[1]), triple("mean"), triple("std"), str(interpolation), str(mode),
                   int(fill) if isinstance(fill, (int, float)) else 0)

    @property
    def needed_side(self) -> int:
        """The largest side the transform outputs (images far larger are decoded reduced)."""
        return max(self.size)


def _resize(image: Image.Image, h: int, w: int, resample: Image.Resampling) -> Image.Image:
    """torchvision's ``resize`` of a PIL image to (h, w): PIL's, or the image itself when already that size."""
    return image if image.size == (w, h) else image.resize((w, h), resample)


def _keep_ratio(image: Image.Image, size: tuple[int, int], longest: float) -> tuple[int, int]:
    """open_clip's ``ResizeKeepRatio.get_params`` without its random factors: (height, width)."""
    w, h = image.size
    ratio_h, ratio_w = h / size[0], w / size[1]
    ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
    return round(h * 1.0 / ratio), round(w * 1.0 / ratio)


def _shorter_side_to(image: Image.Image, side: int) -> tuple[int, int]:
    """torchvision's ``Resize(side)`` output size: the shorter side to ``side``, the longer truncated. (h, w)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = side, int(side * long / short)
    return (new_long, new_short) if w <= h else (new_short, new_long)


def _crop_or_pad(image: Image.Image, size: tuple[int, int], fill: int) -> Image.Image:
    """torchvision's ``center_crop`` / open_clip's ``center_crop_or_pad`` of a PIL image to (height, width)."""
    crop_h, crop_w = size
    w, h = image.size
    if crop_w > w or crop_h > h:
        border = ((crop_w - w) // 2 if crop_w > w else 0, (crop_h - h) // 2 if crop_h > h else 0,
                  (crop_w - w + 1) // 2 if crop_w > w else 0, (crop_h - h + 1) // 2 if crop_h > h else 0)
        image = ImageOps.expand(image, border=border, fill=(fill, fill, fill))
        w, h = image.size
        if (w, h) == (crop_w, crop_h):
            return image
    top, left = int(round((h - crop_h) / 2.0)), int(round((w - crop_w) / 2.0))
    return image.crop((left, top, left + crop_w, top + crop_h))


def resize_and_crop(image: Image.Image, cfg: PixelConfig) -> Image.Image:
    """The geometric steps of open_clip's eval transform on an RGB image. Size: ``cfg.size`` (h, w)."""
    resample = _RESAMPLE[cfg.interpolation]
    if cfg.resize_mode == "squash":
        return _resize(image, *cfg.size, resample)
    if cfg.resize_mode == "longest":
        return _crop_or_pad(_resize(image, *_keep_ratio(image, cfg.size, 1.0), resample), cfg.size, cfg.fill_color)
    if cfg.size[0] == cfg.size[1]:
        resized = _resize(image, *_shorter_side_to(image, cfg.size[0]), resample)
    else:  # open_clip's ResizeKeepRatio here takes its default, bicubic, whatever the config says
        resized = _resize(image, *_keep_ratio(image, cfg.size, 0.0), Image.Resampling.BICUBIC)
    return _crop_or_pad(resized, cfg.size, 0)


def to_pixels(image: Image.Image, cfg: PixelConfig) -> np.ndarray:
    """One RGB image through open_clip's eval transform. Shape: (3, H, W) float32, normalised."""
    x = np.asarray(resize_and_crop(image.convert("RGB"), cfg), dtype=np.uint8).astype(np.float32) / np.float32(255)
    mean = np.asarray(cfg.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(cfg.std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((x.transpose(2, 0, 1) - mean) / std, dtype=np.float32)
