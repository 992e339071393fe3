"""The :class:`Searcher`: a trained model, its encoders and a gallery index, queried by text or image.

    >>> s = Searcher.from_run("runs/emoji-infonce")            # doctest: +SKIP
    >>> [h.id for h in s.search_text("a smiling cat", k=3)]     # doctest: +SKIP
    ['1F63A/twitter', '1F63A/google', '1F638/openmoji-color']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from xmr.data.manifest import Item, read_manifest
from xmr.encoders import ImageEncoder, TextEncoder
from xmr.errors import XmrError
from xmr.index import Index, load_index
from xmr.models import JointModel, load_model
from xmr.utils.io import load_json
from xmr.workflows.run_config import load_run_config, run_encoders

Target = Literal["images", "texts"]


@dataclass(frozen=True)
class SearchHit:
    """One result: rank (1-based), score, and the hit's metadata (an item, or a text)."""

    rank: int
    score: float
    id: str
    text: str | None = None
    image: str | None = None
    label: str | None = None
    group: str | None = None
    style: str | None = None


class Searcher:
    """Answers text and image queries against an indexed gallery.

    Args:
        model: the trained joint model.
        image_encoder, text_encoder: the frozen encoders the model was trained on.
        image_index, text_index: indexes of the gallery's image and text embeddings.
        items: gallery items (image index id = position).
        texts: gallery texts (text index id = position).
    """

    def __init__(self, model: JointModel, image_encoder: ImageEncoder, text_encoder: TextEncoder,
                 image_index: Index, text_index: Index, items: list[Item], texts: list[str]) -> None:
        self.model, self.image_encoder, self.text_encoder = model, image_encoder, text_encoder
        self.indexes = {"images": image_index, "texts": text_index}
        self.items, self.texts = items, texts

    @classmethod
    def from_run(cls, run_dir: str | Path, index_dir: str | Path | None = None) -> Searcher:
        """Load the best model of ``run_dir`` and the index built by ``xmr index``."""
        run_dir = Path(run_dir)
        cfg = load_run_config(run_dir)
        model = load_model(run_dir / "best")
        idx = Path(index_dir) if index_dir else run_dir / "index"
        if not (idx / "index_run.json").is_file():
            raise XmrError(f"no index at {idx}; build one with `xmr index {run_dir}`")
        dim = model.config.embed_dim
        image_index = load_index(idx / "images", expect_dim=dim, expect_model_id=model.model_id)
        text_index = load_index(idx / "texts", expect_dim=dim, expect_model_id=model.model_id)
        items = read_manifest(idx / "gallery.jsonl")
        texts = list(load_json(idx / "texts.json"))
        encoders = run_encoders(cfg)
        return cls(model, encoders["image_encoder"], encoders["text_encoder"],  # type: ignore[arg-type]
                   image_index, text_index, items, texts)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Joint-space embeddings of query texts. Shape: (n, embed_dim)."""
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise XmrError(f"query text #{i} is empty")
        feats = self.text_encoder.encode_batch([t.strip() for t in texts])
        return self.model.embed_numpy(feats, "text")

    def embed_images(self, paths: list[str | Path]) -> np.ndarray:
        """Joint-space embeddings of query images. Shape: (n, embed_dim)."""
        feats = self.image_encoder.encode_batch([self.image_encoder.load(p) for p in paths])
        return self.model.embed_numpy(feats, "image")

    def search_vectors(self, queries: np.ndarray, k: int = 10, *, target: Target = "images"
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Raw search: (scores, ids), each of shape (n_queries, k')."""
        if target not in self.indexes:
            raise XmrError(f"unknown search target {target!r}; use 'images' or 'texts'")
        return self.indexes[target].search(queries, k)

    def search_text(self, text: str, k: int = 10, *, target: Target = "images") -> list[SearchHit]:
        """The ``k`` gallery images (or texts) closest to ``text``."""
        return self._hits(*self.search_vectors(self.embed_texts([text]), k, target=target), target)

    def search_image(self, path: str | Path, k: int = 10, *, target: Target = "images") -> list[SearchHit]:
        """The ``k`` gallery images (other styles included) or texts closest to the image at ``path``."""
        return self._hits(*self.search_vectors(self.embed_images([path]), k, target=target), target)

    def _hits(self, scores: np.ndarray, ids: np.ndarray, target: Target) -> list[SearchHit]:
        hits = []
        for rank, (s, i) in enumerate(zip(scores[0], ids[0]), start=1):
            if i < 0:
                continue
            if target == "texts":
                hits.append(SearchHit(rank, float(s), id=f"text:{i}", text=self.texts[i]))
            else:
                it = self.items[i]
                hits.append(SearchHit(rank, float(s), id=it.id, text=it.texts[0] if it.texts else None,
                                      image=it.image, label=it.label, group=it.group, style=it.style))
        return hits
