"""The ``composed`` task's run config (``run.json`` with ``"task": "composed"``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from xmr.compose.losses import COMPOSE_LOSSES
from xmr.compose.modules import COMPOSERS
from xmr.encoders import create_text_encoder
from xmr.errors import XmrError
from xmr.runs.base import BaseRunConfig
from xmr.tasks.composed.train import ComposedTrainConfig
from xmr.text import TEXT_MODELS, TextEncoderConfig

#: the word-level query encoder of ``text_encoder="lstm"``: TIRG's hidden-512 LSTM, trained from scratch
LSTM_CONFIG = TextEncoderConfig(kind="lstm", init="random", word_dim=50, hidden=512, out_dim=512, pool="last",
                                position_shift=False, length=32)


@dataclass(frozen=True)
class ComposedRunConfig(BaseRunConfig):
    """Everything that defines a composed run (saved as ``run.json``).

    Attributes:
        manifest: the image manifest (absolute path).
        triplets: the triplet JSONL file (absolute path).
        composer: ``tirg`` | ``relation`` | ``concat`` | ``add``.
        in_joint: compose in a learned joint space (seed Eq. 2) instead of the pretrained one.
        image_encoder: the frozen image encoder of the gallery / targets.
        region_encoder: the region encoder of the relation composer (default
            ``<image_encoder>-regions``).
        text_encoder: ``lstm`` (TIRG's hidden-512 LSTM trained from scratch, :data:`LSTM_CONFIG`)
            or a frozen encoder such as ``minilm-l6``.
        embed_dim: the joint-space size (in Joint).
        loss: ``batch_classification`` | ``soft_triplet``.
        val_fraction: share of the training triplets held out for validation when the triplet
            file has no ``val`` split (seeded by ``train.seed``).
        train: optimisation settings.
        task: ``"composed"``.
    """

    ABOUT: ClassVar[str] = ("a composed-query run (queried with a source image and a modification text; its gallery "
                            "is built at training time)")
    manifest: str
    triplets: str
    composer: str = "tirg"
    in_joint: bool = False
    image_encoder: str = "efficientnet-lite0"
    region_encoder: str | None = None
    text_encoder: str = "lstm"
    embed_dim: int = 512
    loss: str = "batch_classification"
    val_fraction: float = 0.1
    train: ComposedTrainConfig = field(default_factory=ComposedTrainConfig)
    task: str = field(default="composed", kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.val_fraction < 1:
            raise XmrError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.text_encoder in TEXT_MODELS.names():
            if self.text_encoder != "lstm":
                raise XmrError(f"composed queries take the lstm or a frozen text encoder, not {self.text_encoder!r}")
        else:
            create_text_encoder(self.text_encoder)  # unknown, or not a text encoder -> XmrError
        COMPOSERS.get(self.composer)  # unknown composer -> XmrError listing the known ones
        COMPOSE_LOSSES.get(self.loss)  # unknown -> XmrError listing the known ones

    @property
    def uses_word_model(self) -> bool:
        """True when the query text is encoded by the trained LSTM (ids of a vocabulary), not a frozen encoder."""
        return self.text_encoder in TEXT_MODELS.names()
