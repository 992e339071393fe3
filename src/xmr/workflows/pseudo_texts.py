"""Pseudo-texts for un-annotated training images (A3VSE Sec. 3.2 / 4.3), as ``xmr train`` makes them.

``regional``: the ImageNet labeller on a 2 x 2 grid of crops, each crop's top-1 label, all
labels ordered by confidence and joined into one "sentence" (the paper concatenates the labels of
detected regions). ``global``: the top-5 labels of the whole image. Labels are WordNet lemmas of
the ImageNet classes (:mod:`xmr.semantics`); probabilities are cached under
``<cache root>/semantics``, so a resumed or repeated run labels nothing twice.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

from xmr.data.manifest import Item
from xmr.errors import XmrError
from xmr.semantics.labeller import PSEUDO_TEXT_KINDS, ImageNetLabeller, pseudo_text
from xmr.utils.paths import default_cache_dir
from xmr.utils.progress import progress

log = logging.getLogger(__name__)

REGION_GRID = (2, 2)
REGION_TOP_K = 1
GLOBAL_TOP_K = 5
_CHUNK = 256  # images per labeller call: the cache keeps every finished chunk


def make_pseudo_items(items: Sequence[Item], kind: str, *, cache_dir: str | Path | None = None,
                      labeller: ImageNetLabeller | None = None) -> list[Item]:
    """Each item with one text: its pseudo-text. Items whose labels are all empty are left out.

    Args:
        items: un-annotated images (their ``texts`` are ignored).
        kind: ``"regional"`` or ``"global"``.
        cache_dir: the cache root (None: ``$XMR_CACHE_DIR`` or the user cache).
        labeller: the labeller (None: EfficientNet-Lite0 ImageNet labels named by WordNet;
            needs ``make data``).

    Returns:
        Items in input order, ``texts = (pseudo-text,)``.
    """
    if kind not in PSEUDO_TEXT_KINDS:
        raise XmrError(f"pseudo-texts must be one of {', '.join(PSEUDO_TEXT_KINDS)}, got {kind!r}")
    if labeller is None:
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        labeller = ImageNetLabeller(cache_dir=root / "semantics")
    out: list[Item] = []
    chunks = range(0, len(items), _CHUNK)
    for start in progress(chunks, desc=f"{kind} pseudo-texts", unit=f"x{_CHUNK} images"):
        chunk = list(items[start:start + _CHUNK])
        paths = [it.image for it in chunk]
        labels = labeller.regional_labels(paths, grid=REGION_GRID, top_k=REGION_TOP_K) if kind == "regional" \
            else labeller.global_labels(paths, top_k=GLOBAL_TOP_K)
        out += [dataclasses.replace(it, texts=(text,)) for it, lab in zip(chunk, labels)
                if (text := pseudo_text(lab).strip())]
        log.info("%s pseudo-texts: %d / %d images labelled", kind, min(start + _CHUNK, len(items)), len(items))
    if len(out) < len(items):
        log.warning("%d of %d un-annotated images got no pseudo-text and are left out", len(items) - len(out),
                    len(items))
    return out
