"""One entry point for every dataset file format xmr reads.

``read_items(path)`` picks the reader from the file itself: ``.csv`` and ``.jsonl`` are xmr
manifests; a ``.json`` file holding one object with an ``images`` list is a Karpathy split file
(``dataset_coco.json``, ``dataset_flickr30k.json``, ``dataset_flickr8k.json``); any other
``.json`` is read as a JSONL manifest. ``format=`` overrides the choice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from xmr.data.karpathy import read_karpathy
from xmr.data.manifest import Item, check_manifest_file, read_manifest
from xmr.errors import XmrError
from xmr.registry import Registry

READERS: Registry[Callable[..., list[Item]]] = Registry("dataset format")
READERS.add("manifest", lambda path, image_root=None, skip_bad=False: read_manifest(path, skip_bad=skip_bad))
READERS.add("karpathy", read_karpathy)


def detect_format(path: Path) -> str:
    """``karpathy`` for a Karpathy split file, else ``manifest``."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return "manifest"
    with open(path, encoding="utf-8", errors="replace") as fh:  # bad bytes are reported by the reader
        head = fh.read(4096).lstrip().lstrip("\ufeff")
    # a JSONL manifest's first line is a whole object; a Karpathy file is one object over many lines
    first_line = head.split("\n", 1)[0]
    return "karpathy" if head.startswith("{") and '"images"' in head and not first_line.rstrip().endswith("}") \
        else "manifest"


def read_items(path: str | Path, *, format: str | None = None, image_root: str | Path | None = None,
               skip_bad: bool = False) -> list[Item]:
    """Items of a manifest or Karpathy file (see the module docstring for how the format is chosen).

    Args:
        path: the dataset file.
        format: ``manifest`` or ``karpathy``; None detects it.
        image_root: Karpathy only: the folder the images live under (default: the file's folder).
        skip_bad: skip bad rows with one warning and a count instead of raising.
    """
    path = Path(path)
    check_manifest_file(path)
    fmt = format or detect_format(path)
    if fmt == "manifest" and image_root is not None:
        raise XmrError("image_root applies to Karpathy files only; manifest paths are relative to the manifest")
    return READERS.get(fmt)(path, image_root=image_root, skip_bad=skip_bad)
