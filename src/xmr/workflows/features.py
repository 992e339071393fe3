"""Items -> cached encoder features for their images and their (deduplicated) texts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from xmr.data.manifest import Item
from xmr.encoders import ImageEncoder, TextEncoder, encode_images, encode_texts
from xmr.errors import XmrError
from xmr.evaluation.protocol import build_text_queries
from xmr.utils.paths import default_cache_dir

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
    """

    items: list[Item]
    image_feats: np.ndarray
    texts: list[str]
    text_feats: np.ndarray
    relevance: sparse.csr_matrix

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
                 allow_textless: bool = False, show_progress: bool | None = None) -> FeatureSet:
    """Encode every item's image and text through the feature cache.

    Items whose image is missing or unreadable are dropped with one warning and a count. Items
    without texts are an error unless ``allow_textless`` (a search gallery may hold bare images).
    """
    cache = feature_cache_dir(cache_dir)
    img = encode_images(image_encoder, [it.image for it in items], cache_dir=cache,
                        show_progress=show_progress)
    kept = [it for it, ok in zip(items, img.ok) if ok]
    if not kept:
        raise XmrError(f"none of the {len(items)} images could be read; first problem: {img.bad[0]}")
    if len(kept) < len(items):
        log.warning("dropped %d of %d items with unreadable images", len(items) - len(kept), len(items))
    texts, relevance = _text_pool(kept, texts_per_item, allow_textless)
    txt = encode_texts(text_encoder, texts, cache_dir=cache, show_progress=show_progress)
    log.info("features: %d images (%d newly encoded), %d texts (%d newly encoded)",
             len(kept), img.n_encoded, len(texts), txt.n_encoded)
    return FeatureSet(kept, img.feats[img.ok], texts, txt.feats, relevance)
