"""A pretrained open_clip model from local files: the encoder family ``open-clip:SPEC``.

SPEC is one of (open_clip_torch's own ways to name a checkpoint, minus the downloads):

* ``FOLDER`` — a folder holding ``open_clip_config.json`` (``model_cfg`` and ``preprocess_cfg``)
  and its weights (``*.safetensors``, ``*.bin`` or ``*.pth``): what open_clip reads as
  ``local-dir:FOLDER`` and what its models on the Hugging Face hub hold (``local-dir:FOLDER`` is
  accepted as a spelling of it);
* ``org/name`` or ``org/name@revision`` — such a folder already in the local Hugging Face cache
  (:mod:`xmr.encoders.hub_cache`; an existing local folder of that name comes first; a run stores
  the id pinned to its commit);
* ``ARCH:FILE`` — one of open_clip's architectures (``ViT-B-32``, ``RN50``, ...: its
  ``model_configs``) and a local weights file, as ``open_clip.create_model(ARCH, pretrained=FILE)``;
  the preprocessing is then open_clip's default for it (a checkpoint trained with another, such as
  SigLIP's, is best given as a folder with its config).

Nothing is downloaded: a pretrained tag (``ViT-B-32:openai``) and an ``hf-hub:`` name are refused in
one line, and the model, its text tower and its tokenizer are built with the hub client offline.
The same name fills both slots (``--image-encoder`` / ``--text-encoder``); the two sides share one
loaded model, and a run on both starts at its temperature (``joint_temperature``, as ``hf-clip``).

* Image side: xmr's reader (:func:`~xmr.encoders.image_io.load_rgb`), then open_clip's eval
  transform of the model's preprocess config, done with PIL and numpy
  (:mod:`xmr.encoders.openclip_pixels`: equal pixels, no torchvision), then
  ``model.encode_image(pixels)``. Shape: (n, dim) float32, not normalised.
* Text side: open_clip's tokenizer of the model (fixed context length: a text's vector never
  depends on its batch), then ``model.encode_text(tokens)``. Shape: (n, dim) float32.
* ``dim``: ``model_cfg["embed_dim"]``; every batch is checked against it.
* ``encoder_id``: ``open-clip-image-<h>`` / ``open-clip-text-<h>``, ``h`` over the side, xmr's
  scheme, open_clip's major version and the content (:mod:`xmr.encoders.checkpoint_files`: the
  folder's files; or the architecture's config file and the weights file): ids follow the content.

open_clip's package imports torchvision when imported (its transforms, and a batch-norm helper
used only to freeze ResNet towers for training). Where torchvision is not installed, xmr imports
open_clip with inert stand-ins for those names, present only while it imports (xmr uses neither);
a tower built on timm still needs timm (and so torchvision).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import sys
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmr.encoders.base import Encoder, EncoderFamily, ImageEncoder, TextEncoder, register_encoder_family
from xmr.encoders.checkpoint_files import checkpoint_digest, files_digest
from xmr.encoders.hub_cache import hub_cache_dir, resolve_local_or_cached
from xmr.encoders.image_io import ImageSource, load_rgb
from xmr.encoders.openclip_import import import_open_clip
from xmr.encoders.openclip_pixels import PixelConfig, to_pixels
from xmr.errors import XmrError
from xmr.modality import Modality
from xmr.runtime.device import to_numpy
from xmr.utils.files import LIMITS, check_input_file

log = logging.getLogger(__name__)

FAMILY = "open-clip"
#: xmr's own preprocessing of the two sides; bump it when that changes (new ids, so new cache folders)
SCHEME = "1"
CONFIG_FILE = "open_clip_config.json"
#: the weights open_clip's ``local-dir:`` loader looks for in a folder
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")


@dataclass(frozen=True)
class Source:
    """What an ``open-clip`` name points at: a ``folder``, or an ``arch`` and its ``weights`` file."""

    canonical: str
    folder: Path | None = None
    arch: str | None = None
    weights: Path | None = None

    @property
    def model_name(self) -> str:
        """The name open_clip's ``create_model`` / ``get_tokenizer`` take."""
        return f"local-dir:{self.folder}" if self.folder is not None else str(self.arch)


def _package_dir() -> Path:
    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise XmrError(f"{FAMILY} encoders need the open_clip_torch package (pip install open-clip-torch)")
    return Path(next(iter(spec.submodule_search_locations)))


def arch_config(arch: str) -> dict[str, Any]:
    """open_clip's model config of an architecture: a built-in (its ``model_configs`` file, read without
    importing open_clip), or one added in this process with ``open_clip.add_model_config``; an unknown
    name is a one-line XmrError."""
    configs = _package_dir() / "model_configs"
    path = configs / f"{arch.replace('/', '-')}.json"
    if path.is_file():
        return _read_json(path)
    if "open_clip" in sys.modules:  # configs added at run time live in open_clip's registry only
        added = sys.modules["open_clip"].get_model_config(arch.replace("/", "-"))
        if isinstance(added, dict):
            return added
    known = sorted(p.stem for p in configs.glob("*.json"))
    raise XmrError(f"{FAMILY}: no open_clip architecture {arch!r} ({len(known)} known, e.g. "
                   f"{', '.join(k for k in ('ViT-B-32', 'ViT-B-16', 'RN50') if k in known) or known[:3]})")


def _refuse_download(head: str, rest: str) -> None:
    """Refuse what open_clip would download: ``hf-hub:org/name`` and ``ARCH:<pretrained tag>``."""
    if head == "hf-hub":
        raise XmrError(f"{FAMILY} never downloads: give the local folder of hf-hub:{rest}, or its id ({rest}) once "
                       f"it is in the Hugging Face cache {hub_cache_dir()}")
    tags: list[str] = []
    with contextlib.suppress(XmrError):  # open_clip that cannot import: the plain "no weights file" error
        tags = list(import_open_clip().list_pretrained_tags_by_model(head))
    if rest in tags:
        raise XmrError(f"{FAMILY}: {rest!r} is one of open_clip's pretrained tags for {head}, which xmr never "
                       "downloads: give the path of a local weights file")


def parse_source(arg: str) -> Source:
    """The :class:`Source` ``arg`` names, checked cheaply (no weights read, open_clip not imported unless an
    ``ARCH:`` name's file is missing); anything missing or downloadable is a one-line XmrError."""
    if not arg.strip():
        raise XmrError(f"{FAMILY}: give a folder, a model id or ARCH:FILE after the colon")
    head, colon, rest = arg.partition(":")
    if head == "hf-hub":
        _refuse_download(head, rest)
    spec = rest if head == "local-dir" and colon else arg
    found = resolve_local_or_cached(spec, family=FAMILY)
    if found is not None:
        return _folder_source(spec, *found)
    if not colon or "/" in head or not rest.strip():
        raise XmrError(f"{FAMILY}: no folder {arg} (and it is not ARCH:FILE)")
    arch_config(head)
    weights = Path(os.path.expanduser(rest))
    if not weights.is_file():
        _refuse_download(head, rest)
        raise XmrError(f"{FAMILY}: no weights file {rest} for {head}" if not weights.exists() else
                       f"{FAMILY}: {rest} is not a weights file")
    return Source(f"{head}:{os.path.abspath(weights)}", arch=head, weights=weights)


def _folder_source(arg: str, folder: Path, canonical: str) -> Source:
    if not folder.is_dir():
        raise XmrError(f"{FAMILY}: {arg} is a file; a weights file needs its architecture: {FAMILY}:ARCH:FILE")
    if not (folder / CONFIG_FILE).is_file():
        raise XmrError(f"{FAMILY}: {arg} is not an open_clip model folder (no {CONFIG_FILE})")
    if not any(p.suffix in WEIGHT_SUFFIXES and p.is_file() for p in folder.iterdir()):
        raise XmrError(f"{FAMILY}: {arg} holds no weights ({', '.join('*' + s for s in WEIGHT_SUFFIXES)}); open_clip "
                       "would fill the model with random values")
    return Source(canonical, folder=folder)


def _read_json(path: Path) -> dict[str, Any]:
    check_input_file(path, "open_clip config", max_bytes=LIMITS.json_bytes)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise XmrError(f"{path}: not a readable open_clip config ({type(e).__name__})") from None
    if not isinstance(cfg, dict):
        raise XmrError(f"{path}: not an open_clip config (not a JSON object)")
    return cfg


def _open_clip_chatter(record: logging.LogRecord) -> bool:
    """False for open_clip's own info lines (it logs them on the root logger) while it builds."""
    return record.levelno >= logging.WARNING or f"{os.sep}open_clip{os.sep}" not in record.pathname


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """The hub client (and transformers, which asks it) offline while open_clip builds: a text tower or a
    tokenizer that is not in the cache fails instead of downloading. open_clip's info lines are left out."""
    constants: Any = None
    with contextlib.suppress(ImportError):
        from huggingface_hub import constants
    root = logging.getLogger()
    with _OFFLINE_LOCK:
        before = getattr(constants, "HF_HUB_OFFLINE", False)
        if constants is not None:
            constants.HF_HUB_OFFLINE = True
        root.addFilter(_open_clip_chatter)
        try:
            yield
        finally:
            root.removeFilter(_open_clip_chatter)
            if constants is not None:
                constants.HF_HUB_OFFLINE = before


_OFFLINE_LOCK = threading.RLock()


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


class OpenClipModel:
    """One open_clip model, shared by its image and text encoders: the source, the digest, and the model,
    tokenizer and pixel config, each loaded on first use (thread-safe)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        if source.folder is not None:
            where = str(source.folder / CONFIG_FILE)
            cfg = _read_json(source.folder / CONFIG_FILE)
            self.model_cfg = cfg.get("model_cfg", cfg)
        else:
            where, self.model_cfg = f"open_clip's {source.arch} config", arch_config(str(source.arch))
        if not isinstance(self.model_cfg, dict) or not isinstance(self.model_cfg.get("embed_dim"), int):
            raise XmrError(f"{where}: not an open_clip model config (no model_cfg with an embed_dim)")
        self._lock = threading.RLock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._pixels: PixelConfig | None = None
        self.device = torch.device("cpu")

    @property
    def dim(self) -> int:
        return int(self.model_cfg["embed_dim"])

    def digest(self) -> str:
        if self.source.folder is not None:
            return checkpoint_digest(self.source.folder)
        assert self.source.weights is not None
        arch = hashlib.sha1(json.dumps(self.model_cfg, sort_keys=True).encode()).hexdigest()
        return files_digest([(f"arch {arch}", self.source.weights)], f"the {FAMILY} weights {self.source.weights}")

    def side_id(self, side: Modality) -> str:
        try:
            version = metadata.version("open_clip_torch").split(".")[0]
        except metadata.PackageNotFoundError:
            version = "none"
        material = f"{side}\0{SCHEME}\0open_clip{version}\0{self.source.arch or ''}\0{self.digest()}"
        return f"{FAMILY}-{side}-{hashlib.sha1(material.encode()).hexdigest()[:16]}"

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                oc = import_open_clip()
                log.info("loading %s model %s", FAMILY, self.source.canonical)
                weights = None if self.source.weights is None else str(self.source.weights)
                try:
                    with _offline():
                        model = oc.create_model(self.source.model_name, pretrained=weights, pretrained_image=False,
                                                pretrained_text=False, precision="fp32", device="cpu")
                except MemoryError:
                    raise
                except Exception as e:  # open_clip / torch raise many types for weights they cannot load
                    raise XmrError(f"cannot load the {FAMILY} model {self.source.canonical} ({_reason(e)})") from None
                self._model = model.eval().to(self.device)
            return self._model

    @property
    def tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                oc = import_open_clip()
                try:
                    with _offline():
                        self._tokenizer = oc.get_tokenizer(self.source.model_name)
                except Exception as e:
                    raise XmrError(f"cannot load the tokenizer of the {FAMILY} model {self.source.canonical} "
                                   f"({_reason(e)})") from None
            return self._tokenizer

    @property
    def pixel_config(self) -> PixelConfig:
        with self._lock:
            if self._pixels is None:
                cfg = import_open_clip().get_model_preprocess_cfg(self.model)
                self._pixels = PixelConfig.from_open_clip(cfg, self.source.canonical)
            return self._pixels

    def temperature(self) -> float | None:
        """The model's own temperature, ``1 / exp(logit_scale)`` (CLIP Sec. 2.5); None without one. Loads it."""
        scale = getattr(self.model, "logit_scale", None)
        if not isinstance(scale, torch.Tensor):
            return None
        return float(torch.exp(-scale.detach().float().reshape(-1)[0]))

    def to_device(self, device: torch.device) -> None:
        with self._lock:
            self.device = device
            if self._model is not None:
                self._model.to(device)

    def encode(self, side: Modality, inputs: Sequence[object]) -> np.ndarray:
        """One batch through ``encode_image`` / ``encode_text``. Shape: (n, dim) float32."""
        model = self.model
        with torch.no_grad():
            if side == "image":
                pixels = torch.from_numpy(np.stack(inputs)).to(self.device)  # type: ignore[arg-type]  # load() made arrays
                feats = model.encode_image(pixels, normalize=False)
            else:
                feats = model.encode_text(self.tokenizer([str(t) for t in inputs]).to(self.device), normalize=False)
        if not isinstance(feats, torch.Tensor) or tuple(feats.shape) != (len(inputs), self.dim):
            raise XmrError(f"encode_{side} of the {FAMILY} model {self.source.canonical} gave "
                           f"{tuple(getattr(feats, 'shape', ()))}, expected ({len(inputs)}, {self.dim})")
        return to_numpy(feats.float())


_MODELS: weakref.WeakValueDictionary[str, OpenClipModel] = weakref.WeakValueDictionary()
_MODELS_LOCK = threading.Lock()


def open_model(arg: str) -> OpenClipModel:
    """The :class:`OpenClipModel` an ``open-clip`` argument names (one per source while any encoder holds it)."""
    source = parse_source(arg)
    key = source.canonical if source.folder is None else os.path.realpath(source.folder)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = OpenClipModel(source)
            _MODELS[key] = model
        return model


class _ModelSide(Encoder):
    """What both sides of ``open-clip:SPEC`` share; the side is the encoder's own ``modality``."""

    def __init__(self, arg: str) -> None:
        self.checkpoint = open_model(arg)

    @property
    def encoder_id(self) -> str:  # type: ignore[override]  # a read-only property: hashes the weights on first use
        return self.checkpoint.side_id(self.modality)

    @property
    def dim(self) -> int:  # type: ignore[override]  # a read-only property: read from the config
        return self.checkpoint.dim

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        return self.checkpoint.encode(self.modality, inputs)

    def to_device(self, device: torch.device) -> None:
        """Run on ``device``: the model's, shared with the other side."""
        self.checkpoint.to_device(device)

    #: the space both sides embed into (read-only), named by the model's content: a pair of one model shares it
    joint_space = property(lambda self: f"{FAMILY}:{self.checkpoint.digest()}")

    def joint_temperature(self, other: object) -> float | None:
        """The model's temperature when ``other`` is this model's other side (else None)."""
        theirs = getattr(other, "checkpoint", None)
        if theirs is not self.checkpoint or getattr(other, "modality", None) == self.modality:
            return None
        return self.checkpoint.temperature()


class OpenClipImageEncoder(_ModelSide, ImageEncoder):
    """The image side of ``open-clip:SPEC``. ``encode_batch``: loaded (3, H, W) arrays -> (n, dim) float32."""

    default_batch_size = 32

    def load(self, path: ImageSource) -> np.ndarray:
        """xmr's reader, then open_clip's eval transform (:func:`~xmr.encoders.openclip_pixels.to_pixels`)."""
        cfg = self.checkpoint.pixel_config
        return to_pixels(load_rgb(path, min_side=cfg.needed_side), cfg)


class OpenClipTextEncoder(_ModelSide, TextEncoder):
    """The text side of ``open-clip:SPEC``. ``encode_batch``: strings -> (n, dim) float32."""

    default_batch_size = 64


def _build(arg: str, side: Modality) -> Encoder:
    return OpenClipImageEncoder(arg) if side == "image" else OpenClipTextEncoder(arg)


def _canonical(arg: str) -> str:
    try:
        return parse_source(arg).canonical
    except XmrError:
        return arg


def _check(arg: str) -> None:
    parse_source(arg)


OPEN_CLIP = register_encoder_family(EncoderFamily(FAMILY, "SPEC", _build, check=_check, canonical=_canonical))
