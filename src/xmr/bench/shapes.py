"""A tiny synthetic image-text dataset made on the fly: coloured shapes with captions (tests, examples, surveys)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from xmr.data.manifest import Item, write_manifest

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (230, 210, 20),
           "black": (10, 10, 10), "purple": (140, 40, 170), "orange": (240, 140, 20), "cyan": (20, 200, 210)}
SHAPES = ("circle", "square", "triangle", "cross")


def _draw(shape: str, rgb: tuple[int, int, int], size: int, jitter: np.random.Generator) -> Image.Image:
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))  # transparent, like emoji
    d = ImageDraw.Draw(im)
    m = int(size * 0.15) + int(jitter.integers(-2, 3))
    box = (m, m, size - m, size - m)
    if shape == "circle":
        d.ellipse(box, fill=rgb + (255,))
    elif shape == "square":
        d.rectangle(box, fill=rgb + (255,))
    elif shape == "triangle":
        d.polygon([(size // 2, m), (m, size - m), (size - m, size - m)], fill=rgb + (255,))
    else:
        w = size // 6
        d.rectangle((size // 2 - w, m, size // 2 + w, size - m), fill=rgb + (255,))
        d.rectangle((m, size // 2 - w, size - m, size // 2 + w), fill=rgb + (255,))
    return im


def make_shapes_dataset(root: Path, *, copies: int = 2, size: int = 32, seed: int = 0) -> Path:
    """32 (colour, shape) groups x ``copies`` styles; 4 colours train, 1 val, 3 test (zero-shot).

    Returns the manifest path. Each item has texts ["a <colour> <shape>", "<colour>"].
    """
    rng = np.random.default_rng(seed)
    img_dir = root / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    split_of = {"red": "train", "green": "train", "blue": "train", "yellow": "train", "black": "val",
                "purple": "test", "orange": "test", "cyan": "test"}
    items = []
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            for c in range(copies):
                path = img_dir / f"{colour}-{shape}-{c}.png"
                _draw(shape, rgb, size, rng).save(path)
                items.append(Item(id=f"{colour}-{shape}/{c}", image=str(path),
                                  texts=(f"a {colour} {shape}", colour), label=shape,
                                  group=f"{colour}-{shape}", style=f"s{c}", split=split_of[colour]))
    return write_manifest(items, root / "manifest.jsonl")
