"""The composed-retrieval model: query-text encoder, optional joint projection g, a composer.

Two set-ups, as in the joint-manifold seed paper (Sec. 4.4, Table 4):

* **pretrained space** (``in_joint=False``): the composer works on the (L2-normalised) frozen
  image features psi_x and the query-text feature phi_t; its output is compared with the frozen
  features of the target images. Only the composer (and a word-level text model) learn.
* **in Joint** (``in_joint=True``): one fully connected projection per modality, g_v and g_t,
  maps both into a joint space (unit sphere); the composer works there and the targets are
  g_v(psi_target). Training adds the image-text alignment term of Eq. 2,
  L = L(g(psi_x), g(phi_t)) + L(f_compose(g(psi_x), g(phi_q)), g(psi_target)).

The ``relation`` composer reads local features: the region rows of a region image encoder
(e.g. ``efficientnet-lite0-regions``, 3 x 3 cells of the same 1280-d map), projected by g_v
region by region in Joint.

Saved as ``model.safetensors`` + ``composed.json`` (+ ``vocab.json`` for a word-level text model).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xmr.compose.losses import COMPOSE_LOSSES
from xmr.compose.modules import COMPOSERS, create_composer
from xmr.errors import Param, XmrError
from xmr.text import TextEncoderConfig, Vocabulary, create_text_model
from xmr.utils.folders import atomic_folder, recover_folder
from xmr.utils.io import load_json_object, save_json
from xmr.utils.numbers import check_finite_fields
from xmr.utils.weights import load_weights, save_weights, saved_model_id

CONFIG_FILE = "composed.json"
VOCAB_FILE = "vocab.json"


@dataclass(frozen=True)
class ComposedModelConfig:
    """Architecture of a :class:`ComposedModel`.

    Attributes:
        composer: a registered composer (``tirg``, ``relation``, ``concat``, ``add``).
        in_joint: compose in a learned joint space (the seed's "in Joint") instead of the
            pretrained image space.
        image_dim: pretrained image feature size (the gallery / target features).
        text_dim: query-text feature size (a frozen encoder's, or the word-level model's output).
        embed_dim: joint-space size (``in_joint`` only).
        region_dim: local feature size for ``relation`` (0 otherwise); in Joint it must equal
            ``image_dim`` (g_v projects each region).
        text_model: a word-level query-text model (``TextEncoderConfig`` as a dict), or None for
            cached features of a frozen text encoder.
        loss: ``batch_classification`` or ``soft_triplet`` (TIRG's two).
        init_scale: initial logit scale of the batch classification loss (learnable).
    """

    composer: str = "tirg"
    in_joint: bool = False
    image_dim: int = 1280
    text_dim: int = 384
    embed_dim: int = 512
    region_dim: int = 0
    text_model: dict[str, object] | None = None
    loss: str = "batch_classification"
    init_scale: float = 16.0

    def __post_init__(self) -> None:
        check_finite_fields(self)
        cls = COMPOSERS.get(self.composer)  # unknown -> XmrError listing the known ones
        COMPOSE_LOSSES.get(self.loss)  # unknown -> XmrError listing the known ones
        for name in ("image_dim", "text_dim", "embed_dim"):
            if int(getattr(self, name)) < 1:
                raise XmrError(f"composed model {name} must be >= 1, got {getattr(self, name)}")
        if getattr(cls, "needs_regions", False):
            if self.region_dim < 1:
                raise XmrError(f"the {self.composer} composer reads region features; give a region image encoder")
            if self.in_joint and self.region_dim != self.image_dim:
                raise XmrError(f"in Joint, g_v projects every region: region_dim ({self.region_dim}) must equal "
                               f"image_dim ({self.image_dim})")
        if not self.init_scale > 0:
            raise XmrError(f"init_scale must be > 0, got {self.init_scale}")

    @property
    def needs_regions(self) -> bool:
        return bool(getattr(COMPOSERS.get(self.composer), "needs_regions", False))

    @property
    def text_config(self) -> TextEncoderConfig | None:
        return None if self.text_model is None else TextEncoderConfig.from_dict(dict(self.text_model))


class ComposedModel(nn.Module):
    """Composes (reference image, modification text) into a query for the target gallery.

    Shapes: ``compose(image (B, image_dim) or regions (B, R, region_dim), text (B, text_in))``
    -> (B, D); ``embed_gallery(image (B, image_dim))`` -> (B, D); ``embed_captions(text)`` ->
    (B, D) (in Joint only). D = ``embed_dim`` in Joint, ``image_dim`` otherwise; all L2-normalised.
    ``text_in`` is the frozen encoder's dim, or the id-row length for a word-level model.
    """

    def __init__(self, config: ComposedModelConfig, vocab: Vocabulary | None = None, *,
                 pretrained_words: bool = True) -> None:
        super().__init__()
        self.config, self.vocab = config, vocab
        self.text_model: nn.Module | None = None
        tcfg = config.text_config
        if tcfg is not None:
            if vocab is None:
                raise XmrError(f"a {tcfg.kind} query-text model needs its vocabulary")
            if not pretrained_words:
                tcfg = dataclasses.replace(tcfg, init="random")
            self.text_model = create_text_model(tcfg, vocab)
        d_img, d_txt = config.image_dim, config.text_dim
        self.g_image: nn.Linear | None = None
        self.g_text: nn.Linear | None = None
        if config.in_joint:  # the seed's projection module: one fc layer after each encoder
            self.g_image = nn.Linear(config.image_dim, config.embed_dim)
            self.g_text = nn.Linear(config.text_dim, config.embed_dim)
            d_img = d_txt = config.embed_dim
        kwargs: dict[str, int] = {}
        if config.needs_regions:
            kwargs["region_dim"] = config.embed_dim if config.in_joint else config.region_dim
        self.composer = create_composer(config.composer, d_img, d_txt, **kwargs)
        self.log_scale = nn.Parameter(torch.tensor(math.log(config.init_scale)))
        self.log_joint_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.model_id = "untrained"

    @property
    def out_dim(self) -> int:
        return self.config.embed_dim if self.config.in_joint else self.config.image_dim

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=100.0)

    @property
    def joint_scale(self) -> torch.Tensor:
        return self.log_joint_scale.exp().clamp(max=100.0)

    def _image(self, feats: torch.Tensor) -> torch.Tensor:
        """psi (normalised) or g_v(psi) (normalised); works on (..., image_dim)."""
        x = F.normalize(feats, dim=-1)
        return F.normalize(self.g_image(x), dim=-1) if self.g_image is not None else x

    def _text(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.text_model(feats.long()) if self.text_model is not None else feats
        x = F.normalize(x, dim=-1)
        return F.normalize(self.g_text(x), dim=-1) if self.g_text is not None else x

    def compose(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The composed query psi_xt, L2-normalised. ``image`` is (B, R, region_dim) for relation."""
        if self.config.needs_regions and image.ndim != 3:
            raise XmrError(f"the {self.config.composer} composer needs region features (B, R, C), "
                           f"got {tuple(image.shape)}")
        return F.normalize(self.composer(self._image(image), self._text(text)), dim=-1)

    def embed_gallery(self, image: torch.Tensor) -> torch.Tensor:
        """Target-space embeddings of gallery images. Shape: (B, image_dim) -> (B, D)."""
        return self._image(image)

    def embed_captions(self, text: torch.Tensor) -> torch.Tensor:
        """g_t(phi_t) of image captions (Eq. 2's alignment term); in Joint only."""
        if self.g_text is None:
            raise XmrError("captions are embedded in the joint space only; this model composes in the pretrained space")
        return self._text(text)

    @torch.inference_mode()
    def numpy(self, fn: str, *arrays: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """Eval-mode helper: ``numpy("compose", regions_or_feats, text_feats)`` etc. Shape: (n, D)."""
        was = self.training
        self.eval()
        method = getattr(self, fn)
        n = len(arrays[0])
        out = [method(*(torch.from_numpy(np.ascontiguousarray(a[i:i + batch_size], dtype=np.float32))
                        for a in arrays)) for i in range(0, n, batch_size)]
        self.train(was)
        return torch.cat(out).numpy() if out else np.zeros((0, self.out_dim), np.float32)

    def save(self, directory: str | Path, extra: dict[str, object] | None = None) -> str:
        """Write weights + config atomically; returns the model id (hash of the weights)."""
        with atomic_folder(directory) as tmp:  # one unit: a crash keeps the previous checkpoint whole
            self.model_id = save_weights(self, tmp)
            if self.vocab is not None:
                self.vocab.save(tmp / VOCAB_FILE)
            save_json(tmp / CONFIG_FILE, {"model_id": self.model_id, "config": self.config, **(extra or {})})
        return self.model_id


def load_composed_model(directory: str | Path) -> ComposedModel:
    """Rebuild a :class:`ComposedModel` saved by :meth:`ComposedModel.save`."""
    directory = Path(directory)
    recover_folder(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise XmrError("{directory} holds no composed model ({file} missing); train a composed run there "
                       "({fix})", directory=str(directory), file=CONFIG_FILE, fix=Param("task", "composed"))
    meta = load_json_object(directory / CONFIG_FILE, "composed model description")
    try:
        config = ComposedModelConfig(**meta["config"])
    except (TypeError, KeyError, ValueError) as e:
        raise XmrError(f"{directory / CONFIG_FILE}: not a composed model config ({e})") from None
    vocab = Vocabulary.load(directory / VOCAB_FILE) if config.text_model is not None else None
    model = ComposedModel(config, vocab, pretrained_words=False)
    model.model_id = load_weights(model, directory, expect_id=saved_model_id(meta, directory / CONFIG_FILE))
    return model.eval()


__all__ = ["ComposedModelConfig", "ComposedModel", "load_composed_model"]
