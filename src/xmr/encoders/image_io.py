"""Image loading and preprocessing shared by the image encoders (PIL + numpy, no torchvision).

Every image is read with PIL, transparency composited on white (emoji and line art are drawn
on transparent canvases; black-on-transparent would otherwise become black-on-black), converted
to RGB, its shorter side resized to ``size`` (bicubic) and centre-cropped to ``size`` x ``size``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from xmr.errors import XmrError


def load_rgb(path: str | Path) -> Image.Image:
    """Open ``path`` fully decoded as RGB on white; XmrError names a missing/corrupt/truncated file."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb_on_white(im)
    except FileNotFoundError:
        raise XmrError(f"image not found: {path}") from None
    except UnidentifiedImageError:
        raise XmrError(f"not an image or corrupt: {path}") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated files raise OSError on load()
        raise XmrError(f"cannot read image {path}: {e}") from None


def to_rgb_on_white(im: Image.Image) -> Image.Image:
    """RGB copy of ``im`` with any alpha channel composited over a white background."""
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return im.convert("RGB")


def resize_center_crop(im: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (bicubic), then centre-crop to a square."""
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def image_to_array(path: str | Path, size: int) -> np.ndarray:
    """uint8 array (size, size, 3) of the preprocessed image at ``path``."""
    return np.asarray(resize_center_crop(load_rgb(path), size), dtype=np.uint8)
