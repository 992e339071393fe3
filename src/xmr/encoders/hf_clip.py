"""A pretrained joint image-text model from local disk: the encoder family ``hf-clip:PATH``.

PATH is a transformers checkpoint folder (what ``save_pretrained`` writes: ``config.json``, the
weights, the image processor's and the tokenizer's files) of a model with
``get_image_features`` and ``get_text_features`` (CLIP, SigLIP, ...). The same name fills both
slots, ``--image-encoder hf-clip:PATH --text-encoder hf-clip:PATH``; the slot picks the side
(:func:`~xmr.encoders.base.create_image_encoder` / ``create_text_encoder``), and the two sides
share one loaded model. With ``--head identity --embed-dim <its feature size>`` a run serves the
checkpoint's own space zero-shot.

PATH may also be a model id, ``org/name`` or ``org/name@revision``, already in the local Hugging
Face cache (``$HF_HOME``, ``~/.cache/huggingface/hub``): its snapshot folder is the checkpoint
(:mod:`xmr.encoders.hub_cache`; an existing local folder of that name comes first; a run stores the
id pinned to its commit). Everything is read from that folder alone: ``local_files_only=True`` on
every ``from_pretrained``, no remote code, and only an existing folder is ever handed to
transformers (a missing one would otherwise be taken for a hub repository id): nothing is ever
downloaded. Nothing loads until the first encode.

* Image side: xmr's reader (:func:`~xmr.encoders.image_io.load_rgb`: its limits and one-line
  errors naming the file, alpha on white, EXIF rotation, reduced decoding of images far larger
  than the processor needs), then the checkpoint's own image processor (PIL backend, so the
  pixels do not depend on whether torchvision is installed) and
  ``get_image_features(pixel_values=...)``. Shape: (n, dim) float32.
* Text side: the checkpoint's tokenizer, truncated *and padded* to the model's maximum length
  (``text_config.max_position_embeddings``, or the tokenizer's ``model_max_length`` if smaller):
  a text's vector never depends on the other texts of its batch, as the feature cache needs
  (SigLIP pools the last position, so padding to the longest text of the batch would change it),
  then ``get_text_features(input_ids, attention_mask)``. Shape: (n, dim) float32.
* ``dim``: the config's ``projection_dim`` when it has one (CLIP), else measured once on a blank
  input; every batch is checked against it.
* ``encoder_id``: ``hf-clip-image-<h>`` / ``hf-clip-text-<h>``, ``h`` the first 16 hex digits of
  a SHA-1 over the side, xmr's preprocessing scheme (:data:`SCHEME`), the transformers major
  version and the *content* of the checkpoint's files (:func:`checkpoint_digest`): two checkpoints
  never share cached features, whatever their folders are called, and one checkpoint keeps its
  cache when moved. The digest is computed once per process and folder state (path, file
  names, sizes, mtimes) and kept in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmr.encoders.base import Encoder, EncoderFamily, ImageEncoder, TextEncoder, register_encoder_family
from xmr.encoders.checkpoint_files import checkpoint_digest
from xmr.encoders.hub_cache import resolve_local_or_cached
from xmr.encoders.image_io import ImageSource, UnreadableImage, load_rgb
from xmr.errors import XmrError
from xmr.modality import Modality
from xmr.runtime.device import to_numpy
from xmr.utils.files import LIMITS, check_input_file

log = logging.getLogger(__name__)

FAMILY = "hf-clip"
#: xmr's own preprocessing of the two sides; bump it when that changes (new ids, so new cache folders)
SCHEME = "1"
#: weights that may be absent from a checkpoint without changing its features (score scale and bias only)
_SCORE_ONLY = ("logit_scale", "logit_bias")
_MAX_REASON = 300


def _reason(e: BaseException) -> str:
    """One line of an exception from transformers (its messages run over many lines)."""
    text = " ".join(str(e).split())
    if len(text) > _MAX_REASON:
        text = text[:_MAX_REASON] + " ..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def checkpoint_dir(arg: str) -> Path:
    """The checkpoint folder ``arg`` names (``~`` expanded), or the snapshot folder of a model id (``org/name``,
    ``org/name@revision``) in the local Hugging Face cache (:mod:`xmr.encoders.hub_cache`; an existing local
    path comes first); a missing path or id, a file, or a folder without ``config.json`` is a one-line XmrError."""
    if not arg.strip():
        raise XmrError(f"{FAMILY}: give the checkpoint folder after the colon: {FAMILY}:PATH")
    found = resolve_local_or_cached(arg, family=FAMILY)
    if found is None:
        raise XmrError(f"{FAMILY} checkpoint folder not found: {arg}")
    path = found[0]
    if not path.is_dir():
        raise XmrError(f"{FAMILY} needs a checkpoint folder (what save_pretrained writes), not a file: {arg}")
    if not (path / "config.json").is_file():
        raise XmrError(f"{arg} is not a transformers checkpoint folder (no config.json)")
    return path


def read_config(path: Path) -> dict[str, Any]:
    """``config.json`` of a checkpoint folder as a dict; not JSON, or no ``model_type``, is an XmrError."""
    where = path / "config.json"
    check_input_file(where, "transformers config", max_bytes=LIMITS.json_bytes)
    try:
        cfg = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise XmrError(f"{where}: not a readable transformers config ({_reason(e)})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_type"), str):
        raise XmrError(f"{where}: not a transformers config (no model_type)")
    return cfg


def _check(arg: str) -> None:
    read_config(checkpoint_dir(arg))


def _canonical(arg: str) -> str:
    """A path made absolute; a model id in the cache pinned to its commit (``org/name@<commit>``: a run reads
    the snapshot it was made with); an id the cache lacks as typed (refused by the check)."""
    try:
        found = resolve_local_or_cached(arg, family=FAMILY)
    except XmrError:
        return arg
    return found[1] if found is not None else os.path.abspath(os.path.expanduser(arg))


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' warnings and progress bars off while it loads (its errors become ours)."""
    from transformers.utils import logging as hf_logging

    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise XmrError(f"{FAMILY} encoders need the transformers package (pip install transformers)") from None
    return transformers


def _size_field(value: object, key: str) -> int | None:
    got = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
    return got if isinstance(got, int) and got > 0 else None


def needed_side(processor: object) -> int | None:
    """The largest side an image processor resizes or crops to (``size`` / ``crop_size``), or
    None if it declares none: images far larger than this are decoded reduced."""
    sides = []
    for attr in ("size", "crop_size"):
        value = getattr(processor, attr, None)
        if isinstance(value, int):
            sides.append(value)
        elif value is not None:
            sides += [s for k in ("height", "width", "shortest_edge", "longest_edge")
                      if (s := _size_field(value, k)) is not None]
    return max(sides) if sides else None


class Checkpoint:
    """One checkpoint folder, shared by its image and text encoders: config, digest, and the
    model, image processor and tokenizer, each loaded on first use (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.config = read_config(path)
        self._lock = threading.RLock()
        self._model: Any = None
        self._image_processor: Any = None
        self._tokenizer: Any = None
        self._hf_config: Any = None
        self._dims: dict[Modality, int] = {}
        self._sides_ok: set[Modality] = set()
        self.device = torch.device("cpu")  # where both sides run (:func:`xmr.encoders.placement.place_encoder`)

    @property
    def digest(self) -> str:
        return checkpoint_digest(self.path)

    def side_id(self, side: Modality) -> str:
        """The encoder id of one side (see the module docstring)."""
        material = f"{side}\0{SCHEME}\0transformers{_transformers_major()}\0{self.digest}"
        return f"{FAMILY}-{side}-{hashlib.sha1(material.encode()).hexdigest()[:16]}"

    def declared_dim(self) -> int | None:
        dim = self.config.get("projection_dim")
        return dim if isinstance(dim, int) and dim > 0 else None

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = self._load_model()
            return self._model

    def _load_model(self) -> Any:
        tf = _transformers()
        log.info("loading %s checkpoint %s", FAMILY, self.path)
        try:
            with _quiet_transformers():
                model, info = tf.AutoModel.from_pretrained(str(self.path), local_files_only=True,
                                                           trust_remote_code=False, dtype=torch.float32,
                                                           output_loading_info=True)
        except MemoryError:
            raise
        except Exception as e:  # transformers raises many types for a folder it cannot load
            raise XmrError(f"cannot load the {FAMILY} checkpoint {self.path} ({_reason(e)})") from None
        missing = sorted(k for k in info.get("missing_keys", ()) if k.rsplit(".", 1)[-1] not in _SCORE_ONLY)
        if missing:
            raise XmrError(f"the {FAMILY} checkpoint {self.path} lacks {len(missing)} weight(s) (e.g. {missing[0]}); "
                           "transformers would fill them with random values")
        return model.eval().to(self.device)

    def to_device(self, device: torch.device) -> None:
        """Run both sides' forward passes on ``device`` (their features still come back as CPU float32)."""
        with self._lock:
            self.device = device
            if self._model is not None:
                self._model.to(device)

    def require(self, side: Modality) -> None:
        """Refuse a checkpoint whose model class has no ``get_<side>_features`` before anything
        else of it is loaded (the class comes from ``config.json``; no weights are read)."""
        with self._lock:
            if side in self._sides_ok:
                return
            tf = _transformers()
            config = self.hf_config
            model_class = tf.MODEL_MAPPING.get(type(config), None)
            if model_class is None:
                raise XmrError(f"transformers has no model for the {type(config).__name__} of {self.path}")
            _check_features(model_class, side, self.path)
            self._sides_ok.add(side)

    @property
    def hf_config(self) -> Any:
        """transformers' config of the checkpoint (read from ``config.json`` alone, defaults filled in)."""
        with self._lock:
            if self._hf_config is None:
                self._hf_config = self._from_pretrained(_transformers().AutoConfig, "read")
            return self._hf_config

    def temperature(self) -> float | None:
        """The checkpoint's own temperature, ``1 / exp(logit_scale)`` (CLIP Sec. 2.5: its learned scale);
        None when the model has no ``logit_scale``. Loads the weights."""
        scale = getattr(self.model, "logit_scale", None)
        if not isinstance(scale, torch.Tensor):
            return None
        return float(torch.exp(-scale.detach().float().reshape(-1)[0]))

    def _from_pretrained(self, auto: Any, what: str, **kwargs: Any) -> Any:
        """``auto.from_pretrained`` on this checkpoint (an ``AutoConfig``, ``AutoTokenizer``, ...): local files
        only, no remote code, transformers' chatter off; a failure is an XmrError "cannot <what> the checkpoint"."""
        try:
            with _quiet_transformers():
                return auto.from_pretrained(str(self.path), local_files_only=True, trust_remote_code=False, **kwargs)
        except Exception as e:  # transformers raises many types for a folder it cannot read
            raise XmrError(f"cannot {what} the {FAMILY} checkpoint {self.path} ({_reason(e)})") from None

    def features_fn(self, side: Modality) -> Any:
        """The model's ``get_image_features`` / ``get_text_features``; a model without it is an XmrError."""
        self.require(side)
        _check_features(type(self.model), side, self.path)
        return getattr(self.model, f"get_{side}_features")

    @property
    def image_processor(self) -> Any:
        with self._lock:
            if self._image_processor is None:
                self._image_processor = self._from_pretrained(_transformers().AutoImageProcessor,
                                                              "load the image processor of", backend="pil")
            return self._image_processor

    @property
    def tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                tok = self._from_pretrained(_transformers().AutoTokenizer, "load the tokenizer of")
                if getattr(tok, "pad_token_id", None) is None:
                    raise XmrError(f"the tokenizer of the {FAMILY} checkpoint {self.path} has no padding token")
                self._tokenizer = tok
            return self._tokenizer

    def max_text_length(self) -> int:
        """Tokens per text: the text model's positions, or the tokenizer's limit if smaller."""
        text_cfg = self.config.get("text_config")
        positions = text_cfg.get("max_position_embeddings") if isinstance(text_cfg, dict) else None
        limits = [n for n in (positions, getattr(self.tokenizer, "model_max_length", None))
                  if isinstance(n, int) and 0 < n < 1_000_000]  # tokenizers without a limit say ~1e30
        if not limits:
            raise XmrError(f"cannot tell the maximum text length of the {FAMILY} checkpoint {self.path}")
        return min(limits)

    def dim(self, side: Modality) -> int:
        """The feature size of one side: ``projection_dim``, else measured on one blank input."""
        with self._lock:
            if side not in self._dims:
                self.require(side)
                declared = self.declared_dim()
                if declared is not None:
                    self._dims[side] = declared
                else:
                    blank: object = "a" if side == "text" else probe_image(self.image_processor)
                    self._dims[side] = int(_run(self, side, [blank], None).shape[1])
            return self._dims[side]


def _check_features(model_class: type, side: Modality, path: Path) -> None:
    method = f"get_{side}_features"
    if not callable(getattr(model_class, method, None)):
        raise XmrError(f"the checkpoint {path} is a {model_class.__name__}, which has no {method}(); "
                       f"{FAMILY} needs a joint image-text model such as CLIP or SigLIP")


def _transformers_major() -> str:
    """The installed transformers' major version (its processors' arithmetic may change between majors)."""
    try:
        return metadata.version("transformers").split(".")[0]
    except metadata.PackageNotFoundError:
        return "none"


def probe_image(processor: object) -> np.ndarray:
    """A white image through ``processor`` (what measuring the image feature size encodes)."""
    from PIL import Image

    side = needed_side(processor) or 224
    return _pixels(processor, Image.new("RGB", (side, side), (255, 255, 255)), "a blank probe image")


def _pixels(processor: Any, image: object, what: ImageSource) -> np.ndarray:
    """One image through the checkpoint's processor. Shape: (3, H, W) float32."""
    try:
        out = processor(images=[image], return_tensors="np")
        px = np.asarray(out["pixel_values"], dtype=np.float32)
    except Exception as e:
        raise UnreadableImage(what, f"the {FAMILY} image processor refused it ({_reason(e)})") from None
    if px.ndim != 4 or len(px) != 1:
        raise UnreadableImage(what, f"the {FAMILY} image processor made pixel values of shape {px.shape}")
    return px[0]


_CHECKPOINTS: weakref.WeakValueDictionary[str, Checkpoint] = weakref.WeakValueDictionary()
_CHECKPOINTS_LOCK = threading.Lock()


def open_checkpoint(arg: str | Path) -> Checkpoint:
    """The :class:`Checkpoint` of a folder (one per real path while any encoder holds it)."""
    path = checkpoint_dir(str(arg))
    real = os.path.realpath(path)
    with _CHECKPOINTS_LOCK:
        ckpt = _CHECKPOINTS.get(real)
        if ckpt is None:
            ckpt = Checkpoint(Path(real))
            _CHECKPOINTS[real] = ckpt
        return ckpt


def _as_features(out: object, n: int, ckpt: Checkpoint, side: Modality) -> torch.Tensor:
    """A tensor, or (transformers 5) an output object whose ``pooler_output`` is the projected embedding."""
    feats = out if isinstance(out, torch.Tensor) else getattr(out, "pooler_output", None)
    if not isinstance(feats, torch.Tensor):
        raise XmrError(f"get_{side}_features of {ckpt.path} returned a {type(out).__name__} without a "
                       "pooler_output tensor")
    if feats.ndim != 2 or feats.shape[0] != n:
        raise XmrError(f"get_{side}_features of {ckpt.path} returned shape {tuple(feats.shape)}, expected ({n}, dim)")
    return feats


def _run(ckpt: Checkpoint, side: Modality, inputs: Sequence[object], dim: int | None) -> np.ndarray:
    """One batch through ``get_<side>_features``. Shape: (n, dim) float32 (``dim`` None: not checked)."""
    fn = ckpt.features_fn(side)
    with torch.no_grad():
        if side == "image":
            pixels = torch.from_numpy(np.stack(inputs)).to(ckpt.device)  # type: ignore[arg-type]  # load() made arrays
            out = fn(pixel_values=pixels)
        else:
            enc = ckpt.tokenizer([str(t) for t in inputs], padding="max_length", truncation=True,
                                 max_length=ckpt.max_text_length(), return_tensors="pt")
            out = fn(**{k: enc[k].to(ckpt.device) for k in ("input_ids", "attention_mask") if k in enc})
    feats = _as_features(out, len(inputs), ckpt, side)
    if dim is not None and feats.shape[1] != dim:
        raise XmrError(f"get_{side}_features of {ckpt.path} gives {feats.shape[1]}-d features, but its config "
                       f"says projection_dim {dim}")
    return to_numpy(feats)


class _CheckpointSide(Encoder):
    """What both sides of ``hf-clip:PATH`` share: the opened checkpoint, their id, dim and forward.

    The side is the encoder's own ``modality`` (``"image"`` for the image side).
    """

    def __init__(self, path: str | Path) -> None:
        self.checkpoint = open_checkpoint(path)

    @property
    def encoder_id(self) -> str:  # type: ignore[override]  # a read-only property: computed on first use (hashes the weights)
        return self.checkpoint.side_id(self.modality)

    @property
    def dim(self) -> int:  # type: ignore[override]  # a read-only property: read from the config, or measured once
        return self.checkpoint.dim(self.modality)

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        return _run(self.checkpoint, self.modality, inputs, self.dim)

    def to_device(self, device: torch.device) -> None:
        """Run on ``device``: the checkpoint's, shared with the other side (one runtime per command)."""
        self.checkpoint.to_device(device)

    def trunk_encoder(self, n_tail: object, **options: object) -> Encoder:
        """The cacheable frozen trunk of this side for fine-tuning its last ``n_tail`` layers (1..depth or
        ``"all"``; :mod:`xmr.encoders.hf_clip_tails`). Other trunks' ``options`` (``length``) do not apply."""
        from xmr.encoders.hf_clip_tails import HfClipImageTrunk, HfClipTextTrunk

        if isinstance(self, HfClipImageEncoder):
            return HfClipImageTrunk(self, n_tail)
        return HfClipTextTrunk(self, n_tail)  # type: ignore[arg-type]  # the text side

    joint_space = property(lambda self: f"{FAMILY}:{self.checkpoint.digest}")  # its checkpoint's, by content
    def joint_temperature(self, other: object) -> float | None:
        """The checkpoint's temperature when ``other`` (an encoder or its trunk) is this checkpoint's other side."""
        mine = self.checkpoint
        theirs = getattr(other, "checkpoint", None)
        if theirs is not mine or getattr(other, "modality", None) == self.modality:
            return None
        return mine.temperature()


class HfClipImageEncoder(_CheckpointSide, ImageEncoder):
    """The image side of ``hf-clip:PATH``. ``encode_batch``: loaded (3, H, W) arrays -> (n, dim) float32."""

    default_batch_size = 32

    def load(self, path: ImageSource) -> np.ndarray:
        """xmr's reader, then the checkpoint's image processor. Shape: (3, H, W) float32."""
        self.checkpoint.require("image")
        processor = self.checkpoint.image_processor
        return _pixels(processor, load_rgb(path, min_side=needed_side(processor)), path)


class HfClipTextEncoder(_CheckpointSide, TextEncoder):
    """The text side of ``hf-clip:PATH``. ``encode_batch``: strings -> (n, dim) float32."""

    default_batch_size = 64


def _depth(arg: str, side: Modality) -> int | None:
    """Layers of the ``side`` tower of checkpoint ``arg`` (its config alone); None: not a CLIP or SigLIP."""
    from xmr.encoders.hf_clip_tails import depth_of

    return depth_of(open_checkpoint(arg), side)


def _build(arg: str, side: Modality) -> Encoder:
    return HfClipImageEncoder(arg) if side == "image" else HfClipTextEncoder(arg)


HF_CLIP = register_encoder_family(EncoderFamily(FAMILY, "PATH", _build, check=_check, canonical=_canonical,
                                                  depth=_depth))
