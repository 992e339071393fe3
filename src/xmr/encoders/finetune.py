"""What it takes for an encoder to be fine-tuned: the capability every splittable encoder declares.

An encoder that can be fine-tuned is cut at a depth into a frozen *trunk*, run once per input and
cached like features, and a trainable *tail* trained with the heads (dual-path paper, Sec. III-C:
Stage II fine-tunes the whole CNN; here the whole network is ``"all"``)::

    depth = tail_depth("efficientnet-lite0", "image")      # 16 blocks; None: cannot be fine-tuned
    trunk = encoder.trunk_encoder(3)                       # an Encoder: cacheable rows per input
    tail = trunk.make_tail()                               # an EncoderTail (an nn.Module)
    feats = tail.features(rows)                            # (B, trunk.dim) cached rows -> (B, out) with grad

``n_tail`` is an int 1..depth (the last N blocks / layers; the frozen part below is cached), or
:data:`ALL`: the whole network, its input layer (the stem, the token embeddings) included; the
trunk then caches the network's *input* (preprocessed pixels, token ids). 0 is no tail (the frozen
encoder itself).

Who declares it: a registered encoder class with a class attribute ``finetune_depth`` (int) and a
``trunk_encoder(n_tail, **options)`` method; a family (``hf-clip:PATH``) through
:attr:`~xmr.encoders.base.EncoderFamily.depth`, read from its argument without loading weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from xmr.encoders.base import EncoderFamily, resolve_encoder
from xmr.errors import XmrError
from xmr.modality import Modality

#: fine-tune the whole network, input layer included
ALL: Literal["all"] = "all"

TailDepth = int | Literal["all"]


def parse_depth(value: object, what: str = "N") -> TailDepth:
    """``"all"`` or a non-negative int from a CLI string, a JSON value or an int; else an XmrError."""
    if value == ALL:
        return ALL
    if isinstance(value, bool):
        raise XmrError(f"{what} must be a count or 'all', got {value!r}")
    if isinstance(value, int | np.integer):
        n = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        n = int(value.strip())
    else:
        raise XmrError(f"{what} must be a count or 'all', got {value!r}")
    if n < 0:
        raise XmrError(f"{what} must be >= 0 or 'all', got {n}")
    return n


def check_depth(n_tail: object, depth: int, encoder: str, unit: str = "blocks", lo: int = 0) -> TailDepth:
    """``n_tail`` checked against an encoder of ``depth`` blocks / layers: ``lo``..depth or ``"all"``
    (``lo`` 1: where the caller has already taken 0 as "no tail")."""
    n = parse_depth(n_tail)
    if n != ALL and not lo <= int(n) <= depth:
        zero = "0: the frozen features" if lo == 0 else "N = 0 is the frozen encoder itself"
        raise XmrError(f"cannot fine-tune the last {n} {unit} of {encoder}: it has {depth} {unit}, "
                       f"so N must be {lo}..{depth} or 'all' ({zero})")
    return n


def tail_depth(name: str, side: Modality) -> int | None:
    """How many blocks / layers the encoder ``name`` (a registered name or a family member) can fine-tune
    on ``side``; None when it cannot be fine-tuned. Loads no weights."""
    entry, arg = resolve_encoder(name)
    if isinstance(entry, EncoderFamily):
        return None if entry.depth is None or arg is None else entry.depth(arg, side)
    depth = getattr(entry, "finetune_depth", None)
    return depth if isinstance(depth, int) and not isinstance(depth, bool) else None


@runtime_checkable
class EncoderTail(Protocol):
    """A trainable tail (an ``nn.Module``): cached trunk rows in, the encoder's features out.

    ``features``: (B, trunk dim) rows as cached (any float dtype) -> (B, dim) float32 with grad.
    ``layer_groups``: its parameters grouped by depth, input side first (layer-wise learning-rate
    decay gives the last group the full rate); every trainable parameter in exactly one group.
    ``set_checkpointing``: gradient checkpointing per block / layer (``torch.utils.checkpoint``:
    activations recomputed in the backward pass), effective only in train mode with grad enabled.
    ``describe``: what to save beside its weights.
    """

    dim: int

    def features(self, rows: torch.Tensor) -> torch.Tensor: ...

    def layer_groups(self) -> Sequence[Sequence[torch.nn.Parameter]]: ...

    def set_checkpointing(self, on: bool) -> None: ...

    def describe(self) -> dict[str, object]: ...


def trunk_of(encoder: object, n_tail: TailDepth, **options: Any) -> Any:
    """``encoder.trunk_encoder(n_tail, **options)``: the cacheable trunk of an encoder that declares the
    capability; any other encoder is a one-line XmrError. ``n_tail``: 1..depth or :data:`ALL`."""
    make = getattr(encoder, "trunk_encoder", None)
    if make is None:
        raise XmrError(f"encoder {getattr(encoder, 'encoder_id', encoder)!r} cannot be fine-tuned (it declares no "
                       "trunk / tail split; efficientnet-lite0/1/2, efficientnet-lite0-fne, minilm-l6 and "
                       "hf-clip:PATH do)")
    return make(n_tail, **options)


def checkpointed(fn: Callable[..., torch.Tensor], *args: Any, on: bool, **kwargs: Any) -> torch.Tensor:
    """``fn(*args, **kwargs)``, under gradient checkpointing when ``on`` and grad is enabled (the caller
    checks train mode). Non-reentrant; the RNG state is replayed, so dropout / drop-connect masks of
    the recomputation are the forward's own."""
    if on and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint

        out: torch.Tensor = checkpoint(fn, *args, use_reentrant=False, **kwargs)
        return out
    return fn(*args, **kwargs)
