"""The ``retrieval`` task's run config (``run.json``), its checked model loader, and the data and encoders it names."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypedDict

from xmr.data.manifest import Item, select_split
from xmr.data.readers import read_items
from xmr.encoders import ENCODERS, ImageEncoder, TextEncoder, create_image_encoder, create_text_encoder
from xmr.encoders.augment import AugmentConfig, check_augmentable
from xmr.encoders.base import check_declared_side, is_encoder_name, resolve_encoder
from xmr.encoders.placement import place_encoder
from xmr.errors import Param, XmrError
from xmr.evaluation.similarity import SIMILARITIES
from xmr.models import HEADS, JointModel, ModelConfig, load_model
from xmr.objectives import Fit, check_fit
from xmr.runs.base import RUN_FILE, BaseRunConfig, load_run_config
from xmr.runs.paper_features import PAPER_FEATURES, FinetuneConfig, SparseDataConfig, upgrade_flat
from xmr.runtime.device import Runtime
from xmr.text import TEXT_MODELS, TextEncoderConfig, Vocabulary
from xmr.text.word_ids import WordIdsEncoder
from xmr.training import TrainConfig
from xmr.utils.json_types import fields_by_owner

#: the head settings a run passes to its model, with ModelConfig's defaults (their one source)
HEAD_FIELDS = ("embed_dim", "head", "hidden_dim", "dropout", "similarity", "two_branch", "image_head")
_HEAD_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.name in HEAD_FIELDS}


@dataclass(frozen=True)
class TrainSource:
    """An extra training manifest: the annotated items of its ``splits`` join the run's training pairs.

    The run's own manifest still gives the validation and test splits, so they stay exactly as
    they are while the training pool grows (e.g. emoji + the ``icons`` dataset).

    Attributes:
        manifest: the manifest (absolute path).
        splits: which of its ``split`` values to train on.
        weight: how often its pairs are drawn per epoch relative to the run's own (1: as often;
            0.5: each pair with probability 0.5 per epoch; 2: twice).

    ``xmr train`` reads it from ``PATH[:SPLIT[,SPLIT...]][@WEIGHT]``, e.g. ``icons.jsonl``,
    ``icons.jsonl@0.5``, ``icons.jsonl:train,val,test@2`` (:meth:`parse`).
    """

    manifest: str
    splits: tuple[str, ...] = ("train",)
    weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "splits", tuple(self.splits))
        if not self.splits or not all(isinstance(s, str) and s.strip() for s in self.splits):
            raise XmrError(f"extra training source {self.manifest}: splits must be non-empty names, got {self.splits}")
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight) and self.weight > 0):
            raise XmrError(f"extra training source {self.manifest}: weight must be a number > 0, got {self.weight!r}")

    @classmethod
    def parse(cls, spec: str) -> TrainSource:
        """``PATH[:SPLIT,...][@WEIGHT]`` as a source (the path made absolute); a bad spec is one XmrError."""
        path, weight = spec, 1.0
        head, at, tail = spec.rpartition("@")
        if at:
            try:
                path, weight = head, float(tail)
            except ValueError:
                raise XmrError(f"extra training source {spec!r}: the weight after '@' must be a number") from None
        splits: tuple[str, ...] = ("train",)
        head, colon, tail = path.rpartition(":")
        if colon and "/" not in tail:
            if not tail:
                raise XmrError(f"extra training source {spec!r}: no split names after ':'")
            path, splits = head, tuple(s.strip() for s in tail.split(","))
        if not path:
            raise XmrError(f"extra training source {spec!r}: no manifest path")
        return cls(os.path.abspath(path), splits, weight)


@dataclass(frozen=True)
class RunConfig(BaseRunConfig):
    """Everything needed to rebuild the encoders and data of a retrieval run.

    Attributes:
        manifest: the dataset file (absolute path): an xmr manifest or a Karpathy split file.
        image_root: Karpathy files only: the folder holding the images.
        image_encoder: a registered image encoder.
        text_encoder: a registered (frozen) text encoder, or a trainable word-level model:
            ``textcnn`` (the dual-path paper's text CNN) or ``bigru``; those are set by
            ``text_model`` and trained end to end with the heads.
        train_split, val_split: manifest ``split`` values used for training / model selection.
        eval_texts_per_item: texts per item used as evaluation queries (None = all; the emoji
            demo uses 1, the CLDR name, since keywords like "face" are shared by many emoji).
        embed_dim, head, hidden_dim, dropout: the projection heads.
        train: the optimisation settings.
        similarity: how the joint space scores a pair: ``cosine`` or GXN's ``order`` violation
            (Sec. 3.2; with the ranking losses), used in training, evaluation and search.
        two_branch: GXN's lambda (Eq. 3) for an abstract + a grounded pair of heads, or None.
        text_model: the word-level model's settings (kind, length, word-vector init, position
            shift, ...) when ``text_encoder`` is ``textcnn`` or ``bigru``; defaults to
            ``TextEncoderConfig(kind=text_encoder)``. Its vocabulary is built from the training
            texts.
        image_head: the image side's head if not ``head``: ``region-attention`` (A3VSE's K-head
            attention over regions), ``region-mean`` or ``region-gpo`` (VSE-infinity's learned
            pooling) need a region image encoder such as ``efficientnet-lite0-regions``.
        extra_train: more training manifests (:class:`TrainSource`), each with its splits and
            weight; validation and test stay the run's own manifest's.
        finetune: the encoders' fine-tuned last blocks / layers
            (:class:`~xmr.runs.paper_features.FinetuneConfig`); None: both encoders frozen.
        sparse: A3VSE's data, a thinned training split and pseudo-texts for its un-annotated images
            (:class:`~xmr.runs.paper_features.SparseDataConfig`); None: every training text.
        augment: training views of every training image (:class:`~xmr.encoders.augment.AugmentConfig`;
            ``views=0``: none); one of the plain and the augmented views is drawn per image and epoch.
        pretrained_space: set when the run was made from a pretrained pair without training
            (:func:`xmr.workflows.pretrained.pretrained_run`): the space both encoders embed into
            (their :attr:`~xmr.encoders.base.Encoder.joint_space`); the heads are ``identity``, ``train``
            is unused, and ``manifest`` may be empty (no dataset: evaluation then names one). None: trained.
        task: ``"retrieval"``.
    """

    ABOUT: ClassVar[str] = "a retrieval run"
    manifest: str
    image_root: str | None = None
    image_encoder: str = "efficientnet-lite0-fne"
    text_encoder: str = "minilm-l6"
    train_split: str = "train"
    val_split: str = "val"
    eval_texts_per_item: int | None = None
    embed_dim: int = _HEAD_DEFAULTS["embed_dim"]
    head: str = _HEAD_DEFAULTS["head"]
    hidden_dim: int = _HEAD_DEFAULTS["hidden_dim"]
    dropout: float = _HEAD_DEFAULTS["dropout"]
    train: TrainConfig = field(default_factory=TrainConfig)
    similarity: str = _HEAD_DEFAULTS["similarity"]
    two_branch: float | None = _HEAD_DEFAULTS["two_branch"]
    text_model: TextEncoderConfig | None = None
    image_head: str | None = _HEAD_DEFAULTS["image_head"]
    extra_train: tuple[TrainSource, ...] = ()
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    finetune: FinetuneConfig | None = None
    sparse: SparseDataConfig | None = None
    pretrained_space: str | None = None
    task: str = field(default="retrieval", kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "extra_train", tuple(self.extra_train))
        check_declared_side(self.image_encoder, "image")
        if self.image_head is not None:
            HEADS.get(self.image_head)
        for name, feature in PAPER_FEATURES.items():
            if not isinstance(getattr(self, name), feature | None):
                raise XmrError("{name} is a {cls} or None, not {value}; RunConfig.from_flat reads its flat settings",
                               name=name, cls=feature.__name__, value=repr(getattr(self, name)))
        inputs = self.objective_fit.inputs
        if inputs:  # the components the data feeds, at their defaults unless given (pseudo pairs: A3VSE's terms)
            object.__setattr__(self, "train", dataclasses.replace(
                self.train, components=self.train.components.with_inputs(inputs)))
        self._check_text_encoder()
        HEADS.get(self.head)
        if self.augment.views:
            check_augmentable(resolve_encoder(self.image_encoder)[0], self.image_encoder)
        if self.finetune is not None:
            self.finetune.check_encoders(self.image_encoder, self.text_encoder, image_head=self.image_head,
                                         word_level=self.text_model is not None)
        if self.eval_texts_per_item is not None and self.eval_texts_per_item < 1:
            raise XmrError(f"eval_texts_per_item must be >= 1 or None, got {self.eval_texts_per_item}")
        SIMILARITIES.get(self.similarity)  # an unknown similarity, listing the known ones
        check_fit(self.train, self.train.components, self.objective_fit)
        self._check_pretrained()

    def _check_pretrained(self) -> None:
        """A run made without training has identity heads and nothing that only training uses."""
        if self.pretrained_space is None:
            return
        trained = {"head": self.head != "identity", "image_head": self.image_head is not None,
                   "two_branch": self.two_branch is not None, "text_model": self.text_model is not None,
                   "finetune": self.finetune is not None, "sparse": self.sparse is not None,
                   "extra_train": bool(self.extra_train), "augment": bool(self.augment.views)}
        wrong = [name for name, bad in trained.items() if bad]
        if wrong:
            raise XmrError("a run made from a pretrained pair without training has identity heads and no training "
                           "settings; {fields} set", fields=", ".join(wrong))

    def _check_text_encoder(self) -> None:
        """A word-level text model's settings (filled in at their defaults), or a registered text encoder."""
        if self.text_encoder in TEXT_MODELS.names():
            if self.text_model is None:
                object.__setattr__(self, "text_model", TextEncoderConfig(kind=self.text_encoder))  # type: ignore[arg-type]  # a TEXT_MODELS name, checked above
            elif self.text_model.kind != self.text_encoder:
                raise XmrError(f"text_encoder {self.text_encoder!r} but text_model.kind {self.text_model.kind!r}")
            return
        if not is_encoder_name(self.text_encoder):
            known = sorted([*ENCODERS.names(), *TEXT_MODELS.names()])
            raise XmrError(f"unknown text encoder {self.text_encoder!r}; known: {', '.join(known)}")
        check_declared_side(self.text_encoder, "text")
        if self.text_model is not None:
            raise XmrError(f"text_model settings need a word-level text encoder "
                           f"({', '.join(TEXT_MODELS.names())}), not {self.text_encoder!r}")

    @property
    def objective_fit(self) -> Fit:
        """What the run's objective components are checked against (its similarity, branches, pseudo pairs)."""
        return Fit(self.similarity, self.two_branch is not None,
                   self.sparse.inputs if self.sparse is not None else frozenset())

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any] | None = None, /, **more: Any) -> RunConfig:
        """The config that flat settings describe: this class's fields, with each paper feature's settings
        under its flat name (``finetune_image_blocks``, ``finetune_freeze_bn``, ``finetune_text_layers``,
        ``finetune_text_length``; ``sparse``: the spec string, ``sparse_by_group``, ``pseudo_texts``), as
        the CLI's options and older files name them; a feature whose settings use nothing is None."""
        values = {**(flat or {}), **more}
        for name, feature in PAPER_FEATURES.items():
            if not isinstance(values.get(name), feature):  # a feature given nested is taken as it is
                settings = {k: values.pop(k) for k in feature.FLAT if k in values}
                if settings:
                    values[name] = feature.from_flat(settings)
        return cls(**values)

    @classmethod
    def fields_by_class(cls, by_dest: Mapping[str, str]) -> dict[type, dict[str, str]]:
        """``{config dataclass: {option dest: field}}`` of options that fill flat settings (``{dest: flat
        name}``, as :meth:`from_flat` reads them): this class's fields, and each paper feature's setting's
        field of its config class (where the help reads each default)."""
        owners = {old: (feature, name) for feature in PAPER_FEATURES.values() for old, name in feature.FLAT.items()}
        return fields_by_owner(by_dest, owners, cls)

    @classmethod
    def upgrade_saved(cls, saved: Mapping[str, Any]) -> dict[str, Any]:
        """A saved ``run.json`` in today's form: the paper features' flat settings nested
        (:func:`~xmr.runs.paper_features.upgrade_flat`), and its ``train`` upgraded knowing whether the run
        had pseudo pairs (:meth:`~xmr.training.TrainConfig.upgrade_saved`)."""
        out = upgrade_flat(saved)
        if isinstance(out.get("train"), dict):
            sparse = out.get("sparse")
            pseudo = ("sparse",) if isinstance(sparse, dict) and sparse.get("pseudo_texts") is not None else ()
            out["train"] = TrainConfig.upgrade_saved(out["train"], inputs=pseudo)
        return out


def head_settings(cfg: RunConfig) -> dict[str, Any]:
    """The run's :data:`HEAD_FIELDS`, as :class:`~xmr.models.ModelConfig` keyword arguments."""
    return {name: getattr(cfg, name) for name in HEAD_FIELDS}


def load_run(run_dir: str | Path) -> tuple[RunConfig, JointModel]:
    """The run's config and best model, checked against each other.

    The checkpoint must have been trained with the encoders ``run.json`` names (an edited or
    mixed-up ``run.json`` would otherwise fail deep inside a matrix product, or silently score
    with the wrong features).
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir, RunConfig)
    model = load_model(run_dir / "best")
    mc = model.config
    for side, named, trained in (("image", cfg.image_encoder, mc.image_encoder),
                                 ("text", cfg.text_encoder, mc.text_encoder)):
        if named != trained:
            raise XmrError(f"{run_dir / RUN_FILE} names the {side} encoder {named!r} but the checkpoint in "
                           f"{run_dir / 'best'} was trained on {trained!r}; restore the run's {RUN_FILE}")
    return cfg, model


def run_items(cfg: RunConfig, *, manifest: str | None = None, split: str | None = None,
              skip_bad: bool = False) -> list[Item]:
    """Items of the run's dataset (or of ``manifest``), restricted to ``split`` when given.

    ``skip_bad`` skips bad manifest rows (with a warning and a count) instead of refusing them.
    """
    source = manifest or cfg.manifest
    if not source:
        raise XmrError("the run was made from a pretrained pair without a dataset; name one with {manifest}",
                       manifest=Param("manifest", "M"))
    return select_split(read_items(source, image_root=None if manifest else cfg.image_root, skip_bad=skip_bad),
                        split)


class RunEncoders(TypedDict):
    """The run's encoders, as :func:`~xmr.workflows.features.encode_items` keyword arguments."""

    image_encoder: ImageEncoder
    text_encoder: TextEncoder


def run_encoders(cfg: RunConfig, vocab: Vocabulary | None = None, runtime: Runtime | None = None) -> RunEncoders:
    """The run's encoders as ``encode_items`` keyword arguments (weights load on first use), placed on
    ``runtime`` (:func:`~xmr.encoders.placement.place_encoder`; None: the CPU at fp32, untouched).

    A word-level text model's "encoder" turns texts into id rows of ``vocab`` (the training
    vocabulary: the trained model's ``vocab``), so it is required then.
    """
    image_encoder: ImageEncoder = create_image_encoder(cfg.image_encoder)
    if cfg.finetune is not None:
        image_encoder = cfg.finetune.image_trunk(image_encoder)
    image_encoder = place_encoder(image_encoder, runtime)
    if cfg.text_model is None:
        text_encoder: TextEncoder = create_text_encoder(cfg.text_encoder)
        if cfg.finetune is not None:
            text_encoder = cfg.finetune.text_trunk(text_encoder)
        return {"image_encoder": image_encoder, "text_encoder": place_encoder(text_encoder, runtime)}
    if vocab is None:
        raise XmrError(f"the run's {cfg.text_encoder} text model needs its vocabulary (the model's vocab.json)")
    return {"image_encoder": image_encoder, "text_encoder": WordIdsEncoder(vocab, cfg.text_model.length)}
