"""A fine-tuned ``hf-clip:PATH`` run's towers as a whole transformers checkpoint folder.

A fine-tuned run saves only its tails (:mod:`xmr.encoders.hf_clip_tails`) and the checkpoint's
id; :func:`write_merged_checkpoint` writes the whole model, the checkpoint's weights with the tails'
layers, norms, pooling and projections copied in, plus the checkpoint's tokenizer and image
processor files: ``hf-clip:OUT`` (or ``from_pretrained(OUT)``) then gives, frozen, the features the
run's tails give (its image and text features before the run's heads; with ``--head identity`` the
run's own space). ``logit_scale`` becomes the run's learned one.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch
from torch import nn

from xmr.encoders.hf_clip import FAMILY, Checkpoint
from xmr.encoders.hf_clip_tails import ARCHS, HfClipImageTail, HfClipTextTail
from xmr.errors import XmrError
from xmr.utils.folders import atomic_folder

#: files of a checkpoint folder that ``save_pretrained`` writes anew (the rest is copied: tokenizer, processor)
_REWRITTEN_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack")


def _merge_side(model: nn.Module, tail: HfClipImageTail | HfClipTextTail, arch_name: str) -> None:
    """Copy ``tail``'s weights into its tower of ``model`` (in place): its last layers, head, [input layer]."""
    arch = ARCHS[arch_name]
    first, layers, head = (arch.vision if isinstance(tail, HfClipImageTail) else arch.text)(model)
    n_trunk = len(layers) - len(tail.layers)
    if n_trunk < 0:
        raise XmrError(f"a tail of {len(tail.layers)} layers does not fit a tower of {len(layers)}")
    for j, layer in enumerate(tail.layers):
        layers[n_trunk + j].load_state_dict(layer.state_dict())
    head.load_state_dict(tail.head.state_dict())
    own_first = tail.stem if isinstance(tail, HfClipImageTail) else tail.embeddings
    if own_first is not None:
        first.load_state_dict(own_first.state_dict())


def merged_model(ckpt: Checkpoint, tails: dict[str, nn.Module | None],
                 log_logit_scale: float | None = None) -> nn.Module:
    """A copy of the checkpoint's model with ``tails`` (``{"image": tail or None, "text": ...}``) merged in,
    and ``logit_scale`` set to ``log_logit_scale`` when given (CLIP and SigLIP keep the log of the scale)."""
    arch_name = str(ckpt.config.get("model_type"))
    if arch_name not in ARCHS:
        raise XmrError(f"cannot merge fine-tuned layers into a {arch_name!r} checkpoint ({', '.join(ARCHS)} only)")
    model = copy.deepcopy(ckpt.model).cpu()
    for side, tail in tails.items():
        if tail is None:
            continue
        if not isinstance(tail, HfClipImageTail | HfClipTextTail):
            raise XmrError(f"the {side} tail is a {type(tail).__name__}, not a tail of a {FAMILY} checkpoint")
        _merge_side(model, tail, arch_name)
    scale = getattr(model, "logit_scale", None)
    if log_logit_scale is not None and isinstance(scale, torch.Tensor):
        with torch.no_grad():
            scale.fill_(float(log_logit_scale))
    return model


def write_merged_checkpoint(ckpt: Checkpoint, model: nn.Module, out: str | Path) -> Path:
    """``model`` saved as a transformers folder at ``out`` (written whole or not at all), with the
    checkpoint's other files (tokenizer, image processor) copied beside it."""
    out = Path(out)
    with atomic_folder(out) as tmp:
        for p in sorted(ckpt.path.iterdir()):
            if p.is_file() and not p.name.startswith(".") and p.name != "config.json" \
                    and not p.name.endswith(_REWRITTEN_SUFFIXES) and not p.name.endswith(".index.json"):
                shutil.copy2(p, tmp / p.name)
        model.save_pretrained(tmp)  # type: ignore[operator]  # a transformers PreTrainedModel
    return out
