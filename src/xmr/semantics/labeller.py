"""Automatically extracted semantics of images: global and regional ImageNet labels.

A3VSE [Huang et al., MM 2019] turns un-annotated images into pseudo image-text pairs. Its
*global semantics* ``s_g`` are an image classifier's tags for the whole image (Sec. 4.3, 4.6);
its *regional semantics* are the labels of detected regions "sorted by the confidence scores and
concatenated as a text sequence" (Sec. 3.2, Eq. 1). We have no detector offline, so regions are
fixed crops (a grid of windows) labelled by the same classifier: the packaged EfficientNet-Lite0
(ImageNet-1k) of :mod:`xmr.encoders.efficientnet`, its classes named by WordNet lemmas.

Probabilities are cached on disk per (model, crop layout, image content), like
:class:`~xmr.encoders.cache.FeatureCache` (it is reused), so labelling a set twice is free.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from xmr.encoders.image_io import load_rgb, resize_center_crop
from xmr.errors import XmrError

log = logging.getLogger(__name__)

#: the kinds of pseudo-text an un-annotated image can get (A3VSE Sec. 3.2): 2x2 crops, or the whole image
PSEUDO_TEXT_KINDS = ("regional", "global")

#: uint8 images (B, S, S, 3) -> logits (B, n_classes)
LogitsFn = Callable[[np.ndarray], np.ndarray]
Label = tuple[str, float]


def grid_boxes(size: int, grid: tuple[int, int] = (2, 2), *,
               window: float | None = None) -> list[tuple[int, int, int, int]]:
    """Crop boxes ``(left, top, right, bottom)`` of a ``rows x cols`` grid over a square image.

    Args:
        size: side of the square image.
        grid: ``(rows, cols)``.
        window: side of each window as a fraction of the image side, centred on its cell and
            shifted to stay inside (None: the cell itself, no overlap).

    Returns:
        Boxes in row-major order.
    """
    rows, cols = grid
    if rows < 1 or cols < 1:
        raise XmrError(f"grid must be two positive integers, got {grid!r}")
    if window is not None and not 0 < window <= 1:
        raise XmrError(f"window must be in (0, 1], got {window!r}")
    boxes = []
    for r in range(rows):
        for c in range(cols):
            if window is None:
                boxes.append((c * size // cols, r * size // rows,
                              (c + 1) * size // cols, (r + 1) * size // rows))
                continue
            w = max(1, round(window * size))
            cx, cy = (c + 0.5) * size / cols, (r + 0.5) * size / rows
            left = min(max(0, round(cx - w / 2)), size - w)
            top = min(max(0, round(cy - w / 2)), size - w)
            boxes.append((left, top, left + w, top + w))
    return boxes


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 for stability, returned as float32. Shape kept."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def top_labels(probs: np.ndarray, names: Sequence[str], k: int) -> list[Label]:
    """The ``k`` most probable ``(name, prob)``, most probable first (ties: lower index first)."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [(names[i], float(probs[i])) for i in order]


def merge_by_confidence(labels: Sequence[Label]) -> list[Label]:
    """Labels sorted by probability, highest first; a repeated name keeps its best score."""
    best: dict[str, float] = {}
    for name, p in labels:
        if p > best.get(name, -1.0):
            best[name] = p
    return sorted(best.items(), key=lambda np_: -np_[1])


def pseudo_text(labels: Sequence[Label] | Sequence[str], *, sep: str = " ",
                min_prob: float = 0.0) -> str:
    """The pseudo-text of an image: its label names concatenated in the given order.

    A3VSE Sec. 3.2 concatenates the regional semantics ``s = [s_1 || ... || s_M]`` into one
    sentence; pass :meth:`ImageNetLabeller.regional_labels` output (already ordered).

    Args:
        labels: ``(name, prob)`` pairs or bare names.
        sep: separator between labels.
        min_prob: drop labels below this probability (the paper's ablation uses 0.3 for tags).
    """
    names = [lab if isinstance(lab, str) else lab[0] for lab in labels
             if isinstance(lab, str) or lab[1] >= min_prob]
    return sep.join(names)


def efficientnet_logits_fn() -> LogitsFn:
    """ImageNet-1k logits of the packaged EfficientNet-Lite0, loaded once on first call.

    Uses the model of :class:`~xmr.encoders.efficientnet.EfficientNetLite0` (same weights and
    normalisation), through :meth:`~xmr.encoders.efficientnet.EfficientNetLite0.logits`.
    Shape: (B, S, S, 3) uint8 -> (B, 1000).
    """
    import torch

    from xmr.encoders.efficientnet import EfficientNetLite0, to_model_input

    encoder = EfficientNetLite0()

    def logits(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return encoder.logits(to_model_input(list(images))).numpy()

    return logits


def imagenet_class_names(wordnet: object | None = None) -> list[str]:
    """The first WordNet lemma of each ImageNet-1k class, in class order (1000 names).

    Args:
        wordnet: a :class:`~xmr.data.wordnet.WordNet` (None: open the default one).

    Raises:
        XmrError: WordNet is not installed (names ``make data``).
    """
    from xmr.data.imagenet_classes import IMAGENET_OFFSETS
    from xmr.data.wordnet import WordNet

    wn = wordnet if isinstance(wordnet, WordNet) else WordNet()
    return [wn.synset(o, "n").names[0] for o in IMAGENET_OFFSETS]


class ImageNetLabeller:
    """Global and regional ImageNet labels of images, named by WordNet lemmas.

    Args:
        class_names: one name per logit (None: :func:`imagenet_class_names`, needs WordNet).
        logits_fn: uint8 (B, S, S, 3) -> logits (B, n_classes) (None: EfficientNet-Lite0).
        model_id: names the model in cache keys; change it with ``logits_fn``.
        image_size: side ``S`` of the model input.
        batch_size: crops per model call.
        cache_dir: folder for cached probabilities (None: no cache).

    Example:
        >>> lab = ImageNetLabeller(cache_dir="/tmp/xmr-cache/semantics")  # doctest: +SKIP
        >>> lab.global_labels(["cat.png"], top_k=2)                         # doctest: +SKIP
        [[('tabby', 0.41), ('Egyptian cat', 0.22)]]
    """

    def __init__(self, *, class_names: Sequence[str] | None = None,
                 logits_fn: LogitsFn | None = None, model_id: str = "efficientnet-lite0-imagenet",
                 image_size: int = 224, batch_size: int = 32,
                 cache_dir: str | Path | None = None) -> None:
        if image_size < 1 or batch_size < 1:
            raise XmrError(f"image_size and batch_size must be positive, got "
                             f"{image_size!r}, {batch_size!r}")
        self.class_names = list(class_names) if class_names is not None else imagenet_class_names()
        self._logits_fn = logits_fn
        self.model_id = model_id
        self.image_size = image_size
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    # -- probabilities -------------------------------------------------------------------------

    def _logits(self, crops: np.ndarray) -> np.ndarray:
        if self._logits_fn is None:
            self._logits_fn = efficientnet_logits_fn()
        out = [np.asarray(self._logits_fn(crops[i:i + self.batch_size]), dtype=np.float32)
               for i in range(0, len(crops), self.batch_size)]
        logits = np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)
        if logits.shape != (len(crops), len(self.class_names)):
            raise XmrError(f"labeller {self.model_id} gave logits of shape {logits.shape}, "
                           f"expected ({len(crops)}, {len(self.class_names)})")
        return logits

    def _crops(self, image: str | Path | np.ndarray,
               boxes: Sequence[tuple[int, int, int, int]] | None) -> list[np.ndarray]:
        from PIL import Image

        if isinstance(image, np.ndarray):
            im = resize_center_crop(Image.fromarray(image).convert("RGB"), self.image_size)
        else:
            im = resize_center_crop(load_rgb(image), self.image_size)
        if boxes is None:
            return [np.asarray(im, dtype=np.uint8)]
        return [np.asarray(resize_center_crop(im.crop(b), self.image_size), dtype=np.uint8)
                for b in boxes]

    def probabilities(self, images: Sequence[str | Path | np.ndarray], *,
                      boxes: Sequence[tuple[int, int, int, int]] | None = None) -> np.ndarray:
        """Class probabilities of each image, or of each crop of it.

        Args:
            images: image paths or uint8 (H, W, 3) arrays (preprocessed like the encoder:
                alpha on white, shorter side to ``image_size``, centre crop).
            boxes: crop boxes on that ``image_size`` square (None: the whole image).

        Returns:
            Shape: (n_images, n_classes) without boxes, (n_images, n_boxes, n_classes) with.
        """
        n_views = 1 if boxes is None else len(boxes)
        dim = n_views * len(self.class_names)
        cache = keys = None
        if self.cache_dir is not None and all(not isinstance(x, np.ndarray) for x in images):
            from xmr.encoders.cache import FeatureCache
            from xmr.utils.io import sha1_file

            layout = "whole" if boxes is None else \
                "boxes=" + ";".join(",".join(map(str, b)) for b in boxes)
            cache = FeatureCache(self.cache_dir, {
                "encoder_id": f"{self.model_id}-probs@{self.image_size}-{_short_hash(layout)}",
                "modality": "image", "dim": dim, "layout": layout})
            keys = [sha1_file(p) for p in images]  # type: ignore[arg-type]  # paths here; arrays take the no-cache branch
        todo = list(range(len(images))) if cache is None else \
            [i for i, k in enumerate(keys or []) if k not in cache]
        fresh = np.zeros((0, dim), np.float32)
        if todo:
            crops = np.stack([c for i in todo for c in self._crops(images[i], boxes)])
            fresh = softmax(self._logits(crops)).reshape(len(todo), dim)
        if cache is not None and keys is not None:
            seen: dict[str, int] = {}
            new = [(keys[i], j) for j, i in enumerate(todo) if seen.setdefault(keys[i], j) == j]
            cache.put([k for k, _ in new], fresh[[j for _, j in new]])
            probs = cache.get(keys)
        else:
            probs = fresh
        shape = (len(images), len(self.class_names)) if boxes is None else \
            (len(images), n_views, len(self.class_names))
        return probs.reshape(shape)

    # -- labels --------------------------------------------------------------------------------

    def global_labels(self, images: Sequence[str | Path | np.ndarray], *,
                      top_k: int = 5) -> list[list[Label]]:
        """Global semantics: the ``top_k`` classes of each whole image [A3VSE Sec. 4.3].

        Returns:
            Per image, ``(name, prob)`` pairs, most probable first.
        """
        probs = self.probabilities(images)
        return [top_labels(p, self.class_names, top_k) for p in probs]

    def regional_labels(self, images: Sequence[str | Path | np.ndarray], *,
                        grid: tuple[int, int] = (2, 2), window: float | None = None,
                        top_k: int = 1,
                        boxes: Sequence[tuple[int, int, int, int]] | None = None,
                        ) -> list[list[Label]]:
        """Regional semantics: labels of crops, ordered by confidence [A3VSE Sec. 3.2, Eq. 1].

        Each region contributes its ``top_k`` labels; all regions' labels are sorted by
        probability (a name seen in several regions keeps its best score), as the paper sorts
        detected objects by confidence before concatenating them.

        Args:
            grid, window: crop layout, see :func:`grid_boxes` (ignored when ``boxes`` given).
            boxes: explicit crop boxes on the ``image_size`` square (e.g. saliency crops).

        Returns:
            Per image, distinct ``(name, prob)`` pairs, highest probability first.
        """
        if boxes is None:
            boxes = grid_boxes(self.image_size, grid, window=window)
        probs = self.probabilities(images, boxes=boxes)
        return [merge_by_confidence([lab for region in p
                                     for lab in top_labels(region, self.class_names, top_k)])
                for p in probs]


def _short_hash(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]
