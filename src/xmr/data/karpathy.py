"""Reader for the Karpathy split files of COCO, Flickr30k and Flickr8k.

The files (``dataset_coco.json``, ``dataset_flickr30k.json``, ``dataset_flickr8k.json``) come from
Karpathy & Fei-Fei, "Deep Visual-Semantic Alignments for Generating Image Descriptions" (CVPR
2015) and fix the train/val/test images most image-text retrieval papers report on::

    {"dataset": "coco",
     "images": [{"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg",
                 "split": "test", "imgid": 0, "cocoid": 391895, "sentids": [0, 1, 2, 3, 4],
                 "sentences": [{"raw": "A man riding a bike.", "tokens": ["a", "man", ...]}, ...]},
                ...]}

Example::

    items = read_karpathy("dataset_flickr30k.json", image_root="flickr30k-images")
    test = select_split(items, "test")      # 1,000 images, 5 captions each
"""

from __future__ import annotations

import logging
from pathlib import Path

from xmr.data.manifest import Item, collect_items
from xmr.errors import XmrError
from xmr.utils.io import load_json

log = logging.getLogger(__name__)

#: Karpathy's "restval" images (COCO val2014 images outside the 5k val/test) are training data.
SPLIT_ALIASES = {"restval": "train"}


def _image_name(entry: object, index: int) -> str:
    """A name for the ``index``-th image entry to put in error messages."""
    if isinstance(entry, dict) and entry.get("filename"):
        return repr(str(entry["filename"]))
    return f"#{index}"


def _sentence_text(sentence: object) -> str:
    """The caption of one sentence object: ``raw`` stripped, else the tokens joined by spaces."""
    if isinstance(sentence, str):
        return sentence.strip()
    if not isinstance(sentence, dict):
        return ""
    raw = sentence.get("raw")
    if isinstance(raw, str) and raw.strip():
        return raw.strip()
    tokens = sentence.get("tokens")
    if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        return " ".join(tokens).strip()
    return ""


def _item_from_entry(entry: object, index: int, image_root: Path, where: str) -> Item:
    """Build the :class:`Item` for one entry of ``images``; raise XmrError naming a bad entry."""
    name = _image_name(entry, index)
    if not isinstance(entry, dict):
        raise XmrError(f"{where}: image {name} is not a JSON object")
    filename = entry.get("filename")
    if not isinstance(filename, str) or not filename.strip():
        raise XmrError(f"{where}: image {name} has no 'filename'")
    sentences = entry.get("sentences")
    if not isinstance(sentences, list) or not sentences:
        raise XmrError(f"{where}: image {name} has no sentences")
    texts = tuple(_sentence_text(s) for s in sentences)
    if not all(texts):
        raise XmrError(f"{where}: image {name} has an empty sentence")
    filepath = entry.get("filepath") or ""
    image = image_root / str(filepath) / filename
    # imgid 0 is a real id, so test for None rather than truthiness.
    ident = next((entry[k] for k in ("cocoid", "imgid") if entry.get(k) is not None), filename)
    split = entry.get("split")
    if split is not None:
        split = SPLIT_ALIASES.get(str(split), str(split))
    return Item(id=str(ident), image=str(image), texts=texts, split=split)


def read_karpathy(path: str | Path, *, image_root: str | Path | None = None,
                  skip_bad: bool = False) -> list[Item]:
    """Read a Karpathy split JSON file into items, one per image.

    Args:
        path: ``dataset_coco.json``, ``dataset_flickr30k.json`` or ``dataset_flickr8k.json``.
        image_root: folder the images live under; an image's path is
            ``image_root / filepath / filename`` (``filepath`` is e.g. ``val2014`` for COCO and
            absent for Flickr). Defaults to the JSON file's folder.
        skip_bad: if True, images with no sentences, an empty sentence, no filename or a
            duplicate id are skipped with one warning giving the count and the first offender;
            otherwise the first such image raises :class:`XmrError` naming it.

    Returns:
        Items in file order: ``id`` is ``cocoid``, else ``imgid``, else the filename (as a
        string); ``texts`` are the raw sentences, stripped; ``split`` is ``train``/``val``/``test``
        (``restval`` becomes ``train``). ``image`` paths are absolute; existence is not checked.
    """
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise XmrError(f"{path}: not a Karpathy split file (no 'images' list)")
    root = Path(image_root) if image_root is not None else path.parent
    root = root.expanduser().resolve()
    where = str(path)
    candidates = ((f"{where}: image {_image_name(entry, i)}",
                   lambda entry=entry, i=i: _item_from_entry(entry, i, root, where))
                  for i, entry in enumerate(data["images"]))
    return collect_items(candidates, source=path, skip_bad=skip_bad, what="image")
