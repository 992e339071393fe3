"""The ``composed`` task's service: image + modification text -> gallery images with the run's learnt
composition (TIRG and the others), behind the same app as any run's (:mod:`xmr.serve.app`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from xmr.encoders.image_io import ImageBytes, UnreadableImage, blank_png
from xmr.serve.query import Query, ServiceError, Stages, TooLarge
from xmr.serve.service import GalleryService
from xmr.tasks.composed.searcher import ComposedSearcher


class ComposedService(GalleryService):
    """A composed run (``xmr train --task composed``): image + modification text -> gallery images,
    with the run's learnt composition (TIRG and the others); the reference image is never a result."""

    task = "composed"
    composed = "learnt"

    def __init__(self, searcher: ComposedSearcher, *, run_dir: str | Path,
                 max_upload_bytes: int = 10 * 2 ** 20, max_decodes: int = 2) -> None:
        super().__init__(searcher.items, run_dir=run_dir, model_id=searcher.model.model_id,
                         max_upload_bytes=max_upload_bytes, max_decodes=max_decodes)
        self.searcher = searcher
        self._encoder_lock = threading.Lock()

    @classmethod
    def load(cls, run_dir: str | Path, **kw: object) -> ComposedService:
        return cls(ComposedSearcher.from_run(run_dir), run_dir=run_dir, **kw)  # type: ignore[arg-type]

    def warm_up(self) -> None:
        with self._encoder_lock:
            self.searcher.compose_query(ImageBytes(blank_png()), "warm up")

    def search(self, q: Query, stages: Stages | None = None) -> tuple[list[dict[str, object]], int]:
        stages = stages if stages is not None else Stages()
        t = time.perf_counter()
        if q.kind != "composed":
            raise ServiceError("a composed run answers image + text queries: give image (or image_id) and text")
        if q.target != "images" or q.rerank is not None:
            raise ServiceError("a composed run returns images, without re-ranking")
        exclude = self.item_index(q.image_id) if q.image_id is not None else -1
        if q.image_id is not None:
            source: str | ImageBytes = self.at(exclude).image
        else:
            data = bytes(q.image or b"")
            if len(data) > self.max_upload_bytes:
                raise TooLarge(f"the image is larger than the upload limit ({self.max_upload_bytes / 2 ** 20:g} MB)")
            source = ImageBytes(data, "the uploaded image")
        try:
            with self._decodes, self._encoder_lock:  # the image is decoded inside
                query = self.searcher.compose_query(source, str(q.text))
        except UnreadableImage as e:
            raise ServiceError(f"image: {e.reason}") from None
        t = stages.add("encode", t)
        scores = (query @ self.searcher.gallery.T)[0].astype(np.float64)
        keep = self.item_mask(q.filters)
        keep = np.ones(len(self.items), dtype=bool) if keep is None else keep.copy()
        if exclude >= 0:
            keep[exclude] = False
        order = np.flatnonzero(keep)[np.argsort(-scores[keep], kind="stable")][q.offset:q.offset + q.k]
        t = stages.add("search", t)
        results = [{"id": self.at(i).id, "score": float(scores[i]), "rank": q.offset + r + 1,
                    "texts": list(self.at(i).texts), "image_url": self.image_url(self.at(i).id),
                    "fields": self.item_fields(self.at(i))} for r, i in enumerate(order)]
        stages.add("metadata", t)
        return results, int(keep.sum())
