"""The day-one zero-shot image encoder: ConSE over the ImageNet-1k classes, in a text encoder's space.

ConSE [Norouzi et al., "Zero-Shot Learning by Convex Combination of Semantic Embeddings", ICLR 2014,
Eq. 1]: an image is the convex combination of the text embeddings of its classifier's ``T`` most
probable classes, weighted by their probabilities,

    f(x) = 1/Z * sum_{t=1..T} p(y_t | x) * s(y_t),    Z = sum_{t=1..T} p(y_t | x),

here with EfficientNet-Lite0's own ImageNet-1k classifier for ``p`` (its logits divided by a
temperature before the softmax) and MiniLM-L6 for ``s``, then L2-normalised: the image lands in the
sentence encoder's space (384-d, unit norm), so a query's MiniLM embedding scores it by the cosine and
a run with ``--head identity`` over ``minilm-l6`` is a search space with no training and no captions.

Each class's text embedding ``s(y)`` (:func:`class_table`) is the normalised mean of the embeddings of
its WordNet 3.0 synset's texts (:func:`class_texts`): its first lemma or all its lemmas, each put in
every template of a prompt set (:data:`PROMPT_SETS`), plus, weighted by ``gloss_weight``, its
definition (``"<name>, <gloss>"``). The 1000 x D table is computed once per setting and cached
atomically under ``<cache root>/conse/<key>.npy``, the key hashing everything it depends on (the texts
themselves and the text encoder's id). Every setting is a field of :class:`ConseConfig`; the encoder id
carries their hash, so features made with other settings are never mixed in one cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from xmr.encoders.base import ENCODERS, ImageEncoder, TextEncoder, create_image_encoder, create_text_encoder
from xmr.encoders.image_io import ImageSource
from xmr.errors import XmrError
from xmr.utils.arrays import l2_normalize

log = logging.getLogger(__name__)

#: prompt sets: each class name is put in every template and the embeddings averaged (CLIP's prompt
#: ensembling, Radford et al. 2021, Sec. 3.1.4); generic templates, none written for one benchmark
PROMPT_SETS: dict[str, tuple[str, ...]] = {
    "none": ("{}",),
    "photo": ("a photo of a {}.",),
    "ensemble": ("a photo of a {}.", "a drawing of a {}.", "a picture of the {}.", "a close-up photo of a {}.",
                 "a painting of a {}.", "a cartoon {}.", "a sketch of a {}.", "an image of a {}."),
}
#: bump when the way class texts are made changes (it is part of every encoder id and table key)
TEXTS_VERSION = 1


@dataclass(frozen=True)
class ConseConfig:
    """Every setting of a ConSE encoder (its id hashes them all); the defaults are the day-one encoder's,
    chosen by emoji val rsum (``benchmarks/dayone_zeroshot.py``, results in ``benchmarks/results/dayone/``).

    Attributes:
        top_k: classes combined per image (ConSE's ``T``; 1..1000).
        temperature: the logits are divided by it before the softmax (> 0; below 1 sharpens the weights).
        lemmas: ``"first"``: the synset's first lemma names the class; ``"all"``: every lemma (its synonyms).
        prompts: a name in :data:`PROMPT_SETS`.
        gloss_weight: weight of the WordNet definition's embedding beside the names' (0: not used).
        image_encoder: the classifier (a registered image encoder with ``logits``).
        text_encoder: the space the features live in (a registered text encoder; a run's text side).
    """

    top_k: int = 20
    temperature: float = 2.0
    lemmas: Literal["first", "all"] = "all"
    prompts: str = "photo"
    gloss_weight: float = 1.0
    image_encoder: str = "efficientnet-lite0"
    text_encoder: str = "minilm-l6"

    def __post_init__(self) -> None:
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or not 1 <= self.top_k <= 1000:
            raise XmrError("ConseConfig.top_k must be an integer in 1..1000, got {value}", value=repr(self.top_k))
        if not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise XmrError("ConseConfig.temperature must be a positive number, got {value}",
                           value=repr(self.temperature))
        if self.lemmas not in ("first", "all"):
            raise XmrError("ConseConfig.lemmas must be 'first' or 'all', got {value}", value=repr(self.lemmas))
        if self.prompts not in PROMPT_SETS:
            raise XmrError("ConseConfig.prompts must be one of {known}, got {value}", known=", ".join(PROMPT_SETS),
                           value=repr(self.prompts))
        if not isinstance(self.gloss_weight, (int, float)) or not self.gloss_weight >= 0:
            raise XmrError("ConseConfig.gloss_weight must be a number >= 0, got {value}",
                           value=repr(self.gloss_weight))

    def texts_settings(self) -> dict[str, object]:
        """The settings the class table depends on (the weighting's are not among them)."""
        return {"lemmas": self.lemmas, "prompts": list(PROMPT_SETS[self.prompts]),
                "gloss_weight": float(self.gloss_weight), "text_encoder": self.text_encoder,
                "version": TEXTS_VERSION}


def short_hash(obj: object) -> str:
    """12 hex digits of the SHA-1 of ``obj``'s canonical JSON."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class ClassTexts:
    """The texts of one class: ``names`` (embedded and averaged) and an optional ``gloss`` text."""

    names: tuple[str, ...]
    gloss: str | None = None


def definition(gloss: str) -> str:
    """A WordNet gloss without its quoted examples: ``'a dog; "the dog barked"'`` -> ``'a dog'``."""
    parts = [p.strip() for p in gloss.split(";")]
    return "; ".join(p for p in parts if p and not p.startswith('"')) or gloss.strip()


def class_texts(config: ConseConfig, wordnet: object | None = None) -> list[ClassTexts]:
    """The texts of the 1000 ImageNet-1k classes, in class order, from their WordNet 3.0 synsets.

    Args:
        wordnet: a :class:`~xmr.data.wordnet.WordNet` (None: the default one; needs WordNet installed).
    """
    from xmr.data.imagenet_classes import IMAGENET_OFFSETS
    from xmr.data.wordnet import WordNet

    wn = wordnet if isinstance(wordnet, WordNet) else WordNet()
    templates = PROMPT_SETS[config.prompts]
    out = []
    for offset in IMAGENET_OFFSETS:
        synset = wn.synset(offset, "n")
        lemmas = synset.names if config.lemmas == "all" else synset.names[:1]
        gloss = f"{synset.names[0]}, {definition(synset.gloss)}" if config.gloss_weight > 0 else None
        out.append(ClassTexts(tuple(t.format(name) for name in lemmas for t in templates), gloss))
    return out


def class_table(texts: Sequence[ClassTexts], encoder: TextEncoder, *, gloss_weight: float,
                batch_size: int = 256) -> np.ndarray:
    """Each class's text embedding ``s(y)``: ``normalise(normalise(mean_i e(name_i)) + w * e(gloss))``.

    Shape: C classes -> (C, encoder.dim) float32, unit rows.
    """
    flat = [t for c in texts for t in c.names] + [c.gloss for c in texts if c.gloss is not None and gloss_weight > 0]
    emb = np.concatenate([encoder.encode_batch(flat[i:i + batch_size]) for i in range(0, len(flat), batch_size)])
    emb = l2_normalize(emb.astype(np.float32))
    table = np.zeros((len(texts), encoder.dim), np.float32)
    at, at_gloss = 0, sum(len(c.names) for c in texts)
    for row, c in enumerate(texts):
        table[row] = l2_normalize(emb[at:at + len(c.names)].mean(axis=0, keepdims=True))[0]
        at += len(c.names)
        if c.gloss is not None and gloss_weight > 0:
            table[row] += gloss_weight * emb[at_gloss]
            at_gloss += 1
    return l2_normalize(table)


def conse_vectors(logits: np.ndarray, table: np.ndarray, *, top_k: int, temperature: float) -> np.ndarray:
    """ConSE's Eq. 1, L2-normalised: the probability-weighted mean of the ``top_k`` classes' rows.

    Args:
        logits: the classifier's logits. Shape: (N, C).
        table: the classes' text embeddings. Shape: (C, D).

    Returns:
        float32 unit rows. Shape: (N, D). Ties in the top-k: the lower class id first.
    """
    z = np.asarray(logits, np.float64) / temperature
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    top = np.argsort(-p, axis=1, kind="stable")[:, :top_k]
    w = np.take_along_axis(p, top, axis=1)
    w /= w.sum(axis=1, keepdims=True)
    out = np.einsum("nk,nkd->nd", w, np.asarray(table, np.float64)[top])
    return l2_normalize(out.astype(np.float32))


class ConseImageNet(ImageEncoder):
    """ConSE image features in a text encoder's space (see the module docstring).

    Args:
        config: the settings (:class:`ConseConfig`).
        image_size: the classifier's input side.
        texts: the classes' texts (None: :func:`class_texts` of WordNet 3.0, read on first use);
            given, they are part of the encoder id.
    """

    default_batch_size = 32

    def __init__(self, config: ConseConfig | None = None, *, image_size: int = 224,
                 texts: Sequence[ClassTexts] | None = None) -> None:
        self.config = config or ConseConfig()
        self.image_size = image_size
        self.base = create_image_encoder(self.config.image_encoder, image_size=image_size)
        if not callable(getattr(self.base, "logits", None)):
            raise XmrError("ConSE weighs classes by a classifier's logits; image encoder {name} has no classifier",
                           name=repr(self.config.image_encoder))
        self.text = create_text_encoder(self.config.text_encoder)
        self.dim = self.text.dim
        self.joint_space = self.text.joint_space  # its features live in the text encoder's space
        self._texts = list(texts) if texts is not None else None
        self._table: np.ndarray | None = None
        self._cache_root: Path | None = None
        source = "wordnet-3.0" if texts is None else "texts-" + short_hash([dataclasses.astuple(t) for t in texts])
        settings = {**dataclasses.asdict(self.config), **self.config.texts_settings(), "classes": source,
                    "image": self.base.encoder_id}
        self.encoder_id = f"conse-imagenet@{image_size}-k{self.config.top_k}-{short_hash(settings)}"

    def ensure_data(self) -> None:
        """Install what the first encode reads and no package ships (the encoder's capability that the
        commands setting up a run call: ``xmr pretrained``, ``xmr index --images FOLDER``): WordNet 3.0
        for the class texts, from Debian's packages, when the texts come from it."""
        if self._texts is None:
            from xmr.data.wordnet import ensure_wordnet

            ensure_wordnet("WordNet 3.0 (the class names of " + self.encoder_id.split("@")[0] + ")")

    def use_cache_root(self, root: str | os.PathLike[str]) -> None:
        """Keep the class table under ``<root>/conse`` (the cache root ``encode_items`` is given)."""
        self._cache_root = Path(root)

    def to_device(self, device: object) -> None:
        """Run the classifier on ``device`` (the class table and the weighting stay numpy on the CPU)."""
        move = getattr(self.base, "to_device", None)
        if callable(move):
            move(device)

    @property
    def texts(self) -> list[ClassTexts]:
        if self._texts is None:
            self._texts = class_texts(self.config)
        return self._texts

    def table_path(self) -> Path:
        """Where the class table is cached: ``<cache root>/conse/<hash of texts, settings, text encoder>.npy``."""
        from xmr.utils.paths import default_cache_dir

        key = short_hash({"texts": [dataclasses.astuple(t) for t in self.texts], "text_id": self.text.encoder_id,
                          "dim": self.text.dim, **self.config.texts_settings()})
        return (self._cache_root or default_cache_dir()) / "conse" / f"{key}.npy"

    @property
    def table(self) -> np.ndarray:
        """The classes' text embeddings, read from the cache or computed and cached. Shape: (C, dim)."""
        if self._table is None:
            self._table = self._load_or_build_table()
        return self._table

    def _load_or_build_table(self) -> np.ndarray:
        from xmr.utils.io import atomic_write

        path = self.table_path()
        want = (len(self.texts), self.text.dim)  # a subclass may widen dim (conse_tags)
        if path.is_file():
            try:
                table = np.load(path)
                if table.shape == want and table.dtype == np.float32 and np.isfinite(table).all():
                    return table
            except (OSError, ValueError):
                pass
            log.warning("class table %s is damaged; computing it again", path)
        log.info("computing the class table of %s (%d classes) with %s", self.encoder_id, want[0],
                 self.text.encoder_id)
        table = class_table(self.texts, self.text, gloss_weight=self.config.gloss_weight)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as fh:
            np.save(fh, table)
        return table

    def load(self, path: ImageSource) -> np.ndarray:
        return self.base.load(path)

    def logits(self, inputs: Sequence[object]) -> np.ndarray:
        """The classifier's logits of loaded inputs. Shape: (B, C)."""
        import torch

        from xmr.runtime.device import to_numpy

        x = self.base.to_input(inputs)  # type: ignore[attr-defined]  # a classifier with logits has to_input
        device = getattr(self.base, "device", torch.device("cpu"))
        return to_numpy(self.base.logits(x.to(device)))  # type: ignore[attr-defined]  # checked in __init__

    def from_logits(self, logits: np.ndarray) -> np.ndarray:
        """:func:`conse_vectors` with this encoder's table and settings. Shape: (B, C) -> (B, dim)."""
        return conse_vectors(logits, self.table, top_k=self.config.top_k, temperature=self.config.temperature)

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        return self.from_logits(self.logits(inputs))


#: the day-one image encoder: :class:`ConseConfig`'s defaults, every lemma of the synset in "a photo of a {}.",
#: the gloss at weight 1, the top 20 classes of the softmax at temperature 2
DAYONE = ConseConfig()
#: the plain ConSE baseline of issue 28's probe: first lemmas, no prompts, top-10, temperature 1
NAMES_ONLY = ConseConfig(top_k=10, temperature=1.0, lemmas="first", prompts="none", gloss_weight=0.0)


@ENCODERS.register("conse-imagenet")
class DayOneConse(ConseImageNet):
    """The day-one zero-shot image encoder (:data:`DAYONE`) in MiniLM-L6's space."""

    def __init__(self, *, image_size: int = 224, texts: Sequence[ClassTexts] | None = None) -> None:
        super().__init__(DAYONE, image_size=image_size, texts=texts)


@ENCODERS.register("conse-imagenet-names")
class NamesOnlyConse(ConseImageNet):
    """Plain ConSE (:data:`NAMES_ONLY`): the class names alone, the baseline of the day-one encoder."""

    def __init__(self, *, image_size: int = 224, texts: Sequence[ClassTexts] | None = None) -> None:
        super().__init__(NAMES_ONLY, image_size=image_size, texts=texts)
