"""Masks shared by the in-batch losses."""

from __future__ import annotations

import torch

from xmr.errors import XmrError


def extra_positives(batch: int, device: torch.device, *keys: torch.Tensor | None) -> torch.Tensor:
    """Bool (B, B): True where i != j but pair j also matches pair i.

    Two in-batch pairs match when they agree on any of ``keys`` (each a (B,) id tensor), e.g.
    the same group (one emoji drawn in two styles shares its texts) or the same text string.
    Such pairs are positives in disguise, so the losses must not push them apart. With no keys
    nothing is masked.
    """
    mask = torch.zeros(batch, batch, dtype=torch.bool, device=device)
    for key in keys:
        if key is None:
            continue
        if key.shape != (batch,):
            raise XmrError(f"pair ids must have shape ({batch},), got {tuple(key.shape)}")
        mask |= key[:, None] == key[None, :]
    return mask & ~torch.eye(batch, dtype=torch.bool, device=device)


def check_pair(img: torch.Tensor, txt: torch.Tensor) -> None:
    if img.ndim != 2 or img.shape != txt.shape:
        raise XmrError(f"image and text embeddings must both be (B, d); got {tuple(img.shape)} "
                         f"and {tuple(txt.shape)}")
