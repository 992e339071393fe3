"""Composed-query datasets: (source image, modification text, target image) triplets.

A composed dataset is an ordinary manifest of images (:mod:`xmr.data.manifest`) plus a JSONL file
of triplets that refer to its item ids::

    {"source": "scene-00012", "text": "make the small cube red", "target": "scene-00107", "split": "train"}

The target *identity* is the target item's ``group`` (or its id when it has none): several images
may show the same scene, and retrieving any of them is a hit (the CSS protocol). The query's own
source image is excluded from its ranking.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from xmr.data.manifest import Item
from xmr.errors import XmrError
from xmr.utils.files import LIMITS, check_input_file
from xmr.utils.io import atomic_write_text

TRIPLET_FIELDS = ("source", "text", "target", "split")


@dataclass(frozen=True)
class EditTriplet:
    """One composed query and its answer.

    Attributes:
        source: item id of the source image.
        text: the modification text ("make it red", "medium-dark skin tone").
        target: item id of the target image.
        split: ``train`` / ``val`` / ``test``.
    """

    source: str
    text: str
    target: str
    split: str | None = None

    def __post_init__(self) -> None:
        for name in ("source", "target"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise XmrError(f"triplet {self.source!r} -> {self.target!r}: {name!r} must be a non-empty item id")
        if not isinstance(self.text, str) or not self.text.strip():
            raise XmrError(f"triplet {self.source!r} -> {self.target!r}: empty modification text")


def write_triplets(triplets: Iterable[EditTriplet], path: str | Path) -> Path:
    """Write triplets as JSONL, atomically."""
    path = Path(path)
    atomic_write_text(path, "".join(json.dumps(asdict(t), ensure_ascii=False) + "\n" for t in triplets))
    return path


def read_triplets(path: str | Path, items: Mapping[str, object] | Sequence[Item] | None = None
                  ) -> list[EditTriplet]:
    """Read a triplet JSONL file; with ``items``, every id must name one of them.

    Raises:
        XmrError: a malformed line or an unknown item id, naming the line.
    """
    path = Path(path)
    check_input_file(path, "triplet file", max_bytes=LIMITS.text_bytes)
    known = None if items is None else (set(items) if isinstance(items, Mapping) else {it.id for it in items})
    out: list[EditTriplet] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            t = EditTriplet(**{k: row[k] for k in TRIPLET_FIELDS if k in row})
        except (json.JSONDecodeError, TypeError) as e:
            raise XmrError(f"{path}:{n}: not a triplet ({e})") from None
        if known is not None:
            for ident in (t.source, t.target):
                if ident not in known:
                    raise XmrError(f"{path}:{n}: unknown item id {ident!r}")
        out.append(t)
    return out


def target_identity(item: Item) -> str:
    """What counts as "the same target": the item's group, else its id."""
    return item.group or item.id
