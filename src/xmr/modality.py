"""The one modality type: ``"image"`` or ``"text"``, checked where a caller hands one in.

A search *target* names the gallery a search returns, ``"images"`` or ``"texts"`` (the index's
folders, ``--target``, a re-ranker's side): it is derived from the modality of that gallery's
items (:func:`target_of`, :func:`modality_of_target`), never compared as a second spelling.
"""

from __future__ import annotations

from typing import Literal

from xmr.errors import XmrError

Modality = Literal["image", "text"]
MODALITIES: tuple[Modality, ...] = ("image", "text")

Target = Literal["images", "texts"]
TARGETS: tuple[Target, ...] = ("images", "texts")
#: results a search returns unless told: the one source of ``Searcher``'s, ``xmr search``'s and the
#: service's ``k`` (here, beside ``Target``, so that the CLI reads it without loading torch)
DEFAULT_K = 10
_TARGET_OF: dict[Modality, Target] = {"image": "images", "text": "texts"}
_MODALITY_OF: dict[Target, Modality] = {t: m for m, t in _TARGET_OF.items()}


def check_modality(value: object, what: str = "modality") -> Modality:
    """``value`` if it is a modality; anything else (``"images"``, ``None`` ...) is an XmrError naming it."""
    if value not in MODALITIES:
        hint = f" (the modality of the {value} gallery is {_MODALITY_OF[value]!r})" if value in TARGETS else ""
        raise XmrError(f"{what} must be 'image' or 'text', got {value!r}{hint}")
    return value


def check_target(value: object, what: str = "search target") -> Target:
    """``value`` if it names a gallery (``"images"`` / ``"texts"``); anything else is an XmrError naming it."""
    if value not in TARGETS:
        hint = f" (the gallery of {value} items is {_TARGET_OF[value]!r})" if value in MODALITIES else ""
        raise XmrError(f"unknown {what} {value!r}; use 'images' or 'texts'{hint}")
    return value


def target_of(modality: Modality) -> Target:
    """The gallery holding items of ``modality``: ``"image"`` -> ``"images"``."""
    return _TARGET_OF[check_modality(modality)]


def modality_of_target(target: Target) -> Modality:
    """The modality of the items of gallery ``target``: ``"texts"`` -> ``"text"``."""
    return _MODALITY_OF[check_target(target)]
