"""A retrieval run's paper features, each a nested frozen config present only when used.

:class:`FinetuneConfig` (``RunConfig.finetune``): the encoders' last blocks / layers trained with the
heads (dual-path, Zheng et al., "Dual-path Convolutional Image-Text Embeddings with Instance Loss",
Sec. III); None keeps both encoders frozen. :class:`SparseDataConfig` (``RunConfig.sparse``): A3VSE's
data (Huang et al., "Annotation Efficient Cross-Modal Retrieval with Adversarial Attentive
Alignment", MM 2019, Sec. 4.1 and 3.2): a thinned training split and pseudo-texts for the
un-annotated images; None trains on every text of the split. Each validates itself and checks its
fit with the run in its own method; the run config asks them.

Files written before these were grouped hold their settings flat (``finetune_image_blocks``,
``sparse``: the spec string, ``pseudo_texts`` ...); :func:`upgrade_flat` reads them as the nested
form, and each class's :meth:`from_flat` builds the config those flat names describe (the CLI's
options use them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from xmr.data.sparse import SparseSpec
from xmr.encoders import ImageEncoder, TextEncoder
from xmr.encoders.finetune import TailDepth, check_depth, parse_depth, tail_depth, trunk_of
from xmr.errors import Param, XmrError
from xmr.semantics.labeller import PSEUDO_TEXT_KINDS


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning the encoders' last blocks / layers with the heads (present when one encoder is).

    Attributes:
        image_blocks: fine-tune the last N blocks of the image encoder (EfficientNet-Lite0: 16
            MBConv blocks, then the 1x1 head conv, which any N >= 1 includes; 0: the encoder stays
            frozen; ``"all"``: the whole network, the stem too, dual-path Stage II). The frozen trunk's
            output is cached once (float16, :mod:`xmr.encoders.trunk`; ``"all"``: the pixels) and each
            epoch runs only the tail, at ``train.finetune_lr``; the tail is saved with the model, so
            eval / index / search use it.
        freeze_bn: keep the image tail's BatchNorm statistics (ImageNet's) frozen; their scale and
            shift still train.
        text_layers: fine-tune the last N transformer layers of the (frozen) text encoder,
            minilm-l6: 1..6 (0: frozen; ``"all"``: the embeddings too); the trunk's token states are
            cached (float16, :mod:`xmr.encoders.text_trunk`; ``"all"``: the token ids) at
            ``text_length`` tokens per text (longer texts are cut there; a warning counts them).
        text_length: tokens per text of the cached token states.

    Class attributes:
        FLAT: the flat ``RunConfig`` name of each field (older files, the CLI's options).
    """

    FLAT: ClassVar[Mapping[str, str]] = {"finetune_image_blocks": "image_blocks", "finetune_freeze_bn": "freeze_bn",
                                         "finetune_text_layers": "text_layers", "finetune_text_length": "text_length"}
    image_blocks: TailDepth = 0
    freeze_bn: bool = True
    text_layers: TailDepth = 0
    text_length: int = 32

    def __post_init__(self) -> None:
        for name in ("image_blocks", "text_layers"):
            object.__setattr__(self, name, parse_depth(getattr(self, name), name))
        if not self.used(vars(self)):
            raise XmrError("a FinetuneConfig fine-tunes neither encoder (image_blocks and text_layers are 0); a run "
                           "with both encoders frozen has finetune=None")

    @staticmethod
    def used(values: Mapping[str, Any]) -> bool:
        """Whether settings ``{field: value}`` fine-tune an encoder (else the run has no FinetuneConfig)."""
        return bool(values.get("image_blocks") or values.get("text_layers"))

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> FinetuneConfig | None:
        """The config that the flat settings in ``flat`` (:attr:`FLAT`'s names) describe; None: no fine-tuning."""
        return _from_flat(cls, flat)

    def check_encoders(self, image_encoder: str, text_encoder: str, *, image_head: str | None,
                       word_level: bool) -> None:
        """Refuse encoders that cannot be fine-tuned as asked: an image encoder not split into blocks, or
        with a region head (a tail feeds pooled features); a text encoder without transformer layers
        (``word_level``: a trained word-level model); a tail longer than the encoder."""
        if self.image_blocks:
            blocks = tail_depth(image_encoder, "image")
            if blocks is None:
                raise XmrError(f"image encoder {image_encoder!r} cannot be fine-tuned (it is not split into "
                               "blocks or layers; efficientnet-lite0/1/2, efficientnet-lite0-fne and hf-clip:PATH are)")
            check_depth(self.image_blocks, blocks, image_encoder)
            if image_head is not None:
                raise XmrError("a fine-tuned image encoder feeds pooled features: it takes no {param}",
                               param=Param("image_head"))
        if self.text_layers:
            layers = tail_depth(text_encoder, "text")
            if word_level or layers is None:
                raise XmrError(f"text encoder {text_encoder!r} cannot be fine-tuned by layers "
                               "(minilm-l6 can, and hf-clip:PATH)")
            check_depth(self.text_layers, layers, text_encoder, "layers", lo=1)

    def image_trunk(self, encoder: ImageEncoder) -> ImageEncoder:
        """What the run encodes images with: the trunk's activations when its blocks are fine-tuned (the
        model's tail does the rest), else ``encoder`` itself."""
        if not self.image_blocks:
            return encoder
        trunk: ImageEncoder = trunk_of(encoder, self.image_blocks, freeze_bn=self.freeze_bn)
        return trunk

    def text_trunk(self, encoder: TextEncoder) -> TextEncoder:
        """What the run encodes texts with: the trunk's token states when its layers are fine-tuned (the
        model's text tail does the rest), else ``encoder`` itself."""
        if not self.text_layers:
            return encoder
        trunk: TextEncoder = trunk_of(encoder, self.text_layers, length=self.text_length)
        return trunk


@dataclass(frozen=True)
class SparseDataConfig:
    """A3VSE's training data: a sparse training split and pseudo-texts (present when either is used).

    Attributes:
        spec: keep texts for a seeded fraction of the training images only
            (:class:`~xmr.data.sparse.SparseSpec`, e.g. ``"0.1x1"``; seed ``train.seed``); the other
            training images are un-annotated. None: every training image keeps its texts.
        by_group: draw the annotated fraction over item groups (all drawings of one emoji
            annotated or none), not single images.
        pseudo_texts: pair un-annotated training images with pseudo-texts from their ImageNet
            labels, ``regional`` or ``global`` (A3VSE Sec. 3.2; :mod:`xmr.workflows.pseudo_texts`);
            the run's objective then trains A3VSE's terms (:attr:`inputs`).

    Class attributes:
        FLAT: the flat ``RunConfig`` name of each field (older files, the CLI's options).
    """

    FLAT: ClassVar[Mapping[str, str]] = {"sparse": "spec", "sparse_by_group": "by_group",
                                         "pseudo_texts": "pseudo_texts"}
    spec: str | None = None
    by_group: bool = True
    pseudo_texts: str | None = None

    def __post_init__(self) -> None:
        if not self.used(vars(self)):
            raise XmrError("a SparseDataConfig holds neither a spec nor pseudo_texts; a run that trains on every "
                           "text of its split has sparse=None")
        if self.spec is not None:
            try:
                object.__setattr__(self, "spec", str(SparseSpec.parse(self.spec)))
            except XmrError as e:
                raise XmrError(str(e)) from None
        if self.pseudo_texts is not None and self.pseudo_texts not in PSEUDO_TEXT_KINDS:
            raise XmrError(f"pseudo_texts must be one of {', '.join(PSEUDO_TEXT_KINDS)}, got {self.pseudo_texts!r}")

    @staticmethod
    def used(values: Mapping[str, Any]) -> bool:
        """Whether settings ``{field: value}`` change the run's data (else the run has no SparseDataConfig)."""
        return values.get("spec") is not None or values.get("pseudo_texts") is not None

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> SparseDataConfig | None:
        """The config that the flat settings in ``flat`` (:attr:`FLAT`'s names; ``sparse`` is the spec
        string) describe; None: the run's data as it is."""
        return _from_flat(cls, flat)

    @property
    def inputs(self) -> frozenset[str]:
        """The objective components this data feeds (``"sparse"``: A3VSE's terms train on the pseudo pairs)."""
        return frozenset({"sparse"} if self.pseudo_texts is not None else ())


#: RunConfig field -> the paper feature's config class
PAPER_FEATURES: dict[str, type[FinetuneConfig] | type[SparseDataConfig]] = {
    "finetune": FinetuneConfig, "sparse": SparseDataConfig}


def _from_flat(cls: Any, flat: Mapping[str, Any]) -> Any:
    values = {name: flat[old] for old, name in cls.FLAT.items() if old in flat}
    return cls(**values) if cls.used(values) else None


def upgrade_flat(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A saved ``run.json`` object with each paper feature's flat settings (files written before they were
    grouped) in the nested form: ``{"finetune": {...} or None, "sparse": {...} or None}``; a file already
    nested (``sparse`` an object) or without the feature's settings keeps its own. Values are moved, not
    checked: the loader checks their JSON types as the nested config's fields."""
    out = dict(saved)
    for field, cls in PAPER_FEATURES.items():
        if isinstance(out.get(field), dict):
            continue
        values = {name: out.pop(old) for old, name in cls.FLAT.items() if old in out}
        if values:
            out[field] = values if cls.used(values) else None
    return out
