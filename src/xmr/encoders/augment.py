"""Image augmentation across art styles: seeded training views of each image, encoded once and cached.

The dual-path paper trains on random crops of an image whose shorter side is 256 (Sec. IV-C,
"Training"). xmr adds what an art-style gap needs:

- ``crop``: shorter side scaled to ``crop_side`` / 224 of the encoder's input size, then a random
  square crop of the input size (the plain view is the centre crop of the input size);
- ``jitter``: brightness, contrast and saturation each scaled by a factor in [1 - j, 1 + j], hue
  turned by up to ``hue`` of a full turn;
- ``grey``: with probability ``p_grey``, the image in greyscale;
- ``lineart``: with probability ``p_lineart``, the drawing's outlines only: black lines (the
  edges of the grey image, thickened by one pixel) on white, the way a line-art style draws the
  same thing (teaches colour <-> line-drawing invariance);
- ``hflip`` (opt-in, off by default): a mirror image with probability 0.5. It changes meaning
  ("left arrow" becomes a right arrow, text reads backwards), so it is never on unless asked.

View ``v`` of an image is fixed by ``(seed, v, SHA-1 of the file's bytes)``: the same file gives
the same view in every run, so views are encoded once and kept in the feature cache under the
encoder id ``<base id>+aug-<settings hash>-v<v>`` (:class:`AugmentedView`). Training draws one
of the plain and the K augmented views per image each epoch (``xmr train --augment-views K``);
validation, test, the index and queries always see the plain image.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from xmr.encoders.base import ImageEncoder
from xmr.encoders.image_io import ImageBytes, ImageSource, load_rgb, resize_center_crop
from xmr.errors import XmrError
from xmr.utils.numbers import check_finite_fields

AUGMENT_KINDS = ("crop", "jitter", "grey", "lineart", "hflip")
DEFAULT_KINDS = ("crop", "jitter", "grey", "lineart")


@dataclass(frozen=True)
class AugmentConfig:
    """How the training views of an image are drawn (see the module docstring).

    Attributes:
        views: augmented views per training image (0: no augmentation).
        kinds: which of :data:`AUGMENT_KINDS` to apply (``hflip`` only when listed).
        crop_side: the shorter side before the random crop, for a 224 input (dual-path: 256).
        jitter: the brightness / contrast / saturation range j.
        hue: the largest hue turn, as a fraction of a full turn.
        p_grey: probability of a greyscale view.
        p_lineart: probability of a line-art view (outlines on white).
        seed: seeds every view.
    """

    views: int = 0
    kinds: tuple[str, ...] = DEFAULT_KINDS
    crop_side: int = 256
    jitter: float = 0.4
    hue: float = 0.05
    p_grey: float = 0.2
    p_lineart: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        check_finite_fields(self)
        object.__setattr__(self, "kinds", tuple(self.kinds))
        unknown = [k for k in self.kinds if k not in AUGMENT_KINDS]
        if unknown:
            raise XmrError(f"unknown augmentation {', '.join(map(repr, unknown))}; known: {', '.join(AUGMENT_KINDS)}")
        if not self.kinds:
            raise XmrError("augmentation kinds must not be empty (use views=0 for none)")
        checks = {"views": isinstance(self.views, int) and 0 <= self.views <= 64, "crop_side": self.crop_side >= 224,
                  "jitter": 0 <= self.jitter < 1, "hue": 0 <= self.hue <= 0.5, "p_grey": 0 <= self.p_grey <= 1,
                  "p_lineart": 0 <= self.p_lineart <= 1, "seed": 0 <= self.seed < 2 ** 32}
        for name, ok in checks.items():
            if not ok:
                raise XmrError(f"invalid augmentation setting {name}: {getattr(self, name)!r}")

    @property
    def settings_id(self) -> str:
        """A short hash of every setting but ``views``: the views' cache identity."""
        spec = {k: v for k, v in asdict(self).items() if k != "views"}
        return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


def view_rng(config: AugmentConfig, view: int, content_key: str) -> np.random.Generator:
    """The generator of view ``view`` of the image whose bytes hash to ``content_key`` (hex SHA-1)."""
    return np.random.default_rng([config.seed, view, int(content_key[:15], 16)])


def augment(im: Image.Image, size: int, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One training view of an RGB image. Returns uint8 (size, size, 3).

    The random numbers are drawn in a fixed order whatever the kinds, so turning one kind off
    leaves the others' draws unchanged.
    """
    u, f = rng.random(8), 1 + config.jitter * (2 * rng.random(3) - 1)
    kinds = set(config.kinds)
    if "crop" in kinds:
        side = round(size * config.crop_side / 224)
        im = resize_center_crop(im, side) if min(im.size) != side else im
        w, h = im.size
        left, top = int(u[0] * (w - size + 1)), int(u[1] * (h - size + 1))
        im = im.crop((left, top, left + size, top + size))
    else:
        im = resize_center_crop(im, size)
    if "hflip" in kinds and u[2] < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if "lineart" in kinds and u[3] < config.p_lineart:
        return line_art(im)
    if "jitter" in kinds and config.jitter > 0:
        page = np.all(np.asarray(im) == 255, axis=2)  # the white page stays white: jitter the drawing
        im = ImageEnhance.Brightness(im).enhance(f[0])
        im = ImageEnhance.Contrast(im).enhance(f[1])
        im = ImageEnhance.Color(im).enhance(f[2])
        im = turn_hue(im, config.hue * (2 * u[4] - 1))
        a = np.asarray(im).copy()
        a[page] = 255
        im = Image.fromarray(a)
    if "grey" in kinds and u[5] < config.p_grey:
        im = im.convert("L").convert("RGB")
    return np.asarray(im, dtype=np.uint8)


def turn_hue(im: Image.Image, turn: float) -> Image.Image:
    """``im`` with its hue turned by ``turn`` of a full turn (-0.5 .. 0.5)."""
    if turn == 0:
        return im
    h, s, v = im.convert("HSV").split()
    shifted = ((np.asarray(h, dtype=np.int16) + round(turn * 256)) % 256).astype(np.uint8)
    return Image.merge("HSV", (Image.fromarray(shifted, "L"), s, v)).convert("RGB")


def line_art(im: Image.Image, threshold: float = 60.0, dark: int = 96) -> np.ndarray:
    """The outlines of a drawing: black lines on white, as a line-art style draws it.

    A pixel is black where the drawing is already dark (every channel below ``dark``: black or
    near-black ink, not a saturated colour; its own outlines stay single lines) or where the
    colour changes (the largest Sobel gradient magnitude over R, G, B above ``threshold``: the
    borders between colour regions, also where a style has no outlines); white elsewhere.
    Returns uint8 (H, W, 3).
    """
    rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
    edges = np.max([sobel_magnitude(rgb[:, :, c]) for c in range(3)], axis=0) > threshold
    lines = np.where(edges | (rgb.max(axis=2) < dark), 0, 255).astype(np.uint8)
    return np.repeat(lines[:, :, None], 3, axis=2)


def sobel_magnitude(a: np.ndarray) -> np.ndarray:
    """Gradient magnitude of a 2-D array by the 3x3 Sobel kernels, edges replicated. Shape: as ``a``."""
    p = np.pad(a.astype(np.float32), 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return np.hypot(gx, gy)


def check_augmentable(encoder: object, name: str) -> None:
    """Refuse augmented views of an image encoder (its class or an instance, ``name`` in the message) that
    does not read square image arrays (``takes_square_arrays``: the EfficientNet and toy encoders do)."""
    if not getattr(encoder, "takes_square_arrays", False):
        raise XmrError("image encoder {encoder} cannot be augmented (augment views need an encoder that reads "
                       "square image arrays, e.g. efficientnet-lite0); train it without augmented views",
                       encoder=repr(name))


class AugmentedView(ImageEncoder):
    """``base`` reading view ``view`` of each image instead of the plain one.

    ``base`` must take square uint8 arrays of its ``image_size`` (``takes_square_arrays``), as
    the EfficientNet and toy encoders do. Its id carries the settings and the view, so the
    feature cache keeps each view apart.
    """

    def __init__(self, base: ImageEncoder, config: AugmentConfig, view: int) -> None:
        check_augmentable(base, base.encoder_id)
        if not 1 <= view <= max(1, config.views):
            raise XmrError(f"augmented view {view} of {config.views}")
        self.base, self.config, self.view = base, config, view
        self.size: int = int(getattr(base, "image_size"))
        self.dim = base.dim
        self.default_batch_size = base.default_batch_size
        self.encoder_id = f"{base.encoder_id}+aug-{config.settings_id}-v{view}"

    def load(self, path: ImageSource) -> np.ndarray:
        data = path.data if isinstance(path, ImageBytes) else Path(path).read_bytes()
        key = hashlib.sha1(data).hexdigest()
        rng = view_rng(self.config, self.view, key)
        side = round(self.size * self.config.crop_side / 224)
        return augment(load_rgb(path, min_side=side), self.size, self.config, rng)

    def describe(self) -> dict[str, object]:
        """The base's description (its dtype, a trunk's boundary shape) under this view's id."""
        return {**self.base.describe(), "encoder_id": self.encoder_id}

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        return self.base.encode_batch(inputs)
