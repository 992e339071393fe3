"""Items -> cached encoder features for their images and their (deduplicated) texts."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from xmr.data.manifest import Item
from xmr.encoders import ImageEncoder, TextEncoder, encode_images, encode_texts
from xmr.encoders.image_io import UnreadableImage
from xmr.errors import Param, XmrError
from xmr.evaluation.protocol import build_text_queries
from xmr.utils.io import atomic_write_text
from xmr.utils.paths import default_cache_dir

SKIPPED_FILE = "skipped.jsonl"

log = logging.getLogger(__name__)


def feature_cache_dir(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "features"


@dataclass(frozen=True)
class FeatureSet:
    """Encoder features of a set of items and of their text pool.

    Attributes:
        items: the items whose image could be read (unreadable ones are dropped and counted).
        image_feats: Shape: (n_items, image_dim).
        texts: distinct texts of the items (see :func:`build_text_queries`).
        text_feats: Shape: (n_texts, text_dim).
        relevance: True where text t belongs to item i. Shape: (n_items, n_texts), CSR.
        skipped: with ``skip_bad``, the items left out: ``{"id", "image", "reason"}`` each.
    """

    items: list[Item]
    image_feats: np.ndarray
    texts: list[str]
    text_feats: np.ndarray
    relevance: sparse.csr_matrix
    skipped: tuple[dict[str, str], ...] = ()

    def group_ids(self) -> np.ndarray:
        """Integer group per item (items without a group are their own group). Shape: (n_items,)."""
        codes: dict[str, int] = {}
        return np.array([codes.setdefault(it.group or f"\0{it.id}", len(codes)) for it in self.items],
                        dtype=np.int64)


def _text_pool(items: list[Item], texts_per_item: int | None, allow_textless: bool
               ) -> tuple[list[str], sparse.csr_matrix]:
    """:func:`build_text_queries`, optionally tolerating items without texts (empty rows)."""
    if not allow_textless:
        return build_text_queries(items, texts_per_item=texts_per_item)
    rows = np.array([i for i, it in enumerate(items) if it.texts], dtype=np.int64)
    if not len(rows):
        return [], sparse.csr_matrix((len(items), 0), dtype=bool)
    texts, sub = build_text_queries([items[i] for i in rows], texts_per_item=texts_per_item)
    coo = sub.tocoo()
    full = sparse.csr_matrix((coo.data, (rows[coo.row], coo.col)), shape=(len(items), len(texts)))
    return texts, full


def encode_items(items: Sequence[Item], *, image_encoder: ImageEncoder, text_encoder: TextEncoder,
                 cache_dir: str | Path | None = None, texts_per_item: int | None = None,
                 allow_textless: bool = False, show_progress: bool | None = None,
                 skip_bad: bool = False) -> FeatureSet:
    """Encode every item's image and text through the feature cache.

    An item whose image is missing or unreadable (see :mod:`xmr.encoders.image_io`) is refused
    with an XmrError naming the item and the file; with ``skip_bad`` it is dropped instead,
    counted in one warning and listed in :attr:`FeatureSet.skipped`. Items without texts are
    an error unless ``allow_textless`` (a search gallery may hold bare images). ``cache_dir``: the cache
    root (None: the default); an encoder with a ``use_cache_root(root)`` hook (the ONNX encoder's graph)
    is told it.
    """
    if texts_per_item is not None and texts_per_item < 1:
        raise XmrError(f"texts_per_item must be >= 1 (or None for all), got {texts_per_item}")
    cache = feature_cache_dir(cache_dir)
    if cache_dir is not None:  # an encoder that keeps files of its own (an exported graph) keeps them there too
        for encoder in (image_encoder, text_encoder):
            use_root = getattr(encoder, "use_cache_root", None)
            if callable(use_root):
                use_root(cache_dir)
    try:
        img = encode_images(image_encoder, [it.image for it in items], cache_dir=cache,
                            show_progress=show_progress, skip_bad=skip_bad)
    except UnreadableImage as e:
        item = next((it for it in items if it.image == e.path), None)
        named = e.prefixed(f"item {item.id!r}: ") if item is not None else e
        raise named.suffixed("; pass {skip_bad} to leave unreadable images out (listed in {skipped_file})",
                             skip_bad=Param("skip_bad", True), skipped_file=SKIPPED_FILE) from None
    skipped = tuple({"id": it.id, "image": it.image, "reason": str(getattr(err, "reason", err))}
                    for it, err in zip(items, img.errors) if err is not None)
    kept = [it for it, ok in zip(items, img.ok) if ok]
    if not kept:
        first = f"; first problem: {skipped[0]['reason']}: {skipped[0]['image']}" if skipped else ""
        raise XmrError(f"none of the {len(items)} images could be read{first}")
    if skipped:
        log.warning("skipped %d of %d items with unreadable images (--skip-bad); first: %s (%s)",
                    len(skipped), len(items), skipped[0]["id"], skipped[0]["reason"])
    texts, relevance = _text_pool(kept, texts_per_item, allow_textless)
    txt = encode_texts(text_encoder, texts, cache_dir=cache, show_progress=show_progress)
    log.info("features: %d images (%d newly encoded), %d texts (%d newly encoded)",
             len(kept), img.n_encoded, len(texts), txt.n_encoded)
    return FeatureSet(kept, img.feats[img.ok], texts, txt.feats, relevance, skipped)


def skipped_list_path(manifest: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Where ``xmr encode --skip-bad`` lists the items it left out: the feature cache, by manifest.

    ``<cache>/features/skipped/<manifest name>-<8 hex of its absolute path>.jsonl``.
    """
    manifest = Path(manifest).resolve()
    tag = hashlib.sha1(str(manifest).encode()).hexdigest()[:8]
    return feature_cache_dir(cache_dir) / "skipped" / f"{manifest.stem}-{tag}.jsonl"


def write_skipped(path: str | Path, skipped: Sequence[dict[str, str]]) -> Path:
    """Write the items ``--skip-bad`` left out, one JSON object per line (id, image, reason)."""
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in skipped))
    log.warning("the %d skipped item(s) are listed in %s", len(skipped), path)
    return Path(path)


def read_skipped(path: str | Path) -> list[dict[str, str]]:
    """The rows :func:`write_skipped` wrote (none when there is no such file)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise XmrError(f"{path}: cannot read the list of skipped items ({e})") from None
    if not all(isinstance(r, dict) for r in rows):
        raise XmrError(f"{path}: not a list of skipped items (one JSON object per line)")
    return rows
