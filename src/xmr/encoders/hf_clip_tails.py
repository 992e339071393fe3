"""``hf-clip:PATH`` fine-tuned end to end: each tower cut into a cached frozen trunk and a trainable tail.

The capability of :mod:`xmr.encoders.finetune` for a CLIP or SigLIP checkpoint (Radford et al.,
"Learning Transferable Visual Models From Natural Language Supervision", 2021, Sec. 2.4; Zhai et
al., "Sigmoid Loss for Language Image Pre-Training", 2023). A tower of ``depth`` transformer layers
(``{vision,text}_config.num_hidden_layers``) is fine-tuned in its last ``n_tail`` layers::

    trunk = create_image_encoder("hf-clip:/m/clip").trunk_encoder(2)   # an ImageEncoder: cacheable rows
    rows = trunk.encode_batch([trunk.load(p) for p in paths])          # (B, trunk.dim) float16
    tail = trunk.make_tail()                                           # an nn.Module, every parameter trainable
    feats = tail.features(torch.from_numpy(rows))                      # (B, projection_dim) float32, with grad

What a trunk caches (rows of one fixed width per input, as the feature cache needs):

* ``n_tail`` in 1..depth, image: the hidden states after the embeddings (+ CLIP's ``pre_layrnorm``)
  and the first ``depth - n_tail`` layers, (positions x hidden) float16; positions = the patches
  (+ CLIP's class token). Text: those states (length x hidden), then the attention mask (length
  0 / 1) and the position the tower pools (1), float16 (exact: integers below 2048). ``length`` is
  the checkpoint's maximum text length, what the frozen encoder pads to
  (:meth:`~xmr.encoders.hf_clip.Checkpoint.max_text_length`).
* ``"all"``: the inputs. Image: the checkpoint's processor's pixel values (3 x S x S) float16.
  Text: the token ids and the mask, float32 (ids up to 2**24 are exact; CLIP's 49,408 are not in
  float16).

A tail runs the rest exactly as transformers' ``get_image_features`` / ``get_text_features`` do
(5.x modeling code: ``modeling_clip.py``, ``modeling_siglip.py``): the remaining layers, called as
the encoder calls them (CLIP's text layers with its causal mask and ``is_causal=True``; SigLIP's
with the bidirectional mask), then CLIP: the class token through ``post_layernorm`` and
``visual_projection``; the EOS token through ``final_layer_norm`` and ``text_projection``; SigLIP:
``post_layernorm`` and the attention-pooling head; the last token through ``final_layer_norm`` and
``head``. Neither model has dropout in its towers (``attention_dropout`` 0 by default; a checkpoint
that sets one gets it under ``.train()``). A CLIP text tail drops the positions after the last
pooled one before its layers (causal: no earlier position sees them), so a batch costs its
longest text, not ``length``.

Each tail holds deep copies of its modules: training it never changes the checkpoint, which the
trunk (and every frozen encoder of the folder) keeps using. Trunk ids: ``<side id>/trunk-<k>``
(``k`` frozen layers) and ``<side id>/trunk-input`` for ``"all"``; the side id carries the
checkpoint's digest, so a changed checkpoint never reuses these rows and a run's saved tail is
refused on it (:func:`xmr.models.joint._encoder_tail`).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from xmr.encoders.base import ImageEncoder, TextEncoder
from xmr.encoders.finetune import ALL, TailDepth, check_depth, checkpointed
from xmr.encoders.image_io import ImageSource
from xmr.errors import XmrError
from xmr.modality import Modality

if TYPE_CHECKING:
    from xmr.encoders.hf_clip import Checkpoint, HfClipImageEncoder, HfClipTextEncoder

#: cache dtypes of trunk rows (the text inputs of "all" need float32 for their ids)
STATES_DTYPE, IDS_DTYPE = "float16", "float32"


# -- what differs between CLIP and SigLIP ------------------------------------------------------------------

class _VisionStem(nn.Module):
    """Pixels -> the first layer's input: the embeddings (+ CLIP's pre-layernorm). (B, 3, S, S) -> (B, N, H)."""

    def __init__(self, embeddings: nn.Module, pre: nn.Module | None) -> None:
        super().__init__()
        self.embeddings, self.pre = embeddings, pre if pre is not None else nn.Identity()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.pre(self.embeddings(pixels))


class _ClipVisionHead(nn.Module):
    """CLIP: ``visual_projection(post_layernorm(h[:, 0]))``. (B, N, H) -> (B, dim)."""

    def __init__(self, norm: nn.Module, proj: nn.Module) -> None:
        super().__init__()
        self.norm, self.proj = norm, proj

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(h[:, 0]))


class _SiglipVisionHead(nn.Module):
    """SigLIP: the multihead attention-pooling head over ``post_layernorm(h)``. (B, N, H) -> (B, H)."""

    def __init__(self, norm: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.norm, self.head = norm, head

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(h))


class _TextHead(nn.Module):
    """``proj(final_layer_norm(h)[b, pool_b])`` (a per-position norm: picked first, the same). (B, L, H) -> (B, dim)."""

    def __init__(self, norm: nn.Module, proj: nn.Module) -> None:
        super().__init__()
        self.norm, self.proj = norm, proj

    def forward(self, h: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(h[torch.arange(len(h), device=h.device), pool]))


@dataclass(frozen=True)
class Arch:
    """How one model type's towers split (read from its transformers 5.x modeling code).

    ``vision``: model -> (stem, layers, head); ``text``: model -> (embeddings, layers, head);
    ``causal``: the text layers take a causal mask (and ``is_causal=True``); ``class_token``: the
    vision states hold one more position than the patches.
    """

    vision: Callable[[Any], tuple[nn.Module, Sequence[nn.Module], nn.Module]]
    text: Callable[[Any], tuple[nn.Module, Sequence[nn.Module], nn.Module]]
    causal: bool
    class_token: bool


def _clip_vision(m: Any) -> tuple[nn.Module, Sequence[nn.Module], nn.Module]:
    vm = m.vision_model
    return (_VisionStem(vm.embeddings, vm.pre_layrnorm), list(vm.encoder.layers),
            _ClipVisionHead(vm.post_layernorm, m.visual_projection))


def _clip_text(m: Any) -> tuple[nn.Module, Sequence[nn.Module], nn.Module]:
    tm = m.text_model
    return tm.embeddings, list(tm.encoder.layers), _TextHead(tm.final_layer_norm, m.text_projection)


def _siglip_vision(m: Any) -> tuple[nn.Module, Sequence[nn.Module], nn.Module]:
    vm = m.vision_model
    if not getattr(vm, "use_head", False):
        raise XmrError("this SigLIP checkpoint has no vision pooling head (vision_use_head false): its image "
                       "features are not defined, so it cannot be fine-tuned")
    return _VisionStem(vm.embeddings, None), list(vm.encoder.layers), _SiglipVisionHead(vm.post_layernorm, vm.head)


def _siglip_text(m: Any) -> tuple[nn.Module, Sequence[nn.Module], nn.Module]:
    tm = m.text_model
    return tm.embeddings, list(tm.encoder.layers), _TextHead(tm.final_layer_norm, tm.head)


#: model_type (config.json) -> how its towers split; another type cannot be fine-tuned (its frozen features still serve)
ARCHS: dict[str, Arch] = {
    "clip": Arch(_clip_vision, _clip_text, causal=True, class_token=True),
    "siglip": Arch(_siglip_vision, _siglip_text, causal=False, class_token=False),
}


def arch_of(ckpt: Checkpoint) -> Arch | None:
    return ARCHS.get(str(ckpt.config.get("model_type")))


def side_config(ckpt: Checkpoint, side: Modality) -> Any:
    """transformers' config of one tower (``vision_config`` / ``text_config``), defaults filled in."""
    return getattr(ckpt.hf_config, f"{'vision' if side == 'image' else 'text'}_config")


def depth_of(ckpt: Checkpoint, side: Modality) -> int | None:
    """Layers of one tower, from ``config.json`` alone (no weights); None: a model type xmr cannot split."""
    if arch_of(ckpt) is None:
        return None
    n = getattr(side_config(ckpt, side), "num_hidden_layers", None)
    return n if isinstance(n, int) and n > 0 else None


def pool_positions(input_ids: torch.Tensor, *, causal: bool, eos_token_id: int | None) -> torch.Tensor:
    """The position each text's tower pools, as transformers picks it. (B, L) long -> (B,) long.

    CLIP (``causal``): the first ``eos_token_id`` (configs with the pre-2023 ``eos_token_id == 2``: the
    largest id); SigLIP: the last position.
    """
    if not causal:
        return torch.full((len(input_ids),), input_ids.shape[1] - 1, dtype=torch.long, device=input_ids.device)
    ids = input_ids.to(torch.int)
    if eos_token_id == 2 or eos_token_id is None:
        return ids.argmax(dim=-1).long()
    return torch.eq(ids, int(eos_token_id)).int().argmax(dim=-1).long()


def text_attention(config: Any, causal: bool, states: torch.Tensor,
                   mask: torch.Tensor) -> tuple[torch.Tensor | None, dict[str, bool]]:
    """The mask (and keyword) the text layers take, built by the function the model builds it with.

    Shape: ``states`` (B, L, H) (only read for batch, length, dtype, device), ``mask`` (B, L) 0 / 1 ->
    whatever ``create_causal_mask`` / ``create_bidirectional_mask`` gives for the config's attention
    implementation (sdpa: bool (B, 1, L, L) or None).
    """
    from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

    mask = mask.to(device=states.device, dtype=torch.long)
    if causal:
        causal_mask = create_causal_mask(config=config, inputs_embeds=states, attention_mask=mask, cache=None)
        return causal_mask, {"is_causal": True}
    return create_bidirectional_mask(config=config, inputs_embeds=states, attention_mask=mask), {}


# -- the tails ---------------------------------------------------------------------------------------------

class _Tail(nn.Module):
    """What both tails share: the trainable layers, gradient checkpointing, groups, description."""

    def __init__(self, layers: Sequence[nn.Module], head: nn.Module, *, n_tail: TailDepth, encoder_id: str,
                 trunk_id: str, dim: int) -> None:
        super().__init__()
        self.layers, self.head = nn.ModuleList(layers), head
        self.n_tail, self.encoder_id, self.trunk_id, self.dim = n_tail, encoder_id, trunk_id, int(dim)
        self.checkpointing = False

    def set_checkpointing(self, on: bool) -> None:
        """Recompute each layer's activations in the backward pass instead of keeping them (less memory)."""
        self.checkpointing = bool(on)

    def _run_layers(self, h: torch.Tensor, mask: torch.Tensor | None, **kw: bool) -> torch.Tensor:
        for layer in self.layers:
            out = checkpointed(functools.partial(layer, **kw), h, mask, on=self.checkpointing and self.training)
            h = out[0] if isinstance(out, tuple) else out
        return h

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _input_groups(self) -> list[list[nn.Parameter]]:
        return []

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters by depth, input side first: [the embeddings (``"all"``)], each layer, the pooling + projection."""
        groups = [*self._input_groups(), *([p for p in layer.parameters()] for layer in self.layers),
                  list(self.head.parameters())]
        return [g for g in groups if g]

    def describe(self) -> dict[str, object]:
        return {"encoder_id": self.encoder_id, "trunk_id": self.trunk_id, "n_tail": self.n_tail,
                "layers": len(self.layers), "dim": self.dim}


class HfClipImageTail(_Tail):
    """The trainable end of a vision tower. ``features``: trunk rows (B, N*H) or pixels (B, 3*S*S) -> (B, dim)."""

    def __init__(self, stem: nn.Module | None, layers: Sequence[nn.Module], head: nn.Module, *,
                 row_shape: tuple[int, ...], **kw: Any) -> None:
        super().__init__(layers, head, **kw)
        self.stem, self.row_shape = stem, tuple(row_shape)

    def _input_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.stem.parameters())] if self.stem is not None else []

    def features(self, rows: torch.Tensor) -> torch.Tensor:
        """Image features of cached rows, any float dtype. Shape: (B, prod(row_shape)) -> (B, dim)."""
        size = int(np.prod(self.row_shape))
        if rows.ndim != 2 or rows.shape[1] != size:
            raise XmrError(f"expected image trunk rows of shape (B, {size}), got {tuple(rows.shape)}")
        x = rows.to(self._dtype()).reshape(len(rows), *self.row_shape)
        h = self.stem(x) if self.stem is not None else x
        return self.head(self._run_layers(h, None))


class HfClipTextTail(_Tail):
    """The trainable end of a text tower. ``features``: trunk rows (B, L*(H+1)+1) or ids + mask (B, 2L) -> (B, dim)."""

    def __init__(self, embeddings: nn.Module | None, layers: Sequence[nn.Module], head: nn.Module, *,
                 config: Any, causal: bool, length: int, hidden: int, **kw: Any) -> None:
        super().__init__(layers, head, **kw)
        self.embeddings = embeddings
        self.config, self.causal, self.length, self.hidden = config, causal, int(length), int(hidden)

    def _input_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.embeddings.parameters())] if self.embeddings is not None else []

    @property
    def row_dim(self) -> int:
        return 2 * self.length if self.embeddings is not None else self.length * (self.hidden + 1) + 1

    def features(self, rows: torch.Tensor) -> torch.Tensor:
        """Text features of cached rows (layout: the module docstring). Shape: (B, row_dim) -> (B, dim)."""
        if rows.ndim != 2 or rows.shape[1] != self.row_dim:
            raise XmrError(f"expected text trunk rows of shape (B, {self.row_dim}), got {tuple(rows.shape)}")
        n, length = len(rows), self.length
        if self.embeddings is not None:
            ids, mask = rows[:, :length].round().long(), rows[:, length:].round().long()
            pool = pool_positions(ids, causal=self.causal, eos_token_id=self.config.eos_token_id)
        else:
            cut = length * self.hidden
            mask, pool = rows[:, cut:cut + length].round().long(), rows[:, -1].round().long()
        keep = int(pool.max()) + 1 if self.causal and n else length  # causal: later positions change nothing
        if self.embeddings is not None:
            h = self.embeddings(input_ids=ids[:, :keep])
        else:
            h = rows[:, :length * self.hidden].to(self._dtype()).reshape(n, length, self.hidden)[:, :keep]
        attention, kw = text_attention(self.config, self.causal, h, mask[:, :keep])
        return self.head(self._run_layers(h, attention, **kw), pool)


# -- the trunks --------------------------------------------------------------------------------------------

class _Trunk:
    """What both trunk encoders share: the cut, the ids, the tail spec, placement."""

    base: HfClipImageEncoder | HfClipTextEncoder
    side: Modality
    encoder_id: str
    default_batch_size: int
    depth: int
    n_tail: TailDepth
    n_trunk: int

    def _cut(self, n_tail: object) -> None:
        ckpt = self.base.checkpoint
        depth = depth_of(ckpt, self.side)
        name = f"the {self.side} tower of hf-clip:{ckpt.path}"
        if depth is None:
            raise XmrError(f"{name} cannot be fine-tuned: xmr splits {' and '.join(ARCHS)} models, "
                           f"not {ckpt.config.get('model_type')!r}")
        n = check_depth(n_tail, depth, name, "layers")
        if n == 0:
            raise XmrError(f"fine-tuning 0 layers of {name} has no trunk or tail: use the frozen encoder itself")
        self.depth, self.n_tail = depth, n
        self.n_trunk = 0 if n == ALL else depth - int(n)
        self.arch: Arch = ARCHS[str(ckpt.config["model_type"])]
        self.encoder_id = f"{self.base.encoder_id}/trunk-{'input' if n == ALL else self.n_trunk}"
        self.default_batch_size = self.base.default_batch_size

    @property
    def checkpoint(self) -> Checkpoint:
        return self.base.checkpoint

    def model_tail(self, name: str) -> tuple[int, dict[str, object]]:
        """The tail's output size (the head's input) and its spec (``ModelConfig.image_tail`` / ``text_tail``)."""
        return self.base.dim, {"encoder": name, "n_tail": self.n_tail, "trunk_id": self.encoder_id}

    def joint_temperature(self, other: object) -> float | None:
        return self.base.joint_temperature(other)

    def to_device(self, device: torch.device) -> None:
        self.base.to_device(device)

    def _parts(self) -> tuple[nn.Module, Sequence[nn.Module], nn.Module]:
        split = self.arch.vision if self.side == "image" else self.arch.text
        return split(self.checkpoint.model)

    def _tail_kw(self) -> dict[str, Any]:
        return {"n_tail": self.n_tail, "encoder_id": self.base.encoder_id, "trunk_id": self.encoder_id,
                "dim": self.base.dim}


class HfClipImageTrunk(_Trunk, ImageEncoder):
    """The frozen part of the vision tower as a cacheable image encoder (rows: the module docstring)."""

    base: HfClipImageEncoder

    def __init__(self, base: HfClipImageEncoder, n_tail: object) -> None:
        self.base, self.side = base, "image"
        self._cut(n_tail)
        cfg = side_config(self.checkpoint, "image")
        size, patch = int(cfg.image_size), int(cfg.patch_size)
        self.pixel_shape = (3, size, size)
        positions = (size // patch) ** 2 + int(self.arch.class_token)
        self.row_shape = (3, size, size) if self.n_tail == ALL else (positions, int(cfg.hidden_size))
        self.dim = int(np.prod(self.row_shape))

    def load(self, path: ImageSource) -> np.ndarray:
        return self.base.load(path)

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        """Rows of loaded pixel arrays. Returns float16 (len(inputs), dim)."""
        ckpt = self.checkpoint
        pixels = torch.from_numpy(np.stack(inputs)).to(ckpt.device)  # type: ignore[arg-type]  # load() made arrays
        if tuple(pixels.shape[1:]) != self.pixel_shape:
            raise XmrError(f"the image processor of {ckpt.path} made pixels of shape {tuple(pixels.shape[1:])}, "
                           f"the model takes {self.pixel_shape}")
        if self.n_tail == ALL:
            return pixels.reshape(len(pixels), -1).to(torch.float16).cpu().numpy()
        stem, layers, _ = self._parts()
        with torch.no_grad():
            h = stem(pixels)
            for layer in layers[:self.n_trunk]:
                out = layer(h, None)
                h = out[0] if isinstance(out, tuple) else out
        return h.reshape(len(h), -1).to(torch.float16).cpu().numpy()

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "dtype": STATES_DTYPE, "row_shape": list(self.row_shape)}

    def make_tail(self) -> HfClipImageTail:
        """The trainable tail that takes this trunk's rows (fresh copies of the checkpoint's modules)."""
        stem, layers, head = self._parts()
        tail = HfClipImageTail(copy.deepcopy(stem) if self.n_tail == ALL else None,
                               [copy.deepcopy(m) for m in layers[self.n_trunk:]], copy.deepcopy(head),
                               row_shape=self.row_shape, **self._tail_kw())
        return tail.float().train()


class HfClipTextTrunk(_Trunk, TextEncoder):
    """The frozen part of the text tower as a cacheable text encoder (rows: the module docstring).

    ``length`` (a MiniLM trunk's option) is not taken: a text is padded to the checkpoint's maximum
    length as the frozen encoder pads it (SigLIP pools the last position, so it must be).
    """

    base: HfClipTextEncoder

    def __init__(self, base: HfClipTextEncoder, n_tail: object) -> None:
        self.base, self.side = base, "text"
        self._cut(n_tail)
        self.length = self.checkpoint.max_text_length()
        self.hidden = int(side_config(self.checkpoint, "text").hidden_size)
        self.dim = 2 * self.length if self.n_tail == ALL else self.length * (self.hidden + 1) + 1

    def _tokens(self, texts: Sequence[object]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask, as the frozen encoder makes them. Shape: (B, length) long each."""
        enc = self.checkpoint.tokenizer([str(t) for t in texts], padding="max_length", truncation=True,
                                        max_length=self.length, return_tensors="pt")
        ids = enc["input_ids"].long()
        return ids, enc["attention_mask"].long() if "attention_mask" in enc else torch.ones_like(ids)

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        """Rows of texts. Returns float16 (states, mask, pool) or float32 (ids, mask: ``"all"``), (len(inputs), dim)."""
        ids, mask = self._tokens(inputs)
        if self.n_tail == ALL:
            return torch.cat([ids, mask], dim=1).to(torch.float32).numpy()
        ckpt = self.checkpoint
        embeddings, layers, _ = self._parts()
        with torch.no_grad():
            h = embeddings(input_ids=ids.to(ckpt.device))
            attention, kw = text_attention(self._mask_config(), self.arch.causal, h, mask.to(ckpt.device))
            for layer in layers[:self.n_trunk]:
                out = layer(h, attention, **kw)
                h = out[0] if isinstance(out, tuple) else out
        pool = pool_positions(ids, causal=self.arch.causal,
                              eos_token_id=side_config(ckpt, "text").eos_token_id).to(h.dtype)
        rows = torch.cat([h.reshape(len(h), -1).cpu(), mask.to(h.dtype).cpu(), pool[:, None]], dim=1)
        return rows.to(torch.float16).numpy()

    def _mask_config(self) -> Any:
        """The loaded text tower's config: its attention implementation decides the mask's format."""
        return self.checkpoint.model.text_model.config

    def describe(self) -> dict[str, object]:
        dtype = IDS_DTYPE if self.n_tail == ALL else STATES_DTYPE
        return {**super().describe(), "dtype": dtype, "length": self.length, "hidden": self.hidden}

    def make_tail(self) -> HfClipTextTail:
        """The trainable tail that takes this trunk's rows (fresh copies of the checkpoint's modules)."""
        embeddings, layers, head = self._parts()
        tail = HfClipTextTail(copy.deepcopy(embeddings) if self.n_tail == ALL else None,
                              [copy.deepcopy(m) for m in layers[self.n_trunk:]], copy.deepcopy(head),
                              config=self._mask_config(), causal=self.arch.causal, length=self.length,
                              hidden=self.hidden, **self._tail_kw())
        return tail.float().train()
