"""The ``composed`` task's searcher: an image plus a modification text finds the edited image in the
run's gallery (``gallery.npz``, built at training time) with the run's learnt composition."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmr.compose.model import ComposedModel, load_composed_model
from xmr.data.manifest import Item, read_manifest
from xmr.encoders import ImageEncoder, TextEncoder, create_image_encoder, create_text_encoder
from xmr.encoders.image_io import ImageBytes, ImageSource
from xmr.encoders.regions import RegionEncoder
from xmr.errors import XmrError
from xmr.modality import DEFAULT_K
from xmr.runs.base import load_run_config
from xmr.tasks.composed.config import LSTM_CONFIG, ComposedRunConfig
from xmr.text.word_ids import WordIdsEncoder


@dataclass
class ComposedHit:
    rank: int
    score: float
    id: str
    image: str


class ComposedSearcher:
    """Image + modification text -> gallery images, with a composed run's best model.

    Example::

        s = ComposedSearcher.from_run("runs/css-tirg")
        s.search_composed("scene.png", "make the small cube red", k=5)
    """

    def __init__(self, model: ComposedModel, cfg: ComposedRunConfig, gallery: np.ndarray, items: list[Item]) -> None:
        self.model, self.cfg, self.gallery, self.items = model, cfg, gallery, items
        self._image_encoder = create_image_encoder(cfg.image_encoder)
        self._region_encoder = typing.cast(RegionEncoder, create_image_encoder(
            cfg.region_encoder or f"{cfg.image_encoder}-regions")) if model.config.needs_regions else None
        self._text_encoder: TextEncoder = WordIdsEncoder(model.vocab, LSTM_CONFIG.length) \
            if model.vocab is not None else create_text_encoder(cfg.text_encoder)

    @classmethod
    def from_run(cls, run_dir: str | Path) -> ComposedSearcher:
        run = Path(run_dir)
        cfg = load_run_config(run, ComposedRunConfig)
        model = load_composed_model(run / "best")
        path = run / "gallery.npz"
        if not path.is_file():
            raise XmrError("{path} missing; train the run again (same config, same folder) to finish it",
                           path=str(path))
        data = np.load(path)
        if str(data["model_id"]) != model.model_id:
            raise XmrError("{path} was built by model {built}, not the run's model {model}; train the run again "
                           "(same config, same folder) to rebuild it", path=str(path), built=str(data["model_id"]),
                           model=model.model_id)
        items = {it.id: it for it in read_manifest(cfg.manifest)}
        gallery_items = [items[str(i)] for i in data["ids"]]
        return cls(model, cfg, data["emb"], gallery_items)

    def compose_query(self, image: ImageSource, text: str) -> np.ndarray:
        """The composed query of ``image`` (a path or an image in memory) modified by ``text``. Shape: (1, d)."""
        if not isinstance(text, str) or not text.strip():
            raise XmrError("the modification text is empty")
        if not isinstance(image, ImageBytes) and not Path(image).is_file():
            raise XmrError("source image {image}: not found", image=str(image))
        enc: ImageEncoder = self._region_encoder or self._image_encoder
        feats = enc.encode_batch([enc.load(image)])
        if self._region_encoder is not None:
            feats = feats.reshape(1, self._region_encoder.n_regions, -1)
        txt = self._text_encoder.encode_batch([text.strip()])
        return np.asarray(self.model.numpy("compose", feats, txt), dtype=np.float32)

    def search_composed(self, image: str | Path, text: str, k: int = DEFAULT_K) -> list[ComposedHit]:
        """The ``k`` gallery images closest to (``image`` modified by ``text``)."""
        q = self.compose_query(image, text)
        scores = (q @ self.gallery.T)[0]
        top = np.argsort(-scores, kind="stable")[:k]
        return [ComposedHit(r + 1, float(scores[i]), self.items[i].id, self.items[i].image) for r, i in enumerate(top)]

    search = search_composed


__all__ = ["ComposedHit", "ComposedSearcher"]
