"""Fine-tuning the last N transformer layers of a text encoder on CPU: cached token states, a trainable tail.

The text counterpart of :mod:`xmr.encoders.trunk`. For all-MiniLM-L6-v2 (``minilm-l6``: a
6-layer BertModel -> mean pooling over the attention mask -> L2 normalisation, 384-d) the frozen
*trunk* (the embeddings + the first ``6 - N`` BertLayers) runs once per text and its *token
states* are kept in the feature cache (float16); each epoch then runs only the trainable *tail*
(the last ``N`` layers, the masked mean pooling and the L2 normalisation)::

    trunk = TextTrunkEncoder(MiniLML6(), n_tail, length=64)   # a TextEncoder: cacheable
    res = encode_texts(trunk, texts, cache_dir=...)          # (n, length * 385) float16
    tail = trunk.make_tail()                                 # TextTail: an nn.Module, every parameter trainable
    tail.train()
    states, mask = tail.unflatten(res.feats[batch])          # (B, length, 384) float32, (B, length) bool
    emb = tail(states, mask)                                 # (B, 384) float32, unit rows, with grad

Fixed length: every text is padded (or truncated) to the same ``length`` tokens, so its cached
row never depends on the other texts of its batch (right padding; ``[CLS]`` and ``[SEP]``
count). ``length`` must be 2..the model's ``max_seq_length`` (256 for MiniLM, what
``encode_batch`` truncates at); a text of more than ``length`` tokens keeps ``[CLS]``, its
first ``length - 2`` word pieces and ``[SEP]`` (the frozen encoder's ``encode_batch`` keeps
256), so pick a ``length`` that covers the data (the emoji and icons names are at most 13).

Row layout (:meth:`TextTrunkEncoder.encode_batch`, :meth:`TextTail.unflatten`): ``length * 384``
state values (row-major: token, then channel) followed by the ``length`` mask values as 0 / 1
(exact in float16) -- one fixed-width row per text, as the feature cache needs; the mask costs
1/385 of the row and keeps no assumption about where the padding is. float16 bytes per text:
``2 * 385 * length`` (64: 49,280; 16: 12,320). The states of padded positions are the
trunk's own (never read: a padded key gets zero attention weight, a padded query is pooled
out), so a tail trims the trailing all-padding columns of a batch before its layers: the cost
of a batch is set by its longest text, not by ``length``.

``N`` counts BertLayers, 1..6 (:func:`check_tail_layers`): ``N = 6`` trains every layer on the
cached embeddings output (the embedding tables stay frozen); ``N = 0`` is the frozen encoder
itself (``minilm-l6``).

How a BertLayer is called (transformers 5.x, read in ``transformers/models/bert/modeling_bert.py``
and ``masking_utils.py``, 5.24.0): ``BertLayer.forward(hidden_states, attention_mask, ...)``
returns a tensor (4.x returned a tuple whose first item is the states); the attention mask it
takes is what ``BertModel._create_attention_masks`` builds with
``masking_utils.create_bidirectional_mask(config=..., inputs_embeds=..., attention_mask=2-D)``,
whose format follows ``config._attn_implementation``: ``"sdpa"`` (what the packaged model
loads with on CPU) a bool (B, 1, L, L) mask, or None when nothing is padded; ``"eager"`` an
additive float (B, 1, L, L) mask. :func:`bert_attention_mask` calls that same function (so the
tail sees exactly the mask the library builds) and falls back to 4.x's extended additive
(B, 1, 1, L) mask when it does not exist; :func:`run_bert_layer` accepts a tensor or a tuple.

Dropout: the copied layers keep MiniLM's dropout (``hidden_dropout_prob`` = 0.1 after the
attention output and the feed-forward output, ``attention_probs_dropout_prob`` = 0.1 on the
attention weights), active under ``tail.train()`` and off under ``tail.eval()`` -- a tail in
eval mode gives the frozen encoder's embedding until it is trained. The trunk always runs in
eval mode (no dropout) under ``torch.no_grad``.

The whole network (``N = "all"``, :data:`~xmr.encoders.finetune.ALL`): the "trunk" is the
tokenizer alone (no weights load), its rows the ``length`` token ids then the ``length`` mask
values, float32 (ids < 2^24 are exact; 8 * length bytes per text), id
``<encoder id>/input-len<length>``; the tail is a trainable copy of the embeddings (word,
position and token-type tables, LayerNorm, dropout) + the 6 layers + the pooling, and its
:meth:`TextTail.features` trims the all-padding columns before the embeddings.

Gradient checkpointing (:meth:`TextTail.set_checkpointing`): each layer's activations are
recomputed in the backward pass (``torch.utils.checkpoint``; the dropout draw replayed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from xmr.encoders.base import TextEncoder
from xmr.encoders.finetune import ALL, TailDepth, checkpointed
from xmr.errors import XmrError

#: the cache dtype of token states
TEXT_TRUNK_DTYPE = "float16"
#: tokens per text when none is given (the emoji and icons names are at most 13)
DEFAULT_LENGTH = 64


def check_tail_layers(n_tail: object, n_layers: int, encoder: str = "all-minilm-l6-v2") -> int:
    """``n_tail`` as a checked int in 1..``n_layers``; anything else is a one-line XmrError."""
    if isinstance(n_tail, bool) or not isinstance(n_tail, int | np.integer) or not 1 <= int(n_tail) <= n_layers:
        raise XmrError(f"cannot fine-tune the last {n_tail!r} layers of {encoder}: it has {n_layers} layers, "
                       f"so N must be 1..{n_layers} or 'all' (N = 0 is the frozen encoder itself)")
    return int(n_tail)


def check_tail(n_tail: object, n_layers: int, encoder: str = "all-minilm-l6-v2") -> TailDepth:
    """:func:`check_tail_layers`, or ``"all"`` (:data:`~xmr.encoders.finetune.ALL`) as it is."""
    return ALL if isinstance(n_tail, str) and n_tail == ALL else check_tail_layers(n_tail, n_layers, encoder)


def check_length(length: object, max_length: int, encoder: str = "all-minilm-l6-v2") -> int:
    """``length`` (tokens per text, [CLS] and [SEP] included) as a checked int in 2..``max_length``."""
    if isinstance(length, bool) or not isinstance(length, int | np.integer) or not 2 <= int(length) <= max_length:
        raise XmrError(f"token length {length!r} for {encoder} must be an int in 2..{max_length} "
                       "([CLS] and [SEP] included)")
    return int(length)


def text_trunk_id(encoder_id: str, n_trunk: int | None, length: int) -> str:
    """The id token states are cached under: ``<encoder id>/trunk-<n_trunk>-len<length>``; ``n_trunk``
    None (the whole network): the token ids, ``<encoder id>/input-len<length>``."""
    return f"{encoder_id}/input-len{length}" if n_trunk is None else f"{encoder_id}/trunk-{n_trunk}-len{length}"


def bert_attention_mask(config: Any, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    """The attention mask a BertLayer takes, built as ``BertModel`` builds it (see the module docstring).

    Shape: ``states`` (B, L, H) (only its batch, length, dtype and device are read), ``mask``
    (B, L) 1 / True = a token -> transformers 5.x: whatever ``create_bidirectional_mask`` gives
    for ``config._attn_implementation`` (sdpa: bool (B, 1, L, L) or None); 4.x: additive (B, 1, 1, L).
    """
    mask = mask.to(device=states.device, dtype=torch.long)
    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError:  # transformers 4.x: BertModel.get_extended_attention_mask
        return (1.0 - mask[:, None, None, :].to(states.dtype)) * torch.finfo(states.dtype).min
    out: torch.Tensor | None = create_bidirectional_mask(config=config, inputs_embeds=states, attention_mask=mask)
    return out


def run_bert_layer(layer: nn.Module, states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """One BertLayer. Shape: (B, L, H) -> (B, L, H); a tuple output (transformers 4.x) gives its first item."""
    out = layer(states, attention_mask)
    return out[0] if isinstance(out, tuple) else out


def masked_mean_normalized(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' ``Pooling`` (mean over the mask) + ``Normalize`` (L2).

    Shape: (B, L, H), (B, L) -> (B, H): ``sum_t m_t h_t / max(sum_t m_t, 1e-9)``, then ``x / max(|x|, 1e-12)``.
    """
    m = mask.to(states.dtype).unsqueeze(-1)
    pooled = (states * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    return nn.functional.normalize(pooled, p=2, dim=1)


@runtime_checkable
class SplittableTextEncoder(Protocol):
    """A text encoder that can be cut into a frozen trunk and a trainable :class:`TextTail`.

    ``MiniLML6`` (``minilm-l6``) is one. ``dim`` is both the token state size and the pooled
    size; ``n_tail`` is checked by :func:`check_tail_layers`, ``length`` by :func:`check_length`.
    """

    encoder_id: str
    dim: int
    n_layers: int
    max_length: int
    default_batch_size: int

    def tokenize(self, texts: Sequence[str], length: int = DEFAULT_LENGTH) -> tuple[torch.Tensor, torch.Tensor]: ...

    def trunk(self, input_ids: torch.Tensor, mask: torch.Tensor, n_tail: int) -> torch.Tensor: ...

    def make_tail(self, n_tail: TailDepth, *, length: int = DEFAULT_LENGTH) -> TextTail: ...


class TextTail(nn.Module):
    """The trainable last ``n_tail`` BertLayers of a text encoder, its masked mean pooling and L2 norm
    (with ``embeddings``: the whole network from the token ids).

    Holds its own (deep-copied) layers: training it never changes the frozen encoder.
    ``forward``: token states (B, L, H) float32 + mask (B, L) -> unit embeddings (B, H), the
    frozen encoder's embeddings when nothing was trained (in eval mode: see the module docstring
    on dropout). ``L`` may be any length (``length`` is what :meth:`unflatten` reads).
    :meth:`features` takes the cached rows (states + mask, or with embeddings ids + mask).

    ``state_dict`` keys: ``layers.<j>.<library name>`` (``j`` = 0..n_tail-1, the tail's own
    order; e.g. ``layers.0.attention.self.query.weight``), with embeddings also
    ``embeddings.<library name>``; save it with :meth:`describe`, and load it into
    ``make_tail(n_tail)`` of the same encoder.

    Args:
        layers: the last ``n_tail`` BertLayers (copies), called as ``layer(states, attention_mask)``.
        config: the model config the layers were copied with (reads ``_attn_implementation``
            for :func:`bert_attention_mask`).
        encoder_id: the frozen encoder's id; ``trunk_id``: the id its token states are cached under.
        length: tokens per cached row (:meth:`unflatten`); ``hidden``: the state size (384).
        trim: drop the trailing columns where no text of the batch has a token before running
            the layers (the same result up to float rounding, less work).
        embeddings: the whole network: a copy of the model's embeddings module, called as
            ``embeddings(input_ids=..., token_type_ids=zeros)``. None: a tail of the last layers.
    """

    def __init__(self, layers: Sequence[nn.Module], *, config: Any, encoder_id: str, trunk_id: str,
                 length: int, hidden: int, trim: bool = True, embeddings: nn.Module | None = None) -> None:
        super().__init__()
        if not layers:
            raise XmrError("a text tail needs at least one layer")
        if embeddings is not None:
            self.embeddings = embeddings
        self.whole = embeddings is not None
        self.layers = nn.ModuleList(layers)
        self.config = config
        self.encoder_id, self.trunk_id = encoder_id, trunk_id
        self.length, self.hidden, self.dim = int(length), int(hidden), int(hidden)
        self.trim = trim
        self.checkpointing = False

    @property
    def n_tail(self) -> TailDepth:
        """Layers of the tail, or ``"all"`` for the whole network."""
        return ALL if self.whole else len(self.layers)

    def set_checkpointing(self, on: bool) -> None:
        """Gradient checkpointing per layer (train mode with grad only; see the module docstring)."""
        self.checkpointing = bool(on)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters by depth, input side first: [the embeddings (whole network only)], each layer."""
        groups = [list(self.embeddings.parameters())] if self.whole else []
        groups += [list(layer.parameters()) for layer in self.layers]
        return [[p for p in g if p.requires_grad] for g in groups]

    def unflatten(self, rows: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached trunk rows back to token states and mask (with embeddings: token ids and mask).

        Shape: (B, length * (H + 1)) any float -> states (B, length, H) float32, mask (B, length) bool;
        whole network: (B, 2 * length) -> ids (B, length) int64, mask (B, length) bool.
        """
        t = torch.from_numpy(np.asarray(rows)) if not isinstance(rows, torch.Tensor) else rows
        width = self.length if self.whole else self.length * self.hidden
        if t.ndim != 2 or t.shape[1] != width + self.length:
            what = "token ids" if self.whole else f"x {self.hidden}"
            raise XmrError(f"expected text trunk rows of shape (B, {width + self.length}) "
                           f"({self.length} tokens {what} + the mask), got {tuple(t.shape)}")
        mask = t[:, width:] > 0.5
        if self.whole:
            return t[:, :width].round().long(), mask
        return t[:, :width].float().reshape(len(t), self.length, self.hidden), mask

    def features(self, rows: torch.Tensor) -> torch.Tensor:
        """Unit text embeddings of cached rows. Shape: (B, trunk dim) -> (B, H) float32."""
        states, mask = self.unflatten(rows)
        if self.whole:
            states, mask = self._trimmed(states, mask)
            states = self.embeddings(input_ids=states, token_type_ids=torch.zeros_like(states))
        out: torch.Tensor = self(states, mask)
        return out

    def _trimmed(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` and ``mask`` without the trailing columns no text of the batch has a token in (``trim``)."""
        if not self.trim or not mask.shape[1]:
            return x, mask
        used = torch.nonzero(mask.bool().any(dim=0))
        keep = int(used.max()) + 1 if len(used) else 1
        return x[:, :keep], mask[:, :keep]

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unit text embeddings of token states. Shape: (B, L, H) float, (B, L) bool or 0/1 -> (B, H)."""
        if states.ndim != 3 or states.shape[2] != self.hidden or tuple(mask.shape) != tuple(states.shape[:2]):
            raise XmrError(f"expected token states (B, L, {self.hidden}) and a mask (B, L), "
                           f"got {tuple(states.shape)} and {tuple(mask.shape)}")
        states, mask = self._trimmed(states, mask)
        attention_mask = bert_attention_mask(self.config, states, mask)
        h = states
        on = self.checkpointing and self.training
        for layer in self.layers:
            h = checkpointed(run_bert_layer, layer, h, attention_mask, on=on)
        return masked_mean_normalized(h, mask)

    def describe(self) -> dict[str, object]:
        """What to save with a run next to :meth:`state_dict` (JSON-able)."""
        return {"encoder_id": self.encoder_id, "trunk_id": self.trunk_id, "n_tail": self.n_tail,
                "length": self.length, "hidden": self.hidden, "dim": self.dim}


class TextTrunkEncoder(TextEncoder):
    """The frozen trunk of ``base`` as a cacheable text encoder: texts -> token states + mask rows.

    ``encode_batch``: texts -> (B, length * (H + 1)) float16 (the layout of the module
    docstring; ``describe()`` says ``"dtype": "float16"``, so the feature cache keeps them in
    float16); ``"all"``: (B, 2 * length) float32 token ids + mask. ``encoder_id`` =
    ``<base id>/trunk-<n_layers - n_tail>-len<length>`` (``"all"``: ``<base id>/input-len<length>``).
    Building one loads no weights (the row size is known), so a bad ``n_tail`` or ``length`` is
    refused at once.

    Args:
        base: a :class:`SplittableTextEncoder` (``minilm-l6``); any other is a one-line XmrError.
        n_tail: layers of the trainable tail, 1..``base.n_layers``, or ``"all"``.
        length: tokens per text (padded / truncated), 2..``base.max_length``.
    """

    def __init__(self, base: TextEncoder, n_tail: TailDepth, length: int = DEFAULT_LENGTH) -> None:
        if not isinstance(base, SplittableTextEncoder):
            raise XmrError(f"text encoder {getattr(base, 'encoder_id', base)!r} cannot be split into a frozen "
                           "trunk and a trainable tail (minilm-l6 can)")
        self.base = base
        self.n_tail = check_tail(n_tail, base.n_layers, base.encoder_id)
        self.length = check_length(length, base.max_length, base.encoder_id)
        self.whole = self.n_tail == ALL
        self.n_trunk = 0 if self.whole else base.n_layers - int(self.n_tail)
        self.hidden = base.dim
        self.dim = 2 * self.length if self.whole else self.length * (self.hidden + 1)
        self.default_batch_size = base.default_batch_size
        self.encoder_id = text_trunk_id(base.encoder_id, None if self.whole else self.n_trunk, self.length)

    def model_tail(self, name: str) -> tuple[int, dict[str, object]]:
        """What a model trained on these rows needs (the capability of an encoder that feeds a trainable
        tail): the size of the tail's output, the head's input, and the tail's spec
        (``ModelConfig.text_tail``, ``name`` the registered base encoder)."""
        return self.hidden, {"encoder": name, "n_tail": self.n_tail, "length": self.length, "trunk_id": self.encoder_id}

    def texts_cut(self, texts: Sequence[str]) -> int:
        """How many of ``texts`` are longer than :attr:`length` tokens (cut there: their rows differ from
        the frozen encoder's)."""
        _, mask = self.base.tokenize(list(texts), self.length + 1)
        return int((mask[:, -1] > 0).sum())

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        """Token states after the trunk, then the mask. Returns float16 (len(inputs), length * (H + 1));
        ``"all"``: the token ids, then the mask, float32 (len(inputs), 2 * length)."""
        input_ids, mask = self.base.tokenize([str(t) for t in inputs], self.length)
        if self.whole:
            return torch.cat([input_ids, mask], dim=1).to(torch.float32).numpy()
        states = self.base.trunk(input_ids, mask, int(self.n_tail))  # on the base's device
        rows = torch.cat([states.reshape(len(states), -1), mask.to(states)], dim=1)
        return rows.to(torch.float16).cpu().numpy()

    def to_device(self, device: torch.device) -> None:
        """Run the frozen trunk on ``device`` (the base's network moves; rows still come back as CPU numpy)."""
        move = getattr(self.base, "to_device", None)
        if move is not None:
            move(device)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "dtype": "float32" if self.whole else TEXT_TRUNK_DTYPE, "length": self.length,
                "hidden": self.hidden}

    def make_tail(self) -> TextTail:
        """The trainable tail that takes this trunk's rows (a fresh copy each call)."""
        return self.base.make_tail(self.n_tail, length=self.length)
