"""The day-one pair with A3VSE's tag baseline as a second signal, folded into the vectors.

The day-one model scores a query ``t`` against an image ``x`` by the cosine of its MiniLM embedding and the
image's ConSE vector (:mod:`xmr.encoders.conse`). A3VSE's unsupervised tag baseline [Huang et al., MM 2019,
Sec. 4.3; :mod:`xmr.data.imagenet_tags`] scores the same pair by matching the query, expanded through
WordNet into a k-hot vector ``q`` over the 1000 ImageNet classes, against the image's class vector ``s``.
The fused score is

    score(t, x) = cos(e(t), f(x)) + w * cos(q(t), s(x))        (0 where the query names no class)

and it is served as the inner product of two unit vectors of ``D + C + 1`` dimensions, so that a run of the
pair (identity heads, :func:`xmr.workflows.pretrained.pretrained_run`) indexes, searches and evaluates it with
nothing else changed::

    image:  [ a * f(x),  b * s(x) / |s(x)|,  0 ]
    text:   [ a * e(t),  b * q(t) / |q(t)|,  0 ]     (a query naming a class)
    text:   [ a * e(t),  0,                  b ]     (a query naming none: the last dimension, which no image uses)

with ``a = 1 / sqrt(1 + w)`` and ``b = sqrt(w / (1 + w))``: every vector has norm 1 (the identity head's
normalisation changes nothing) and the inner product is ``score / (1 + w)``, one constant for every pair, so
every ranking is the fused score's. The extra dimension keeps a query that names no class at norm 1 (its
score is then the cosine alone, scaled like every other).

The image's class vector ``s`` is either the classifier's softmax over all classes (``"softmax"``, A3VSE's
``s_g``) or ConSE's own weights, its top-K classes' renormalised probabilities at its temperature
(``"conse"``); which, and ``w``, were chosen on emoji val rsum (``benchmarks/dayone_tags.py``).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from xmr.encoders.base import ENCODERS, TextEncoder, create_text_encoder
from xmr.encoders.conse import DAYONE, ClassTexts, ConseConfig, ConseImageNet, short_hash
from xmr.errors import XmrError
from xmr.utils.arrays import l2_normalize


@dataclass(frozen=True)
class TagSignalConfig:
    """The tag signal's settings (both sides hash them into their ``joint_space``); the defaults are the day-one's.

    Attributes:
        weight: ``w`` of the fused score (>= 0; 0: the day-one cosine alone, in the wider vectors).
        image_tags: the image's class vector: ``"softmax"`` (all classes, temperature 1) or ``"conse"``
            (ConSE's top-K weights).
        tag_depth: how far up a class's WordNet hypernyms a query concept may sit (None: any distance;
            :func:`xmr.data.imagenet_tags.query_vectors`).
        query_hypernym_depth: also expand the query's synsets by this many hypernym steps.
    """

    weight: float = 5.0
    image_tags: Literal["softmax", "conse"] = "conse"
    tag_depth: int | None = None
    query_hypernym_depth: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not self.weight >= 0 \
                or not np.isfinite(self.weight):
            raise XmrError("TagSignalConfig.weight must be a finite number >= 0, got {value}", value=repr(self.weight))
        if self.image_tags not in ("softmax", "conse"):
            raise XmrError("TagSignalConfig.image_tags must be 'softmax' or 'conse', got {value}",
                           value=repr(self.image_tags))
        if self.tag_depth is not None and (not isinstance(self.tag_depth, int) or self.tag_depth < 0):
            raise XmrError("TagSignalConfig.tag_depth must be None or an integer >= 0, got {value}",
                           value=repr(self.tag_depth))
        if not isinstance(self.query_hypernym_depth, int) or self.query_hypernym_depth < 0:
            raise XmrError("TagSignalConfig.query_hypernym_depth must be an integer >= 0, got {value}",
                           value=repr(self.query_hypernym_depth))

    def space(self, base_space: str | None) -> str | None:
        """The joint space of a pair with this signal over ``base_space`` (the text encoder's own; None: a space
        of its own, and so is the pair's)."""
        return None if base_space is None else f"{base_space}+imagenet-tags-{short_hash(dataclasses.asdict(self))}"


#: the day-one tag signal: ConSE's top-20 weights as the image's class vector, w = 5, chosen on emoji val rsum
#: (98.6 -> 113.7; openclipart val 81.8 -> 87.7, not used to choose): ``benchmarks/results/dayone/tags.md``
DAYONE_TAGS = TagSignalConfig()


def _scales(weight: float) -> tuple[float, float]:
    """``(a, b)``: the cosine block's and the tag block's factors, ``a^2 + b^2 = 1``, ``b^2 / a^2 = weight``."""
    return float(np.sqrt(1.0 / (1.0 + weight))), float(np.sqrt(weight / (1.0 + weight)))


def fuse_images(vectors: np.ndarray, tags: np.ndarray, weight: float) -> np.ndarray:
    """Image rows of the fused space: ``[a * f, b * s / |s|, 0]``.

    Args:
        vectors: unit image vectors in the text encoder's space. Shape: (N, D).
        tags: non-negative class vectors, none all zero. Shape: (N, C).

    Returns:
        float32 unit rows. Shape: (N, D + C + 1).
    """
    a, b = _scales(weight)
    s = np.asarray(tags, np.float64)
    norm = np.linalg.norm(s, axis=1, keepdims=True)
    if (norm <= 0).any():
        raise XmrError("an image's class vector is all zero; it has no tag to match")
    out = np.hstack([a * np.asarray(vectors, np.float64), b * s / norm, np.zeros((len(s), 1))])
    return out.astype(np.float32)


def fuse_texts(vectors: np.ndarray, queries: np.ndarray, weight: float) -> np.ndarray:
    """Text rows of the fused space: ``[a * e, b * q / |q|, 0]``, or ``[a * e, 0, b]`` for a query naming no class.

    Args:
        vectors: unit text vectors. Shape: (N, D).
        queries: k-hot class vectors of the queries (:func:`xmr.data.imagenet_tags.query_vectors`). Shape: (N, C).

    Returns:
        float32 unit rows. Shape: (N, D + C + 1).
    """
    a, b = _scales(weight)
    q = np.asarray(queries, np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    none = norm[:, 0] <= 0
    out = np.hstack([a * np.asarray(vectors, np.float64), b * q / np.where(none[:, None], 1.0, norm),
                     (b * none)[:, None]])
    return out.astype(np.float32)


def softmax_tags(logits: np.ndarray) -> np.ndarray:
    """A3VSE's ``s_g``: the classifier's softmax over all classes. Shape: (N, C) -> (N, C) float64."""
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def conse_tags(logits: np.ndarray, *, top_k: int, temperature: float) -> np.ndarray:
    """ConSE's weights as a class vector: the top-``top_k`` probabilities at ``temperature``, renormalised,
    0 elsewhere (ties: the lower class id first, as :func:`~xmr.encoders.conse.conse_vectors`). Shape: (N, C)."""
    p = softmax_tags(np.asarray(logits, np.float64) / temperature)
    top = np.argsort(-p, axis=1, kind="stable")[:, :top_k]
    out = np.zeros_like(p)
    np.put_along_axis(out, top, np.take_along_axis(p, top, axis=1), axis=1)
    return out / out.sum(axis=1, keepdims=True)


class QueryTags(Protocol):
    """What the text side needs of a tag baseline: k-hot class vectors of sentences."""

    tag_offsets: tuple[int, ...]

    def query_vectors(self, queries: Sequence[str]) -> np.ndarray: ...


class ConseTagsImage(ConseImageNet):
    """ConSE image vectors with the image's class vector beside them (:func:`fuse_images`).

    Args:
        config, image_size, texts: as :class:`~xmr.encoders.conse.ConseImageNet`.
        tags: the tag signal's settings.
    """

    def __init__(self, config: ConseConfig | None = None, tags: TagSignalConfig | None = None, *,
                 image_size: int = 224, texts: Sequence[ClassTexts] | None = None) -> None:
        super().__init__(config, image_size=image_size, texts=texts)
        self.tags = tags or DAYONE_TAGS
        self.n_classes = len(self.texts) if texts is not None else 1000
        self.dim = self.text.dim + self.n_classes + 1
        self.joint_space = self.tags.space(self.text.joint_space)
        self.encoder_id = (self.encoder_id.replace("conse-imagenet@", "conse-imagenet-tags@", 1)
                           + "-" + short_hash(dataclasses.asdict(self.tags)))

    def from_logits(self, logits: np.ndarray) -> np.ndarray:
        """The fused image rows of a batch's logits. Shape: (B, C) -> (B, D + C + 1)."""
        vectors = super().from_logits(logits)
        if self.tags.image_tags == "softmax":
            s = softmax_tags(logits)
        else:
            s = conse_tags(logits, top_k=self.config.top_k, temperature=self.config.temperature)
        return fuse_images(vectors, s, self.tags.weight)


class TagsText(TextEncoder):
    """A text encoder's vectors with the query's WordNet expansion beside them (:func:`fuse_texts`).

    Args:
        base: the text encoder (its name; the space the cosine is taken in).
        tags: the tag signal's settings.
        baseline: what expands the queries (None: :class:`~xmr.data.imagenet_tags.TagBaseline` over the
            1000 ImageNet classes of WordNet 3.0, read on first use).
    """

    def __init__(self, base: str = "minilm-l6", tags: TagSignalConfig | None = None, *,
                 baseline: QueryTags | None = None) -> None:
        self.base = create_text_encoder(base)
        self.tags = tags or DAYONE_TAGS
        self._baseline = baseline
        self._lock = threading.Lock()
        n_classes = len(baseline.tag_offsets) if baseline is not None else 1000
        self.dim = self.base.dim + n_classes + 1
        self.joint_space = self.tags.space(self.base.joint_space)
        source = "wordnet-3.0" if baseline is None else "tags-" + short_hash(list(baseline.tag_offsets))
        self.encoder_id = f"{self.base.encoder_id}+imagenet-tags-{short_hash([dataclasses.asdict(self.tags), source])}"
        self.default_batch_size = self.base.default_batch_size

    @property
    def baseline(self) -> QueryTags:
        with self._lock:
            if self._baseline is None:
                from xmr.data.imagenet_tags import TagBaseline
                from xmr.data.wordnet import WordNet

                self._baseline = TagBaseline(WordNet(), tag_depth=self.tags.tag_depth,
                                             query_hypernym_depth=self.tags.query_hypernym_depth)
            return self._baseline

    def ensure_data(self) -> None:
        """Install WordNet 3.0 (the queries' expansion reads it) when missing, as the day-one image encoder does."""
        if self._baseline is None:
            from xmr.data.wordnet import ensure_wordnet

            ensure_wordnet("WordNet 3.0 (the query expansion of " + self.encoder_id + ")")

    def to_device(self, device: object) -> None:
        """Run the base text encoder on ``device`` (the expansion is plain Python)."""
        move = getattr(self.base, "to_device", None)
        if callable(move):
            move(device)

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        texts = [str(t) for t in inputs]
        vectors = l2_normalize(np.asarray(self.base.encode_batch(texts), np.float32))
        return fuse_texts(vectors, self.baseline.query_vectors(texts), self.tags.weight)


@ENCODERS.register("conse-imagenet-tags")
class DayOneConseTags(ConseTagsImage):
    """The day-one image encoder (:data:`~xmr.encoders.conse.DAYONE`) with the tag signal
    (:data:`DAYONE_TAGS`); pairs with ``minilm-l6-tags``."""

    def __init__(self, *, image_size: int = 224, texts: Sequence[ClassTexts] | None = None) -> None:
        super().__init__(DAYONE, DAYONE_TAGS, image_size=image_size, texts=texts)


@ENCODERS.register("minilm-l6-tags")
class MiniLMTags(TagsText):
    """MiniLM-L6 with the query's WordNet expansion (:data:`DAYONE_TAGS`); pairs with ``conse-imagenet-tags``."""

    query_stand_in = "minilm-l6-int8-tags"

    def __init__(self, *, baseline: QueryTags | None = None) -> None:
        super().__init__("minilm-l6", DAYONE_TAGS, baseline=baseline)


@ENCODERS.register("minilm-l6-int8-tags")
class MiniLMInt8Tags(TagsText):
    """``minilm-l6-tags`` with the int8 ONNX MiniLM (its query stand-in: the same features within 1e-3 cosine)."""

    def __init__(self, *, baseline: QueryTags | None = None) -> None:
        super().__init__("minilm-l6-int8", DAYONE_TAGS, baseline=baseline)
