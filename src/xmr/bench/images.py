"""Synthetic photo-like JPEGs for the encoding benchmarks (numpy and Pillow only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def make_jpegs(folder: Path, n: int, size: int = 224, seed: int = 0) -> list[Path]:
    """``n`` photo-like ``size`` x ``size`` JPEGs (quality 90) in ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    paths = []
    for i in range(n):
        a = rng.uniform(0, 2 * np.pi, 3)
        base = np.stack([127 + 100 * np.sin(6 * xx * np.cos(a[c]) + 6 * yy * np.sin(a[c]) + c) for c in range(3)], 2)
        base += rng.normal(0, 12, base.shape)
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(4):
            x0, y0 = rng.integers(0, size - 40, 2)
            x1, y1 = x0 + rng.integers(20, 120), y0 + rng.integers(20, 120)
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([int(x0), int(y0), int(x1), int(y1)], fill=fill)
        p = folder / f"img{i:05d}.jpg"
        img.save(p, quality=90)
        paths.append(p)
    return paths
