"""Sparse parallel corpora: keep texts for a seeded fraction of training images only.

A3VSE [Huang et al., "Annotation Efficient Cross-Modal Retrieval with Adversarial Attentive
Alignment", MM 2019, Sec. 4.1] trims the training split once, at random, to 10 %, 20 % or 50 %
of its images and keeps 1, 2 or all 5 sentences of each kept image; every other training image
stays in the corpus *un-annotated* (the pool for pseudo-texts, see :mod:`xmr.semantics`).

Spec strings, as the CLI will take them (``--sparse 0.1x1``)::

    "0.1x1"    10 % of training images, one text each
    "0.2x2"    20 %, two texts each
    "0.5xall"  50 %, all their texts

Counts are exact: ``n_keep = floor(fraction * n + 0.5)`` of the ``n`` training images (round
half up), but at least one when ``n > 0``. Which images, and which of their texts, depends only
on ``seed`` and the item ids (candidates are sorted by id first), never on input order.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from xmr.data.manifest import Item
from xmr.errors import XmrError

_SPEC = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*x\s*([0-9]+|all)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class SparseSpec:
    """How sparse: the annotated fraction of training images and texts kept per image.

    Attributes:
        fraction: share of training images that keep texts, in (0, 1].
        texts_per_image: texts kept per annotated image (None: all of them).
    """

    fraction: float
    texts_per_image: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, int | float) \
                or not 0 < self.fraction <= 1:
            raise XmrError(f"fraction must be in (0, 1], got {self.fraction!r}")
        if self.texts_per_image is not None and (
                isinstance(self.texts_per_image, bool) or not isinstance(self.texts_per_image, int)
                or self.texts_per_image < 1):
            raise XmrError(f"texts_per_image must be a positive integer or None, "
                             f"got {self.texts_per_image!r}")

    @classmethod
    def parse(cls, text: str) -> SparseSpec:
        """Parse ``"<fraction>x<texts per image|all>"``, e.g. ``"0.1x1"`` or ``"0.5xall"``.

        Raises:
            XmrError: the string is malformed or out of range (quoted in the message).
        """
        m = _SPEC.match(text) if isinstance(text, str) else None
        if m is None:
            raise XmrError(f"bad sparse spec {text!r}: expected FRACTIONxTEXTS such as 0.1x1, "
                           "0.2x2 or 0.5xall")
        texts = None if m.group(2).lower() == "all" else int(m.group(2))
        try:
            return cls(float(m.group(1)), texts)
        except ValueError as e:
            raise XmrError(f"bad sparse spec {text!r}: {e}") from None

    def __str__(self) -> str:
        return f"{self.fraction:g}x{'all' if self.texts_per_image is None else self.texts_per_image}"

    def n_kept(self, n: int) -> int:
        """How many of ``n`` candidates keep texts (round half up, at least 1 when n > 0)."""
        return 0 if n <= 0 else max(1, min(n, math.floor(self.fraction * n + 0.5)))


@dataclass(frozen=True)
class SparseCorpus:
    """The result of :func:`sparsify`: all items plus a record of what was kept.

    Attributes:
        items: every input item, in input order; un-annotated training items have ``texts=()``.
        spec: the spec applied.
        seed: the seed used.
        annotated: ids of the training items that kept texts.
        unannotated: ids of the training items whose texts were dropped.
    """

    items: tuple[Item, ...]
    spec: SparseSpec
    seed: int
    annotated: frozenset[str]
    unannotated: frozenset[str]

    @property
    def n_pairs(self) -> int:
        """Image-text pairs left in the annotated training items."""
        return sum(len(it.texts) for it in self.items if it.id in self.annotated)

    def summary(self) -> dict[str, object]:
        """JSON-ready record, to save next to a run trained on this corpus."""
        return {"spec": str(self.spec), "seed": self.seed, "annotated": len(self.annotated),
                "unannotated": len(self.unannotated), "pairs": self.n_pairs,
                "annotated_ids": sorted(self.annotated)}


def sparsify(items: Sequence[Item], spec: SparseSpec | str, *, seed: int,
             split: str | None = "train", by_group: bool = False) -> SparseCorpus:
    """Drop the texts of all but a seeded fraction of training images [A3VSE Sec. 4.1].

    Args:
        items: manifest items, one per image (see :class:`~xmr.data.manifest.Item`).
        spec: a :class:`SparseSpec` or its string form (``"0.1x1"``).
        seed: seeds the choice of images and of the texts kept per image.
        split: only items of this split are thinned (None: every item); others pass unchanged.
        by_group: draw the fraction over ``Item.group`` values instead of images, so all
            drawings of one thing (e.g. one emoji in four styles) are annotated or none is;
            items without a group count as their own group.

    Returns:
        A :class:`SparseCorpus`. Training items without texts to begin with are counted as
        candidates but stay empty; an annotated image with fewer texts than asked keeps all.

    Raises:
        XmrError: the spec string is malformed.
    """
    if isinstance(spec, str):
        spec = SparseSpec.parse(spec)
    candidates = [it for it in items if split is None or it.split == split]
    unit = (lambda it: it.group or f"\0{it.id}") if by_group else (lambda it: it.id)
    units = sorted({unit(it) for it in candidates})
    rng = random.Random(seed)
    kept_units = set(rng.sample(units, spec.n_kept(len(units))))
    annotated = {it.id for it in candidates if unit(it) in kept_units}
    out: list[Item] = []
    for it in items:
        if not (split is None or it.split == split):
            out.append(it)
        elif it.id not in annotated:
            out.append(replace(it, texts=()))
        else:
            out.append(replace(it, texts=_keep_texts(it, spec.texts_per_image, seed)))
    return SparseCorpus(items=tuple(out), spec=spec, seed=seed, annotated=frozenset(annotated),
                        unannotated=frozenset(it.id for it in candidates) - annotated)


def _keep_texts(item: Item, k: int | None, seed: int) -> tuple[str, ...]:
    """``k`` of the item's texts, chosen by a generator seeded with (seed, id); order kept."""
    if k is None or len(item.texts) <= k:
        return item.texts
    chosen = sorted(random.Random(f"{seed}/{item.id}").sample(range(len(item.texts)), k))
    return tuple(item.texts[i] for i in chosen)
