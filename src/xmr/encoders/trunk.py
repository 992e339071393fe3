"""Fine-tuning the last N blocks of an image encoder on CPU: a frozen, cached trunk and a trainable tail.

The dual-path paper's Stage II (Sec. III, IV-C "Training") fine-tunes the whole image CNN. On a
CPU xmr fine-tunes only its last ``N`` blocks: the frozen *trunk* (stem + the first
``n_blocks - N`` blocks) runs once per image and its output -- the *boundary activation* -- is
kept in the feature cache (float16); each epoch then runs only the trainable *tail*::

    trunk = TrunkEncoder(EfficientNetLite0(), n_tail)   # an ImageEncoder: cacheable, augmentable
    res = encode_images(trunk, paths, cache_dir=...)    # (n, C*H*W) float16; rows with res.ok False are NaN
    tail = trunk.make_tail()                            # ImageTail: an nn.Module, every parameter trainable
    tail.train()
    pooled = tail(tail.unflatten(res.feats[batch]))     # (B, 1280) float32, with grad; the head goes on top

``tail(trunk(x))`` equals the frozen encoder's pooled feature (``EfficientNetLite0.forward``) in
float32 (measured: identical to the last bit, on 2 threads; tested to 1e-5), and so do the
gradients of the tail's parameters (against the library's whole network). Through the float16
cache the activations are rounded (measured on 3 drawings, ``tests/test_trunk.py``): pooled
features within 3.4e-4 for N <= 5 (5.7e-3 for N = 16; |feature| <= 4.4), tail gradients within
0.4% relative L2 over all tail parameters for N <= 5 (worst single tensor 1.2%; N = 16: 1.9%,
6.7%). An :class:`~xmr.encoders.augment.AugmentedView` of a trunk caches float32 (its
``describe()`` carries no dtype): the same values, twice the bytes.

``N`` counts MBConv blocks: the 1x1 head conv (+ its BatchNorm and activation) is always part of
a tail, and ``N = 0`` is no tail at all (today's frozen features: use the base encoder). ``N``
must be 0..16 for EfficientNet-Lite0, 0..21 for Lite1 / Lite2 (:func:`check_tail_blocks`); a trunk
or tail needs 1..n_blocks.

Boundary shapes of EfficientNet-Lite0 at 224 x 224 (measured; float16 cache: 2 bytes per value)::

    N       trunk blocks   boundary (C, H, W)   dim = C*H*W   float16 bytes / image
    1 - 4   15 - 12        (192, 7, 7)          9,408         18,816
    5 - 7   11 - 9         (112, 14, 14)        21,952        43,904
    8 - 10  8 - 6          (80, 14, 14)         15,680        31,360
    11, 12  5, 4           (40, 28, 28)         31,360        62,720
    13, 14  3, 2           (24, 56, 56)         75,264        150,528
    15      1              (16, 112, 112)       200,704       401,408
    16      0 (stem only)  (32, 112, 112)       401,408       802,816

BatchNorm: an :class:`ImageTail` keeps its BatchNorm layers in eval mode (the ImageNet running
statistics) by default, even under ``.train()``: small CPU batches give noisy batch statistics,
and the frozen trunk below keeps the ImageNet ones too. Their affine weights and biases stay
trainable. ``freeze_bn=False`` trains them as usual (batch statistics, running stats updated).
Drop-connect (stochastic depth): under ``.train()`` each tail block keeps the library's rate
``drop_connect_rate * idx / n_blocks`` (``idx``: the block's index in the whole network,
EfficientNet-Lite0: 0.2 * idx / 16); under ``.eval()`` none. The trunk always runs in eval mode
under ``torch.no_grad``.

The whole network (``N = "all"``, :data:`~xmr.encoders.finetune.ALL`; dual-path Stage II as the
paper runs it): the "trunk" is the encoder's input itself, cached as the loaded pixel values
0..255 in (B, 3, S, S) order (float16: every integer up to 2048 is exact, so the rows are the
pixels to the bit; 301,056 bytes per 224-px image), id ``<base id>/input``. The tail is then the
normalisation ``(x / 255 - 0.498) / 0.502``, the stem (conv, BatchNorm, activation), all 16
blocks, the head conv and the pooling: ``tail(rows)`` is the frozen encoder's feature in float32.

Gradient checkpointing (:meth:`ImageTail.set_checkpointing`): each block's activations are
recomputed in the backward pass (``torch.utils.checkpoint``, the drop-connect draw replayed); the
gradients are the same. With trained BatchNorm statistics (``freeze_bn=False``) the recomputation
leaves the running statistics alone, so they move once per step as without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from xmr.encoders.base import ImageEncoder
from xmr.encoders.finetune import ALL, TailDepth, checkpointed
from xmr.encoders.image_io import ImageSource
from xmr.errors import XmrError

#: the cache dtype of boundary activations
TRUNK_DTYPE = "float16"


def check_tail_blocks(n_tail: object, n_blocks: int, encoder: str = "efficientnet-lite0") -> int:
    """``n_tail`` as a checked int in 0..``n_blocks``; anything else is a one-line XmrError."""
    if isinstance(n_tail, bool) or not isinstance(n_tail, int | np.integer) or not 0 <= int(n_tail) <= n_blocks:
        raise XmrError(f"cannot fine-tune the last {n_tail!r} blocks of {encoder}: it has {n_blocks} blocks, "
                       f"so N must be 0..{n_blocks} (0: the frozen features) or 'all' (the whole network)")
    return int(n_tail)


def check_tail(n_tail: object, n_blocks: int, encoder: str = "efficientnet-lite0") -> TailDepth:
    """:func:`check_tail_blocks`, or ``"all"`` (:data:`~xmr.encoders.finetune.ALL`) as it is."""
    return ALL if isinstance(n_tail, str) and n_tail == ALL else check_tail_blocks(n_tail, n_blocks, encoder)


@runtime_checkable
class SplittableEncoder(Protocol):
    """An image encoder that can be cut into a frozen trunk and a trainable :class:`ImageTail`.

    ``EfficientNetLite0`` / ``1`` / ``2`` are (:class:`~xmr.encoders.efficientnet.EfficientNetLite`).
    An int ``n_tail`` is always checked by :func:`check_tail_blocks`;
    ``make_tail`` and ``boundary_shape`` also take :data:`~xmr.encoders.finetune.ALL`.
    ``to_pixels``: loaded arrays -> (B, 3, S, S) float32 pixel values 0..255 (the input ``ALL`` caches).
    """

    encoder_id: str
    image_size: int
    n_blocks: int
    default_batch_size: int

    def load(self, path: ImageSource) -> np.ndarray: ...

    def to_input(self, arrays: Sequence[np.ndarray]) -> torch.Tensor: ...

    def to_pixels(self, arrays: Sequence[np.ndarray]) -> torch.Tensor: ...

    def trunk(self, x: torch.Tensor, n_tail: int) -> torch.Tensor: ...

    def boundary_shape(self, n_tail: TailDepth) -> tuple[int, int, int]: ...

    def make_tail(self, n_tail: TailDepth, *, freeze_bn: bool = True) -> ImageTail: ...


class ImageTail(nn.Module):
    """The trainable last ``n_tail`` blocks of an image encoder, its head conv and the pooling
    (with a ``stem``: the whole network, its input's normalisation included).

    Holds its own (deep-copied) modules: training it never changes the frozen encoder.
    ``forward``: boundary activation (B, C, H, W) float32 -> pooled feature (B, dim), the same
    feature the frozen encoder gives when nothing was trained; with a stem the "activation" is the
    pixels (B, 3, S, S), 0..255. :meth:`features` takes the cached rows.

    ``state_dict`` keys: ``blocks.<j>.<library name>`` (``j`` = 0..n_tail-1, the tail's own block
    order), ``conv_head.weight``, ``bn1.{weight,bias,running_mean,running_var,num_batches_tracked}``,
    and with a stem ``conv_stem.weight``, ``bn0.*``; save it with :meth:`describe`, and load it into
    ``make_tail(n_tail)`` of the same encoder.

    Args:
        blocks: the last ``n_tail`` blocks, called as ``block(x, drop_connect_rate=rate)``.
        drop_connect_rates: each block's rate in the whole network (applied in train mode only).
        head: the 1x1 head conv, its BatchNorm and activation, as ``(conv_head, bn1, act)``.
        encoder_id: the frozen encoder's id; ``trunk_id``: the id its trunk activations are cached under.
        boundary_shape: (C, H, W) of the activation ``forward`` takes.
        freeze_bn: keep every BatchNorm in eval mode, even under ``.train()`` (see the module docstring).
        stem: the whole network: ``(conv_stem, bn0, act)`` and ``normalize`` = (mean, std) of
            ``(x / 255 - mean) / std`` applied to the pixels first. None: a tail of the last blocks.
    """

    def __init__(self, blocks: Sequence[nn.Module], drop_connect_rates: Sequence[float],
                 head: tuple[nn.Module, nn.Module, nn.Module], *, encoder_id: str, trunk_id: str,
                 boundary_shape: tuple[int, int, int], freeze_bn: bool = True,
                 stem: tuple[nn.Module, nn.Module, nn.Module] | None = None,
                 normalize: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        if not blocks or len(blocks) != len(drop_connect_rates):
            raise XmrError(f"an image tail needs one drop-connect rate per block, got {len(drop_connect_rates)} "
                           f"for {len(blocks)} blocks")
        if stem is not None:
            self.conv_stem, self.bn0, self.stem_act = stem
        self.whole = stem is not None
        self.normalize = (float(normalize[0]), float(normalize[1]))
        self.blocks = nn.ModuleList(blocks)
        self.drop_connect_rates = tuple(float(r) for r in drop_connect_rates)
        self.conv_head, self.bn1, self.act = head
        self.encoder_id, self.trunk_id = encoder_id, trunk_id
        self.boundary_shape = tuple(int(s) for s in boundary_shape)
        self.freeze_bn = freeze_bn
        self.checkpointing = False
        self.dim = int(getattr(self.conv_head, "out_channels"))
        self.train(self.training)

    @property
    def n_tail(self) -> TailDepth:
        """Blocks of the tail, or ``"all"`` for the whole network."""
        return ALL if self.whole else len(self.blocks)

    def train(self, mode: bool = True) -> ImageTail:
        """Set train / eval mode; with ``freeze_bn`` every BatchNorm stays in eval mode."""
        super().train(mode)
        if self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def set_checkpointing(self, on: bool) -> None:
        """Gradient checkpointing per block (train mode with grad only; see the module docstring)."""
        self.checkpointing = bool(on)

    def unflatten(self, flat: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Cached trunk rows back to activations. Shape: (B, C*H*W) any float -> (B, C, H, W) float32."""
        t = torch.from_numpy(np.asarray(flat)) if not isinstance(flat, torch.Tensor) else flat
        c, h, w = self.boundary_shape
        if t.ndim != 2 or t.shape[1] != c * h * w:
            raise XmrError(f"expected trunk activations of shape (B, {c * h * w}), got {tuple(t.shape)}")
        return t.float().reshape(len(t), c, h, w)

    def features(self, rows: torch.Tensor) -> torch.Tensor:
        """Pooled features of cached rows. Shape: (B, C*H*W) any float -> (B, dim) float32."""
        out: torch.Tensor = self(self.unflatten(rows))
        return out

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters by depth, input side first: [the stem (whole network only)], each block, the last
        block's group holding the head conv and its BatchNorm too."""
        groups = [list(self.conv_stem.parameters()) + list(self.bn0.parameters())] if self.whole else []
        groups += [list(b.parameters()) for b in self.blocks]
        groups[-1] += list(self.conv_head.parameters()) + list(self.bn1.parameters())
        return [[p for p in g if p.requires_grad] for g in groups]

    def forward(self, act: torch.Tensor) -> torch.Tensor:
        """Pooled features of boundary activations. Shape: (B, C, H, W) -> (B, dim)."""
        return self.tapped(act)[0]

    def tapped(self, act: torch.Tensor, pooled: Sequence[int] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`forward`, and the global-average-pooled outputs of the tail's blocks ``pooled`` (indices in
        the tail, 0..n_tail-1; the full-network embedding's taps inside the tail), in the order given.
        Shape: (B, C, H, W) -> ((B, dim), one (B, C_j) per index)."""
        if act.ndim != 4 or tuple(act.shape[1:]) != self.boundary_shape:
            raise XmrError(f"expected activations of shape (B, {', '.join(map(str, self.boundary_shape))}), "
                           f"got {tuple(act.shape)}")
        x = act
        if self.whole:
            mean, std = self.normalize
            x = self.stem_act(self.bn0(self.conv_stem((x / 255.0 - mean) / std)))
        on = self.checkpointing and self.training
        kept: dict[int, torch.Tensor] = {}
        for j, (block, rate) in enumerate(zip(self.blocks, self.drop_connect_rates)):
            x = checkpointed(_Once(block), x, rate, on=on) if on else block(x, drop_connect_rate=rate)
            if j in pooled:
                kept[j] = x.mean(dim=(2, 3))
        missing = sorted(set(pooled) - kept.keys())
        if missing:
            raise XmrError(f"tail blocks {missing} are not in this {len(self.blocks)}-block tail")
        x = self.act(self.bn1(self.conv_head(x)))
        return x.mean(dim=(2, 3)), [kept[j] for j in pooled]

    def describe(self) -> dict[str, object]:
        """What to save with a run next to :meth:`state_dict` (JSON-able)."""
        return {"encoder_id": self.encoder_id, "trunk_id": self.trunk_id, "n_tail": self.n_tail,
                "boundary_shape": list(self.boundary_shape), "dim": self.dim, "freeze_bn": self.freeze_bn,
                "drop_connect_rates": list(self.drop_connect_rates)}


class _Once:
    """A block called under checkpointing: its second call (the backward pass's recomputation) leaves the
    running statistics of BatchNorm layers in train mode as they are (they moved in the first)."""

    def __init__(self, block: nn.Module) -> None:
        self.block, self.calls = block, 0

    def __call__(self, x: torch.Tensor, rate: float) -> torch.Tensor:
        self.calls += 1
        with _bn_stats_kept(self.block) if self.calls > 1 else contextlib.nullcontext():
            out: torch.Tensor = self.block(x, drop_connect_rate=rate)
        return out


@contextlib.contextmanager
def _bn_stats_kept(module: nn.Module) -> Iterator[None]:
    """Within: the BatchNorm layers of ``module`` in train mode use batch statistics but update no running ones."""
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.num_batches_tracked is not None:
            saved.append((m, m.momentum, m.num_batches_tracked.clone()))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)  # type: ignore[union-attr]  # kept above


class TrunkEncoder(ImageEncoder):
    """The frozen trunk of ``base`` as a cacheable image encoder: images -> flattened boundary activations.

    ``encode_batch``: loaded images -> (B, C*H*W) float16 (``describe()`` says ``"dtype": "float16"``,
    so the feature cache keeps them in float16); ``boundary_shape`` = (C, H, W) for
    :meth:`ImageTail.unflatten`. ``encoder_id`` = ``<base id>/trunk-<n_blocks - n_tail>``
    (``"all"``: ``<base id>/input``, the pixels; see the module docstring); ``load`` is the base's,
    and it reads square arrays of ``image_size``, so an :class:`~xmr.encoders.augment.AugmentedView`
    can wrap it. Building one loads the base's weights (the boundary shape is measured, not assumed),
    except for ``"all"``.

    Args:
        base: a :class:`SplittableEncoder` (``efficientnet-lite0/1/2``); any other is a one-line XmrError.
        n_tail: blocks of the trainable tail, 1..``base.n_blocks``, or ``"all"``.
        freeze_bn: the tails it makes keep their BatchNorm statistics (:class:`ImageTail`).
    """

    takes_square_arrays = True

    def __init__(self, base: ImageEncoder, n_tail: TailDepth, *, freeze_bn: bool = True) -> None:
        if not isinstance(base, SplittableEncoder):
            raise XmrError(f"image encoder {getattr(base, 'encoder_id', base)!r} cannot be split into a frozen "
                           "trunk and a trainable tail (efficientnet-lite0/1/2 can)")
        n_tail = check_tail(n_tail, base.n_blocks, base.encoder_id)
        if n_tail == 0:
            raise XmrError(f"fine-tuning 0 blocks of {base.encoder_id} has no trunk or tail: "
                           "use the frozen encoder itself")
        self.base, self.n_tail, self.freeze_bn = base, n_tail, bool(freeze_bn)
        self.n_trunk = 0 if n_tail == ALL else base.n_blocks - int(n_tail)
        self.image_size = base.image_size
        self.default_batch_size = base.default_batch_size
        self.encoder_id = f"{base.encoder_id}/input" if n_tail == ALL else f"{base.encoder_id}/trunk-{self.n_trunk}"
        self.boundary_shape: tuple[int, int, int] = base.boundary_shape(n_tail)
        self.dim = int(np.prod(self.boundary_shape))

    def load(self, path: ImageSource) -> np.ndarray:
        return self.base.load(path)

    def model_tail(self, name: str) -> tuple[int, dict[str, object]]:
        """What a model trained on these activations needs (the capability of an encoder that feeds a
        trainable tail): the size of the tail's pooled output, the head's input, and the tail's spec
        (``ModelConfig.image_tail``, ``name`` the registered base encoder)."""
        return self.base.dim, {"encoder": name, "n_tail": self.n_tail, "trunk_id": self.encoder_id,
                               "freeze_bn": self.freeze_bn}

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        """Flattened boundary activations (``"all"``: the pixels). Returns float16 (len(inputs), C*H*W)."""
        arrays: Sequence[np.ndarray] = inputs  # type: ignore[assignment]  # load() made each input an array
        if self.n_tail == ALL:
            act = self.base.to_pixels(arrays)
        else:
            act = self.base.trunk(self.base.to_input(arrays), int(self.n_tail))  # on the base's device
        return act.reshape(len(act), -1).to(torch.float16).cpu().numpy()

    def to_device(self, device: torch.device) -> None:
        """Run the frozen trunk on ``device`` (the base's network moves; rows still come back as CPU numpy)."""
        move = getattr(self.base, "to_device", None)
        if move is not None:
            move(device)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "dtype": TRUNK_DTYPE, "boundary_shape": list(self.boundary_shape)}

    def make_tail(self, *, freeze_bn: bool | None = None) -> ImageTail:
        """The trainable tail that takes this trunk's activations (a fresh copy each call); ``freeze_bn``
        None: this trunk's."""
        return self.base.make_tail(self.n_tail, freeze_bn=self.freeze_bn if freeze_bn is None else freeze_bn)
