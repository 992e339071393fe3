"""Tiny deterministic encoders for tests and examples: no weights, no downloads, milliseconds.

``toy-image``: a fixed random-weight conv net (seeded) on a 32 x 32 image -> 64-d.
``toy-text``: hashed bag of words and character trigrams -> fixed random projection -> 64-d.
Both carry real information about their input, so a joint space learned on them retrieves
far above chance on simple synthetic data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from xmr.encoders.base import ENCODERS, ImageEncoder, TextEncoder
from xmr.encoders.image_io import ImageSource, image_to_array
from xmr.runtime.device import to_numpy
from xmr.utils.arrays import l2_normalize


@ENCODERS.register("toy-image")
class ToyImageEncoder(ImageEncoder):
    """Random (seeded) 2-layer conv net with global pooling. Shape: (B, 32, 32, 3) -> (B, dim)."""

    default_batch_size = 64
    takes_square_arrays = True  # load() is image_to_array(path, image_size): views can be augmented

    def __init__(self, *, dim: int = 64, seed: int = 0, image_size: int = 32) -> None:
        self.dim, self.image_size = dim, image_size
        self.encoder_id = f"toy-image-d{dim}-s{seed}@{image_size}"
        g = torch.Generator().manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(32, dim, 3, stride=2, padding=1), torch.nn.ReLU(),
        ).eval()
        self.device = torch.device("cpu")  # where encode_batch runs (:func:`xmr.encoders.placement.place_encoder`)
        for p in self.net.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def load(self, path: ImageSource) -> np.ndarray:
        return image_to_array(path, self.image_size)

    @staticmethod
    def to_input(inputs: Sequence[object]) -> torch.Tensor:
        """Loaded uint8 images -> the net's input batch. Shape: (B, S, S, 3) -> (B, 3, S, S)."""
        return torch.from_numpy(np.stack(inputs)).permute(0, 3, 1, 2).float() / 255.0 - 0.5  # type: ignore[arg-type]  # load() made each input an array

    @torch.inference_mode()
    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map (for region features). Shape: (B, 3, S, S) -> (B, dim, S/4, S/4)."""
        return self.net(x)

    def to_device(self, device: torch.device) -> None:
        """Run ``encode_batch`` on ``device`` (the features still come back as CPU float32 numpy)."""
        self.device = device
        self.net.to(device)

    @torch.inference_mode()
    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        feats = self.net(self.to_input(inputs).to(self.device))
        out = torch.cat([feats.mean(dim=(2, 3)), feats.amax(dim=(2, 3))], dim=1)[:, : self.dim]
        return to_numpy(out)


@ENCODERS.register("toy-text")
class ToyTextEncoder(TextEncoder):
    """Feature hashing of words and character trigrams, then a seeded random projection."""

    default_batch_size = 256

    def __init__(self, *, dim: int = 64, seed: int = 0, buckets: int = 4096) -> None:
        self.dim, self.buckets = dim, buckets
        self.encoder_id = f"toy-text-d{dim}-s{seed}-b{buckets}"
        rng = np.random.default_rng(seed)
        self.proj = (rng.standard_normal((buckets, dim)) / np.sqrt(dim)).astype(np.float32)

    def _bucket(self, token: str) -> int:
        return int.from_bytes(hashlib.md5(token.encode()).digest()[:4], "little") % self.buckets

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        bags = np.zeros((len(inputs), self.buckets), dtype=np.float32)
        for row, text in enumerate(inputs):
            words = str(text).lower().split()
            grams = [w[i:i + 3] for w in words for i in range(max(1, len(w) - 2))]
            for tok in words + ["#" + g for g in grams]:
                bags[row, self._bucket(tok)] += 1.0
        out = bags @ self.proj
        return l2_normalize(out)
