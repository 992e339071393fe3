"""The one modality type: ``"image"`` or ``"text"``, checked where a caller hands one in."""

from __future__ import annotations

from typing import Literal

from xmr.errors import XmrError

Modality = Literal["image", "text"]
MODALITIES: tuple[Modality, ...] = ("image", "text")


def check_modality(value: object, what: str = "modality") -> Modality:
    """``value`` if it is a modality; anything else (``"images"``, ``None`` ...) is an XmrError naming it."""
    if value not in MODALITIES:
        raise XmrError(f"{what} must be 'image' or 'text', got {value!r}")
    return value
