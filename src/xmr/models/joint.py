"""The joint embedding model: one projection head per modality plus a temperature.

Saved as ``model.safetensors`` (weights) + ``model.json`` (the :class:`ModelConfig` and the
model id) in one folder, plus ``vocab.json`` when the text side is a trainable word-level model;
:func:`load_model` rebuilds it from those files alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xmr.errors import XmrError
from xmr.evaluation.similarity import SIMILARITIES
from xmr.modality import Modality, check_modality
from xmr.models.heads import HEADS, create_head
from xmr.runtime.device import to_numpy
from xmr.text import TextEncoderConfig, Vocabulary, create_text_model, shift_positions
from xmr.utils.folders import atomic_folder, recover_folder
from xmr.utils.io import load_json_object, save_json, without_removed_fields
from xmr.utils.numbers import check_finite_fields
from xmr.utils.threads import Work
from xmr.utils.weights import load_weights, save_weights, saved_model_id

VOCAB_FILE = "vocab.json"
#: weights older checkpoints held in the search model's file: W_share (now the instance objective's)
#: and GXN's generative heads (now beside the model, :mod:`xmr.models.generative`)
NOT_SERVED = ("classifier.", "captioner.", "image_generator.")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a :class:`JointModel` (saved next to every checkpoint).

    ``image_tail``: the fine-tuned last blocks of the image encoder, ``{"encoder": <registered
    name>, "n_tail": N, "freeze_bn": bool, "trunk_id": <the trunk encoder's id>}``; the image
    features are then the trunk's boundary activations (:mod:`xmr.encoders.trunk`) and
    ``image_dim`` is the tail's output size. ``text_tail``: the same for the text encoder's last
    layers, ``{"encoder", "n_tail", "length", "trunk_id"}`` (:mod:`xmr.encoders.text_trunk`).
    ``n_instances``: the classes of the instance loss's classifier W_share (the training groups; the
    instance objective's, :mod:`xmr.objectives.instance`; 0 without that loss).
    ``captioner`` / ``image_generator``: GXN's generative paths on the grounded branch, a
    :class:`~xmr.models.captioner.CaptionerConfig` / :class:`~xmr.models.image_gan.GanConfig` as
    a dict (two-branch models only); their heads are kept beside the model, not in it
    (:mod:`xmr.models.generative`).
    """

    image_encoder: str
    text_encoder: str
    image_dim: int
    text_dim: int
    embed_dim: int = 256
    head: str = "mlp"
    hidden_dim: int = 1024
    dropout: float = 0.1
    init_temperature: float = 0.07
    learn_temperature: bool = True
    n_instances: int = 0
    similarity: str = "cosine"
    two_branch: float | None = None
    text_model: dict[str, object] | None = None
    image_head: str | None = None
    image_regions: int = 0
    image_tail: dict[str, object] | None = None
    text_tail: dict[str, object] | None = None
    captioner: dict[str, object] | None = None
    image_generator: dict[str, object] | None = None

    @property
    def training_work(self) -> Work:
        """``"light"`` when training updates projection heads on cached features alone, ``"heavy"``
        when it also runs encoder layers (fine-tuned tails, a word-level text model, GXN's decoder
        or generator): the thread count it gets (:mod:`xmr.utils.threads`)."""
        encoder_layers = (self.image_tail, self.text_tail, self.text_model, self.captioner, self.image_generator)
        return "heavy" if any(x is not None for x in encoder_layers) else "light"

    def __post_init__(self) -> None:
        check_finite_fields(self)
        for name in ("image_dim", "text_dim", "embed_dim", "hidden_dim"):
            if int(getattr(self, name)) <= 0:
                raise XmrError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise XmrError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.init_temperature <= 1:
            raise XmrError(f"init_temperature must be in (0, 1], got {self.init_temperature}")
        HEADS.get(self.head)  # unknown head -> XmrError listing the known ones
        if getattr(HEADS.get(self.head), "needs_regions", False):
            raise XmrError(f"head {self.head!r} reads image regions; give it as the image head")
        if getattr(HEADS.get(self.image_head_name), "needs_regions", False) and int(self.image_regions) < 1:
            raise XmrError(f"image head {self.image_head_name!r} needs a region image encoder "
                             "(e.g. efficientnet-lite0-regions)")
        SIMILARITIES.get(self.similarity)  # unknown similarity -> XmrError listing the known ones
        if self.two_branch is not None:
            if not 0.0 < float(self.two_branch) < 1.0:
                raise XmrError(f"two_branch (GXN's lambda) must be in (0, 1), got {self.two_branch}")
            if int(self.embed_dim) % 2:
                raise XmrError(f"a two-branch model splits embed_dim in halves; got an odd {self.embed_dim}")
        if int(self.n_instances) < 0:
            raise XmrError(f"n_instances must be >= 0, got {self.n_instances}")
        for name, tail in (("image_tail", self.image_tail), ("text_tail", self.text_tail)):
            if tail is not None and not (isinstance(tail.get("encoder"), str) and isinstance(tail.get("n_tail"), int)):
                raise XmrError(f"{name} needs an encoder name and n_tail, got {tail}")
        half = int(self.embed_dim) // 2  # the grounded branch's size: what each generative path reads
        for name, spec, key in (("captioner", self.captioner, "in_dim"), ("image_generator", self.image_generator,
                                                                         "cond_dim")):
            if spec is not None and self.two_branch is None:
                raise XmrError(f"a {name} reads the grounded branch: it needs a two-branch model")
            if spec is not None and spec.get(key) != half:
                raise XmrError(f"the {name} reads a grounded feature of size {half}, got {key} {spec.get(key)}")
        tm = self.text_config
        if tm is not None and tm.out_dim != self.text_dim:
            raise XmrError(f"text_dim ({self.text_dim}) must equal the text model's out_dim ({tm.out_dim})")

    @property
    def image_head_name(self) -> str:
        """The image side's head (``image_head``, else the shared ``head``)."""
        return self.image_head or self.head

    @property
    def text_config(self) -> TextEncoderConfig | None:
        """The trainable word-level text model (``text_model`` as a config), or None."""
        return None if self.text_model is None else TextEncoderConfig.from_dict(dict(self.text_model))


class JointModel(nn.Module):
    """Maps encoder features of both modalities into one L2-normalised space.

    Shapes: ``embed_images`` (B, image_dim) -> (B, embed_dim); ``embed_texts`` (B, text_dim) ->
    (B, embed_dim). ``logit_scale`` = 1/temperature, stored as a log so it stays positive.
    It holds what a search needs (encoder tails, heads, similarity, temperature) and nothing else:
    the instance loss's shared classifier W_share (dual-path paper, Eqs. 5-8) is the instance
    objective component's (:mod:`xmr.objectives.instance`), GXN's caption decoder and image
    generator are kept beside the model (:mod:`xmr.models.generative`); checkpoints written before
    held them in the model's file (``classifier.*``, ``captioner.*``, ``image_generator.*``), and
    loading drops them there. ``config.similarity`` says how the space scores an (image, text) pair:
    ``cosine`` (inner product) or GXN's ``order`` violation; training, validation, evaluation and
    search all use it.

    With ``config.text_model`` the text side is trained end to end: ``embed_texts`` takes
    float32 word-id rows (B, length) from :class:`~xmr.text.word_ids.WordIdsEncoder`, runs
    the word-level model (the dual-path text CNN or a bi-GRU, :mod:`xmr.text`) to
    (B, text_dim) and then the text head; in training mode a text CNN sees position-shifted
    rows (dual-path paper, Sec. III-B).

    Args:
        config: the architecture.
        vocab: the word-level model's vocabulary (required with ``config.text_model``).
        word_vectors: ``(words, vectors)`` for a GloVe-initialised word table (None: the
            packaged GloVe); ignored with random init.
        pretrained_words: initialise the word table as the config says; False starts it at
            random whatever the config (for :func:`load_model`, whose weights replace it).
    """

    def __init__(self, config: ModelConfig, vocab: Vocabulary | None = None,
                 word_vectors: tuple[list[str], np.ndarray] | None = None, *,
                 pretrained_words: bool = True) -> None:
        super().__init__()
        self.config = config
        self.vocab = vocab
        self.text_model: nn.Module | None = None
        text_cfg = config.text_config
        self._shift_words = text_cfg is not None and text_cfg.shift_for_training  # position shift in training
        if text_cfg is not None:
            if vocab is None:
                raise XmrError(f"a {text_cfg.kind} text model needs its vocabulary")
            if not pretrained_words:
                text_cfg = dataclasses.replace(text_cfg, init="random")
            self.text_model = create_text_model(text_cfg, vocab, word_vectors)
        kw = {"hidden_dim": config.hidden_dim, "dropout": config.dropout}
        img_kw = dict(kw)
        if getattr(HEADS.get(config.image_head_name), "needs_regions", False):  # A3VSE's G^v over regions
            img_kw["regions"] = config.image_regions
        branch_dim = config.embed_dim // 2 if config.two_branch is not None else config.embed_dim
        self.image_head = create_head(config.image_head_name, config.image_dim, branch_dim, **img_kw)
        self.text_head = create_head(config.head, config.text_dim, branch_dim, **kw)
        if config.two_branch is not None:  # GXN's grounded pair of heads beside the abstract one
            self.image_head_grounded = create_head(config.image_head_name, config.image_dim, branch_dim, **img_kw)
            self.text_head_grounded = create_head(config.head, config.text_dim, branch_dim, **kw)
        self.image_tail = _encoder_tail(config.image_tail, "image")  # fine-tuned last blocks, or None
        self.text_tail = _encoder_tail(config.text_tail, "text")  # fine-tuned last transformer layers, or None
        log_scale = torch.tensor(math.log(1.0 / config.init_temperature))
        self.log_logit_scale = nn.Parameter(log_scale, requires_grad=config.learn_temperature)
        self.model_id = "untrained"

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """:meth:`torch.nn.Module.load_state_dict`, less the weights older checkpoints kept in the search model's
        file (:data:`NOT_SERVED`: the instance classifier, GXN's generative heads)."""
        kept = {k: v for k, v in state_dict.items() if not k.startswith(NOT_SERVED)}
        return super().load_state_dict(kept, strict, assign)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=100.0)

    def embed_images(self, feats: torch.Tensor) -> torch.Tensor:
        if self.image_tail is not None:  # trunk rows -> the tail's pooled features
            feats = tail_features(self.image_tail, feats)
        if self.config.two_branch is None:
            return self.image_head(feats)
        return self._join(self.image_head(feats), self.image_head_grounded(feats))

    def embed_texts(self, feats: torch.Tensor) -> torch.Tensor:
        feats = self._text_features(feats)
        if self.config.two_branch is None:
            return self.text_head(feats)
        return self._join(self.text_head(feats), self.text_head_grounded(feats))

    def _text_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Encoder features as they are, a text tail's output for trunk rows, or the word-level model's for id rows."""
        if self.text_tail is not None:
            return tail_features(self.text_tail, feats)
        if self.text_model is None:
            return feats
        ids = feats.long()
        if self.training and self._shift_words:
            ids = shift_positions(ids)
        return self.text_model(ids)

    def embed_grounded(self, feats: torch.Tensor, modality: str) -> torch.Tensor:
        """The grounded branch alone (where GXN's generative paths attach). Shape: (B, embed_dim / 2)."""
        if self.config.two_branch is None:
            raise XmrError("this model has one branch; train it with a two-branch lambda for a grounded branch")
        if modality == "image":
            if self.image_tail is not None:
                feats = tail_features(self.image_tail, feats)
            return self.image_head_grounded(feats)
        return self.text_head_grounded(self._text_features(feats))

    def _join(self, abstract: torch.Tensor, grounded: torch.Tensor) -> torch.Tensor:
        """[sqrt(lam) h, sqrt(1 - lam) l]: any pair score s of the joined vectors is GXN's Eq. 3,
        s* = lam s(t_h, v_h) + (1 - lam) s(t_l, v_l), for the inner product and for the order
        violation alike (both are homogeneous of degree 2 in a positive scale); the joined
        vector has unit norm, so FAISS, evaluation and re-ranking use it unchanged."""
        lam = float(self.config.two_branch)  # type: ignore[arg-type]  # only called on two-branch models
        return torch.cat([math.sqrt(lam) * abstract, math.sqrt(1.0 - lam) * grounded], dim=-1)

    @torch.inference_mode()
    def embed_numpy(self, feats: np.ndarray, modality: Modality, batch_size: int = 4096) -> np.ndarray:
        """Inference helper: numpy features in, float32 embeddings out. Shape: (n, embed_dim).

        ``modality`` picks the head; anything but ``"image"`` or ``"text"`` is refused (a
        ``"images"`` once fell through to the text head).
        """
        fn = self.embed_images if check_modality(modality) == "image" else self.embed_texts
        if (self.image_tail if modality == "image" else self.text_tail) is not None:
            batch_size = min(batch_size, 64)  # a tail's inner activations are large
        was = self.training
        self.eval()
        device = self.log_logit_scale.device  # the model's, where the features go
        out = [fn(torch.from_numpy(np.ascontiguousarray(feats[i:i + batch_size], dtype=np.float32)).to(device))
               for i in range(0, len(feats), batch_size)]
        self.train(was)
        return to_numpy(torch.cat(out)) if out else np.zeros((0, self.config.embed_dim), np.float32)

    def save(self, directory: str | Path, extra: dict[str, object] | None = None,
             beside: Callable[[Path], object] | None = None) -> str:
        """Write weights + config (+ vocabulary) as one unit; returns the model id (hash of the weights).

        The files are written into a temporary folder beside ``directory`` that then replaces
        it (:func:`~xmr.utils.io.atomic_folder`): a crash at any point leaves the previous
        checkpoint whole, never new weights beside an old ``model.json``. ``beside`` writes what
        else the checkpoint keeps into that folder (GXN's generative heads, :mod:`xmr.models.generative`).
        """
        with atomic_folder(directory) as tmp:
            self.model_id = save_weights(self, tmp)
            if self.vocab is not None:
                self.vocab.save(tmp / VOCAB_FILE)
            if beside is not None:
                beside(tmp)
            save_json(tmp / "model.json", {"model_id": self.model_id, "config": self.config, **(extra or {})})
        return self.model_id


def tail_features(tail: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """A fine-tuned tail's features of cached trunk rows: its ``features`` (an
    :class:`~xmr.encoders.finetune.EncoderTail`), or an image / text tail's ``unflatten`` then forward."""
    features = getattr(tail, "features", None)
    if features is not None:
        out: torch.Tensor = features(rows)
        return out
    parts = tail.unflatten(rows)  # type: ignore[operator]  # an ImageTail or a TextTail
    return tail(*parts) if isinstance(parts, tuple) else tail(parts)


def _encoder_tail(spec: dict[str, object] | None, modality: Modality) -> nn.Module | None:
    """The fine-tuned tail a model config names (``image_tail`` / ``text_tail``), pretrained until the
    saved weights load; None without one. A tail cut from another trunk than this encoder's is refused."""
    if spec is None:
        return None
    from xmr.encoders import ImageEncoder, TextEncoder, create_image_encoder, create_text_encoder
    from xmr.encoders.finetune import parse_depth
    from xmr.encoders.text_trunk import TextTrunkEncoder
    from xmr.encoders.trunk import TrunkEncoder

    name = str(spec["encoder"])
    base: ImageEncoder | TextEncoder = create_image_encoder(name) if modality == "image" else create_text_encoder(name)
    cut = getattr(base, "trunk_encoder", None)  # the fine-tuning capability (xmr.encoders.finetune)
    trunk: Any
    if cut is not None:
        trunk = cut(parse_depth(spec["n_tail"], "n_tail"))
    elif isinstance(base, ImageEncoder):
        trunk = TrunkEncoder(base, int(spec["n_tail"]))  # type: ignore[call-overload]  # a JSON int, checked in ModelConfig
    else:
        trunk = TextTrunkEncoder(base, int(spec["n_tail"]),  # type: ignore[call-overload]  # a JSON int
                                 int(spec["length"]))  # type: ignore[call-overload]  # a JSON int
    if trunk.encoder_id != spec.get("trunk_id", trunk.encoder_id):
        raise XmrError(f"the model's {modality} tail was cut from {spec.get('trunk_id')!r}, "
                       f"this encoder is {trunk.encoder_id!r}")
    if isinstance(trunk, TrunkEncoder):
        return trunk.make_tail(freeze_bn=bool(spec.get("freeze_bn", True)))
    tail: nn.Module = trunk.make_tail()
    return tail


def load_model(directory: str | Path) -> JointModel:
    """Rebuild a :class:`JointModel` saved by :meth:`JointModel.save`; the weights must match its id."""
    directory = Path(directory)
    recover_folder(directory)
    meta = load_json_object(directory / "model.json", "xmr model description")
    try:
        config = ModelConfig(**without_removed_fields(ModelConfig, meta["config"]))
    except (TypeError, KeyError, ValueError, AttributeError) as e:  # AttributeError: "config" not an object
        raise XmrError(f"{directory / 'model.json'}: not an xmr model config ({e})") from None
    vocab = None
    text_cfg = config.text_config
    if text_cfg is not None:
        if not (directory / VOCAB_FILE).is_file():
            raise XmrError(f"{directory / VOCAB_FILE}: the vocabulary of the {text_cfg.kind} text model is missing")
        vocab = Vocabulary.load(directory / VOCAB_FILE)
    model = JointModel(config, vocab, pretrained_words=False)  # the saved weights replace the word table
    model.model_id = load_weights(model, directory, expect_id=saved_model_id(meta, directory / "model.json"))
    return model.eval()
