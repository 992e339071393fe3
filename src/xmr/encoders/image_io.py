"""Image loading and preprocessing shared by the image encoders (PIL + numpy, no torchvision).

Every image is read with PIL, transparency composited on white (emoji and line art are drawn
on transparent canvases; black-on-transparent would otherwise become black-on-black), converted
to 8-bit RGB, its shorter side resized to ``size`` (bicubic) and centre-cropped to ``size`` x
``size``.

What is refused, each with a one-line :class:`UnreadableImage` naming the file: a missing file,
anything but a regular file (a folder, a FIFO, a device such as ``/dev/zero``: they are never
opened, so nothing blocks), an empty, truncated or non-image file, an SVG (vector: rasterise it
first), and an image declaring more pixels than :attr:`ImageReadConfig.max_pixels` (a
decompression bomb) — checked from the header, before anything is decoded. Large images that
are allowed are decoded reduced when the encoder needs far fewer pixels (JPEG DCT scaling, then
box reduction by an integer factor), so a 170-megapixel scan does not cost gigabytes.

High-bit-depth modes are scaled, not clipped: 16-bit greyscale (``I;16``, ``I;16B`` ...) by
1/257, 32-bit integer ``I`` by its range (8- or 16-bit data, else min-max), float ``F`` as
[0, 1] or [0, 255] data (else min-max).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import typing
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from xmr.errors import Param, XmrError
from xmr.utils.numbers import POSITIVE_WHOLE

MAX_PIXELS_ENV = "XMR_MAX_IMAGE_PIXELS"
#: what lets a larger image through: the environment variable, or the config field (the CLI's option)
_BOMB_FIX = f"(possible decompression bomb; raise ${MAX_PIXELS_ENV} or {{fix}} to allow it)"
_RAISE_LIMIT = Param("max_pixels")


@dataclass(frozen=True)
class ImageBytes:
    """An image held in memory (an upload), read like a file: ``name`` is what errors call it."""

    data: bytes
    name: str = "upload"

    def __str__(self) -> str:
        return self.name


#: what the image readers take: a file path, or the bytes of an image in memory
ImageSource = typing.Union[str, Path, ImageBytes]
_ORIENTATION = 0x0112  # the EXIF orientation tag
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


@dataclass(frozen=True)
class ImageReadConfig:
    """Limits of image reading.

    Attributes:
        max_pixels: images declaring more pixels (width x height) are refused before decoding;
            the default is the size at which PIL itself calls an image a decompression bomb.
            ``$XMR_MAX_IMAGE_PIXELS`` overrides it, and a config given to
            :func:`using_image_read` (the command line's option) overrides both.
        reduce_gap: decode reduced when the image's shorter side is at least this many times
            the size the encoder needs; the reduced image keeps at least that margin, so the
            final bicubic resize still works from ``reduce_gap`` x the output resolution.
    """

    max_pixels: int = 2 * 89_478_485
    reduce_gap: int = 3

    @classmethod
    def from_env(cls) -> ImageReadConfig:
        raw = os.environ.get(MAX_PIXELS_ENV)
        if not raw:
            return cls()
        return cls(max_pixels=int(POSITIVE_WHOLE.parse(raw, f"${MAX_PIXELS_ENV}:")))


_given: ImageReadConfig | None = None  # set by using_image_read / set_image_read; None: from the environment


def current_image_read() -> ImageReadConfig:
    """The reading limits in force: the config given to :func:`using_image_read` (or
    :func:`set_image_read`), else :meth:`ImageReadConfig.from_env` (read at each call)."""
    return _given if _given is not None else ImageReadConfig.from_env()


def set_image_read(config: ImageReadConfig | None) -> ImageReadConfig | None:
    """Make ``config`` the limits of every read in this process (None: from the environment again);
    returns the previous setting. For a process's whole life (a service worker, a Ray actor);
    a command uses :func:`using_image_read`."""
    global _given
    previous, _given = _given, config
    return previous


@contextlib.contextmanager
def using_image_read(config: ImageReadConfig | None) -> Iterator[None]:
    """Read images with ``config``'s limits for the block (None: from the environment), restored after."""
    previous = set_image_read(config)
    try:
        yield
    finally:
        set_image_read(previous)


class UnreadableImage(XmrError):
    """An image file that cannot be used; ``path`` is the file, ``reason`` says why (in the library's
    words; ``fields`` as :class:`~xmr.errors.XmrError`'s, placeholders of ``reason``)."""

    def __init__(self, path: str | Path | ImageBytes, reason: str, **fields: typing.Any) -> None:
        self.path = str(path)
        if not fields:
            self.reason = reason
            super().__init__(f"{reason}: {path}")
            return
        self.reason = str(XmrError(reason, **fields))
        super().__init__(reason + ": {image_path}", **fields, image_path=self.path)


def check_image_file(path: str | Path) -> os.stat_result:
    """Stat ``path`` without opening it: it must exist and be a regular file (not a FIFO, device, folder)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UnreadableImage(path, "image not found") from None
    except OSError as e:
        raise UnreadableImage(path, f"cannot read image ({(e.strerror or str(e)).lower()})") from None
    if stat.S_ISDIR(st.st_mode):
        raise UnreadableImage(path, "a folder, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableImage(path, "not a regular file (a FIFO, socket or device), refused")
    if st.st_size == 0:
        raise UnreadableImage(path, "empty file (0 bytes), not an image")
    return st


def _looks_like_svg(path: Path | ImageBytes) -> bool:
    if isinstance(path, ImageBytes):
        head = path.data[:1024].lstrip().lower()
        return head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head)
    if path.suffix.lower() in (".svg", ".svgz"):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(1024).lstrip().lower()
    except OSError:
        return False
    return head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head)


def load_rgb(path: ImageSource, min_side: int | None = None, config: ImageReadConfig | None = None) -> Image.Image:
    """Open ``path`` fully decoded as 8-bit RGB on white.

    Args:
        path: the image file.
        min_side: the shorter side the caller needs; a much larger image is decoded reduced
            (never below ``config.reduce_gap`` x ``min_side``). None decodes at full size.
        config: reading limits (default: :func:`current_image_read`).

    Raises:
        UnreadableImage: see the module docstring; the message names the file.
    """
    config = config or current_image_read()
    source: Path | BytesIO
    if isinstance(path, ImageBytes):
        if not path.data:
            raise UnreadableImage(path.name, "empty file (0 bytes), not an image")
        source = BytesIO(path.data)
    else:
        path = Path(path)
        check_image_file(path)
        source = path
    if config.max_pixels > 2 * (Image.MAX_IMAGE_PIXELS or config.max_pixels):
        Image.MAX_IMAGE_PIXELS = config.max_pixels // 2 + 1  # PIL refuses past twice its limit: asked for more
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            with Image.open(source) as opened:
                im: Image.Image = opened
                w, h = im.size
                if w * h > config.max_pixels:
                    raise UnreadableImage(path, f"image of {w} x {h} = {w * h:,} pixels is over the limit of "
                                                f"{config.max_pixels:,} {_BOMB_FIX}", fix=_RAISE_LIMIT)
                if min_side is not None:
                    im.draft("RGB", (min_side * config.reduce_gap, min_side * config.reduce_gap))
                im.load()
                orientation = im.getexif().get(_ORIENTATION, 1)
                if min_side is not None:
                    im = _reduced(im, min_side * config.reduce_gap)  # before any full-size copy is made
                if orientation in _TRANSPOSE:  # a camera's EXIF rotation, applied to the (reduced) pixels
                    im = im.transpose(_TRANSPOSE[orientation])
                return to_rgb_on_white(im)
    except UnreadableImage:
        raise
    except Image.DecompressionBombError as e:  # PIL's own check, at twice its limit, comes before ours
        n = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(n.group(1)):,} pixels" if n else "its size"
        raise UnreadableImage(path, f"image of {size} is over the limit of {config.max_pixels:,} {_BOMB_FIX}",
                              fix=_RAISE_LIMIT) from None
    except UnidentifiedImageError:
        if _looks_like_svg(path):
            raise UnreadableImage(path, "an SVG (vector) image; rasterise it to PNG first") from None
        raise UnreadableImage(path, "not an image or corrupt") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated files raise OSError on load()
        raise UnreadableImage(path, f"cannot read image ({e})") from None
    except MemoryError:
        raise UnreadableImage(path, "not enough memory to decode this image") from None


_STRIP_PIXELS = 1 << 22  # pixels per strip when reducing an image with alpha


def _reduced(im: Image.Image, keep: int) -> Image.Image:
    """``im`` shrunk by the largest integer factor that keeps its shorter side >= ``keep``.

    An image with alpha is reduced a strip of rows at a time: PIL averages premultiplied
    colours, and converting the whole image for that would copy it at full size. So are the
    modes PIL cannot average, each strip converted first: palette indices (``P``, to RGBA) and
    1-bit pixels (``1``, to greys).
    """
    factor = min(im.size) // keep
    if factor < 2:
        return im
    mode = _AVERAGED_AS.get(im.mode, im.mode)
    if mode == im.mode and mode not in ("RGBA", "LA"):
        return im.reduce(factor)
    w, h = im.size
    rows = max(1, _STRIP_PIXELS // (w * factor)) * factor  # whole blocks of rows per strip
    out = Image.new(mode, (-(-w // factor), -(-h // factor)))
    for top in range(0, h, rows):
        strip = im.crop((0, top, w, min(h, top + rows)))
        out.paste((strip if strip.mode == mode else strip.convert(mode)).reduce(factor), (0, top // factor))
    return out


#: the mode each mode PIL cannot average is converted to before a reduction
_AVERAGED_AS = {"P": "RGBA", "1": "L"}


def _to_8bit(a: np.ndarray, *, unit_range: bool) -> np.ndarray:
    """Grey levels of any range as uint8: 8-bit data kept, 16-bit scaled by 1/257, else min-max."""
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.all():
        a = np.where(finite, a, 0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if unit_range and lo >= 0.0 and hi <= 1.0:
        a = a * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        pass
    elif lo >= 0.0 and hi <= 65535.0:
        a = a / 257.0
    else:
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def to_rgb_on_white(im: Image.Image) -> Image.Image:
    """8-bit RGB copy of ``im``: alpha composited over white, high bit depths scaled (not clipped)."""
    if im.mode.startswith("I;16"):
        im = Image.fromarray(np.rint(np.asarray(im).astype(np.float64) / 257.0).astype(np.uint8), "L")
    elif im.mode == "I":
        im = Image.fromarray(_to_8bit(np.asarray(im), unit_range=False), "L")
    elif im.mode == "F":
        im = Image.fromarray(_to_8bit(np.asarray(im), unit_range=True), "L")
    elif im.mode == "La":
        im = im.convert("LA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa") or (im.mode == "P" and "transparency" in im.info):
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


def image_to_array(path: ImageSource, size: int) -> np.ndarray:
    """uint8 array (size, size, 3) of the preprocessed image at ``path``."""
    return np.asarray(resize_center_crop(load_rgb(path, min_side=size), size), dtype=np.uint8)


def blank_png(side: int = 32) -> bytes:
    """A white PNG of ``side`` x ``side``: the warm-up input of the image encoders."""
    buf = BytesIO()
    Image.new("RGB", (side, side), (255, 255, 255)).save(buf, format="PNG")
    return buf.getvalue()
