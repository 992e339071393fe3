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
from xmr.data.sparse import SparseSpec
from xmr.encoders import ENCODERS, ImageEncoder, TextEncoder, create_image_encoder, create_text_encoder
from xmr.encoders.augment import AugmentConfig, check_augmentable
from xmr.encoders.base import check_declared_side, is_encoder_name, resolve_encoder
from xmr.encoders.text_trunk import TextTrunkEncoder, check_tail_layers
from xmr.encoders.trunk import TrunkEncoder, check_tail_blocks
from xmr.errors import Param, XmrError
from xmr.evaluation.similarity import SIMILARITIES
from xmr.models import HEADS, JointModel, ModelConfig, load_model
from xmr.objectives import Fit, check_fit
from xmr.objectives.sparse import SparseAlignmentConfig
from xmr.runs.base import RUN_FILE, BaseRunConfig, load_run_config
from xmr.semantics.labeller import PSEUDO_TEXT_KINDS
from xmr.text import TEXT_MODELS, TextEncoderConfig, Vocabulary
from xmr.text.word_ids import WordIdsEncoder
from xmr.training import TrainConfig

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
            attention over regions) or ``region-mean`` need a region image encoder such as
            ``efficientnet-lite0-regions``.
        sparse: keep texts for a seeded fraction of the training images only
            (:class:`~xmr.data.sparse.SparseSpec`, e.g. ``"0.1x1"``; seed ``train.seed``); the
            other training images are un-annotated.
        sparse_by_group: draw the annotated fraction over item groups (all drawings of one
            emoji annotated or none), not single images.
        pseudo_texts: pair un-annotated training images with pseudo-texts from their ImageNet
            labels, ``regional`` or ``global`` (A3VSE; :mod:`xmr.workflows.pseudo_texts`).
        extra_train: more training manifests (:class:`TrainSource`), each with its splits and
            weight; validation and test stay the run's own manifest's.
        finetune_image_blocks: fine-tune the last N blocks of the image encoder with the heads
            (EfficientNet-Lite0: 16 MBConv blocks, then the 1x1 head conv, which any N >= 1
            includes; 0: the encoder stays frozen). The frozen trunk's output is cached once
            (float16, :mod:`xmr.encoders.trunk`) and each epoch runs only the tail, at
            ``train.finetune_lr``; the tail is saved with the model, so eval / index / search use it.
        finetune_freeze_bn: keep the tail's BatchNorm statistics (ImageNet's) frozen; their
            scale and shift still train.
        finetune_text_layers: fine-tune the last N transformer layers of the (frozen) text
            encoder, minilm-l6: 1..6 (0: frozen); the trunk's token states are cached (float16,
            :mod:`xmr.encoders.text_trunk`) at ``finetune_text_length`` tokens per text (longer
            texts are cut there; a warning counts them).
        augment: training views of every training image (:class:`~xmr.encoders.augment.AugmentConfig`;
            ``views=0``: none); one of the plain and the augmented views is drawn per image and epoch.
        task: ``"retrieval"``.
    """

    ABOUT: ClassVar[str] = "a retrieval run"
    manifest: str
    image_root: str | None = None
    image_encoder: str = "efficientnet-lite0"
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
    sparse: str | None = None
    sparse_by_group: bool = True
    pseudo_texts: str | None = None
    extra_train: tuple[TrainSource, ...] = ()
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    finetune_image_blocks: int = 0
    finetune_freeze_bn: bool = True
    finetune_text_layers: int = 0
    finetune_text_length: int = 32
    task: str = field(default="retrieval", kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "extra_train", tuple(self.extra_train))
        check_declared_side(self.image_encoder, "image")
        if self.image_head is not None:
            HEADS.get(self.image_head)
        if self.sparse is not None:
            try:
                object.__setattr__(self, "sparse", str(SparseSpec.parse(self.sparse)))
            except XmrError as e:
                raise XmrError(str(e)) from None
        if self.pseudo_texts is not None and self.pseudo_texts not in PSEUDO_TEXT_KINDS:
            raise XmrError(f"pseudo_texts must be one of {', '.join(PSEUDO_TEXT_KINDS)}, got {self.pseudo_texts!r}")
        if self.pseudo_texts is not None and self.train.components.sparse is None:  # A3VSE's terms, at their defaults
            object.__setattr__(self, "train", dataclasses.replace(
                self.train, components=dataclasses.replace(self.train.components, sparse=SparseAlignmentConfig())))
        if self.text_encoder in TEXT_MODELS.names():
            if self.text_model is None:
                object.__setattr__(self, "text_model", TextEncoderConfig(kind=self.text_encoder))  # type: ignore[arg-type]  # a TEXT_MODELS name, checked above
            elif self.text_model.kind != self.text_encoder:
                raise XmrError(f"text_encoder {self.text_encoder!r} but text_model.kind {self.text_model.kind!r}")
        else:
            if not is_encoder_name(self.text_encoder):
                known = sorted([*ENCODERS.names(), *TEXT_MODELS.names()])
                raise XmrError(f"unknown text encoder {self.text_encoder!r}; known: {', '.join(known)}")
            check_declared_side(self.text_encoder, "text")
            if self.text_model is not None:
                raise XmrError(f"text_model settings need a word-level text encoder "
                                 f"({', '.join(TEXT_MODELS.names())}), not {self.text_encoder!r}")
        HEADS.get(self.head)
        if self.augment.views:
            check_augmentable(resolve_encoder(self.image_encoder)[0], self.image_encoder)
        if self.finetune_image_blocks:
            blocks = getattr(resolve_encoder(self.image_encoder)[0], "n_blocks", None)
            if not isinstance(blocks, int):
                raise XmrError(f"image encoder {self.image_encoder!r} cannot be fine-tuned (it is not split into "
                               "blocks; efficientnet-lite0 is)")
            check_tail_blocks(self.finetune_image_blocks, blocks, self.image_encoder)
            if self.image_head is not None:
                raise XmrError("a fine-tuned image encoder feeds pooled features: it takes no {param}",
                               param=Param("image_head"))
        if self.finetune_text_layers:
            layers = getattr(resolve_encoder(self.text_encoder)[0], "n_layers", None)
            if self.text_model is not None or not isinstance(layers, int):
                raise XmrError(f"text encoder {self.text_encoder!r} cannot be fine-tuned by layers (minilm-l6 can)")
            check_tail_layers(self.finetune_text_layers, layers, self.text_encoder)
        if self.eval_texts_per_item is not None and self.eval_texts_per_item < 1:
            raise XmrError(f"eval_texts_per_item must be >= 1 or None, got {self.eval_texts_per_item}")
        SIMILARITIES.get(self.similarity)  # an unknown similarity, listing the known ones
        check_fit(self.train, self.train.components, self.objective_fit)

    @property
    def objective_fit(self) -> Fit:
        """What the run's objective components are checked against (its similarity, branches, pseudo pairs)."""
        return Fit(self.similarity, self.two_branch is not None,
                   frozenset({"sparse"} if self.pseudo_texts is not None else ()))

    @classmethod
    def upgrade_saved(cls, saved: Mapping[str, Any]) -> dict[str, Any]:
        """A saved ``run.json`` in today's form: its ``train`` upgraded knowing whether the run had pseudo
        pairs (:meth:`~xmr.training.TrainConfig.upgrade_saved`)."""
        out = dict(saved)
        if isinstance(out.get("train"), dict):
            pseudo = ("sparse",) if out.get("pseudo_texts") is not None else ()
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
    return select_split(read_items(source, image_root=None if manifest else cfg.image_root, skip_bad=skip_bad),
                        split)


class RunEncoders(TypedDict):
    """The run's encoders, as :func:`~xmr.workflows.features.encode_items` keyword arguments."""

    image_encoder: ImageEncoder
    text_encoder: TextEncoder


def run_encoders(cfg: RunConfig, vocab: Vocabulary | None = None) -> RunEncoders:
    """The run's encoders as ``encode_items`` keyword arguments (weights load on first use).

    A word-level text model's "encoder" turns texts into id rows of ``vocab`` (the training
    vocabulary: the trained model's ``vocab``), so it is required then.
    """
    image_encoder: ImageEncoder = create_image_encoder(cfg.image_encoder)
    if cfg.finetune_image_blocks:  # the trunk's activations; the model's tail does the rest
        image_encoder = TrunkEncoder(image_encoder, cfg.finetune_image_blocks)
    if cfg.text_model is None:
        text_encoder: TextEncoder = create_text_encoder(cfg.text_encoder)
        if cfg.finetune_text_layers:  # the trunk's token states; the model's text tail does the rest
            text_encoder = TextTrunkEncoder(text_encoder, cfg.finetune_text_layers, cfg.finetune_text_length)
        return {"image_encoder": image_encoder, "text_encoder": text_encoder}
    if vocab is None:
        raise XmrError(f"the run's {cfg.text_encoder} text model needs its vocabulary (the model's vocab.json)")
    return {"image_encoder": image_encoder, "text_encoder": WordIdsEncoder(vocab, cfg.text_model.length)}
