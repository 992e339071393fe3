"""The encoder interface and registry.

An encoder turns raw inputs of one modality into fixed-size feature vectors with a frozen,
pretrained network. xmr caches their features (:mod:`xmr.encoders.cache`) and learns
projection heads on top; to fine-tune the last blocks of an image encoder it caches the frozen
trunk's activations instead (:mod:`xmr.encoders.trunk`) and trains the tail with the heads.

Add your own by registering a class or factory (a CLIP or SigLIP checkpoint on disk needs none:
``hf-clip:PATH``, :mod:`xmr.encoders.hf_clip`)::

    from xmr.encoders import ENCODERS, TextEncoder

    @ENCODERS.register("my-clip-text")
    def _make(**kw):
        return MyClipText(**kw)      # subclass of TextEncoder

    xmr.encoders.create_encoder("my-clip-text")

A *family* of encoders that takes an argument after a colon (``hf-clip:/models/clip``: one
checkpoint folder, both sides) is an :class:`EncoderFamily` registered with
:func:`register_encoder_family`; ``ENCODERS`` lists it by its pattern (``hf-clip:PATH``), and
:func:`create_image_encoder` / :func:`create_text_encoder` build the side of the slot they fill.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np

from xmr.encoders.image_io import ImageSource
from xmr.errors import Param, XmrError
from xmr.modality import MODALITIES, Modality
from xmr.registry import Registry


class Encoder(abc.ABC):
    """A frozen feature extractor. Subclasses set ``modality``, ``dim`` and ``encoder_id``.

    ``encoder_id`` names the weights *and* the preprocessing: two encoders whose outputs could
    differ must have different ids, since the feature cache is keyed by it.

    ``joint_space`` names the embedding space the features live in when the encoder was trained
    (or built) to embed into a space it shares with encoders of the other modality: an image encoder
    and a text encoder naming the same space score a pair by the cosine of their raw features, so a
    run can be made from them with no training (:func:`shared_space`,
    :func:`xmr.workflows.pretrained.pretrained_run`). ``minilm-l6``'s sentence space is
    ``"minilm-l6"`` (:data:`xmr.encoders.minilm.MINILM_SPACE`); both sides of ``hf-clip:PATH``
    name their checkpoint's. None: a space of its own (the default).
    """

    modality: ClassVar[Modality]
    dim: int
    encoder_id: str
    joint_space: str | None = None
    default_batch_size: int = 32
    #: ``encode_batch`` may run in several threads at once (a service then encodes batches in parallel)
    thread_safe: ClassVar[bool] = False

    @abc.abstractmethod
    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        """Encode one batch of already-loaded inputs. Returns float32 (len(inputs), dim)."""

    def describe(self) -> dict[str, object]:
        """What to save next to cached features (the cache refuses a mismatch)."""
        return {"encoder_id": self.encoder_id, "modality": self.modality, "dim": self.dim}


class TextEncoder(Encoder):
    """Encodes strings. ``encode_batch`` receives a list of non-empty strings.

    ``query_stand_in`` names a registered encoder that gives the same features (within 1e-3
    cosine, tested) faster, for encoding queries at search time (``xmr serve``, ``xmr search``); None: none.
    """

    modality: ClassVar[Modality] = "text"
    query_stand_in: ClassVar[str | None] = None

    def load(self, text: str) -> str:
        return text


class ImageEncoder(Encoder):
    """Encodes images. ``load`` turns a path into the model input; ``encode_batch`` stacks them."""

    modality: ClassVar[Modality] = "image"

    @abc.abstractmethod
    def load(self, path: ImageSource) -> np.ndarray:
        """Read and preprocess one image; raise XmrError naming the path if it is unusable."""


@dataclass(frozen=True)
class EncoderFamily:
    """A registered family of encoders named ``<family>:<ARG>``, e.g. ``hf-clip:/models/clip``.

    The argument is what tells two members apart (a checkpoint folder); ``xmr list`` shows the
    family as its :attr:`pattern`. A family may build several sides from one argument (a joint
    image-text checkpoint): the slot the name fills (``--image-encoder`` / ``--text-encoder``)
    picks the side.

    Attributes:
        family: the part before the colon (``hf-clip``).
        arg: what the argument is, as listed (``PATH``).
        build: ``build(arg, side, **kwargs)`` -> that side's encoder (weights load on first use).
        modalities: the sides ``build`` can make.
        check: refuses a bad argument with a one-line XmrError, cheaply (no weights loaded); it
            runs whenever the name is resolved, so a run config naming a missing checkpoint is
            refused before any folder is made. None: any non-empty argument.
        canonical: the argument's canonical spelling (a path made absolute), for names that are
            stored (``run.json``) and used again from another directory. None: as given.
        depth: ``depth(arg, side)`` -> how many blocks / layers that side can fine-tune, or None
            (:mod:`xmr.encoders.finetune`); read cheaply (no weights). None: no member can be fine-tuned.
    """

    family: str
    arg: str
    build: Callable[..., Encoder]
    modalities: tuple[Modality, ...] = MODALITIES
    check: Callable[[str], None] | None = None
    canonical: Callable[[str], str] | None = None
    depth: Callable[[str, Modality], int | None] | None = None

    def __post_init__(self) -> None:
        if not self.family or ":" in self.family:
            raise XmrError(f"encoder family name must be non-empty and have no colon, got {self.family!r}")

    @property
    def pattern(self) -> str:
        """How the family is listed and registered: ``<family>:<ARG>``."""
        return f"{self.family}:{self.arg}"

    @property
    def modality(self) -> Modality | None:
        """The side of a one-sided family; None when it builds both (config checks read this)."""
        return self.modalities[0] if len(self.modalities) == 1 else None


#: exact names -> encoder classes or factories; a family's pattern (``hf-clip:PATH``) -> its EncoderFamily
ENCODERS: Registry[Callable[..., Encoder] | EncoderFamily] = Registry("encoder")

_Side = TypeVar("_Side", ImageEncoder, TextEncoder)


def register_encoder_family(family: EncoderFamily) -> EncoderFamily:
    """Register ``family`` in :data:`ENCODERS` under its pattern (``xmr list`` shows it)."""
    if _family_named(family.family) is not None:
        raise XmrError(f"encoder family {family.family!r} is already registered")
    ENCODERS.add(family.pattern, family)
    return family


def _is_exact(name: str) -> bool:
    """``name`` is registered as is (a class or factory, not a family's pattern)."""
    return name in ENCODERS and not isinstance(ENCODERS.get(name), EncoderFamily)


def _family_named(family: str) -> EncoderFamily | None:
    for name in ENCODERS.names():
        entry = ENCODERS.get(name)
        if isinstance(entry, EncoderFamily) and entry.family == family:
            return entry
    return None


def resolve_encoder(name: str) -> tuple[Callable[..., Encoder] | EncoderFamily, str | None]:
    """The :data:`ENCODERS` entry ``name`` refers to, and its argument (None for an exact name).

    ``toy-image`` -> (its class, None); ``hf-clip:/m/clip`` -> (the ``hf-clip`` family,
    ``"/m/clip"``), the argument checked by the family. An unknown name, an unknown family or an
    empty argument raises XmrError.
    """
    if not isinstance(name, str):
        raise XmrError(f"encoder name must be a string, got {name!r}")
    if _is_exact(name):
        return ENCODERS.get(name), None
    prefix, colon, arg = name.partition(":")
    family = _family_named(prefix) if colon else None
    if family is None:
        return ENCODERS.get(name), None  # unknown -> XmrError listing the known ones
    if not arg.strip():
        raise XmrError(f"encoder {name!r} needs a {family.arg} after the colon: {family.pattern}")
    if family.check is not None:
        family.check(arg)
    return family, arg


def is_encoder_name(name: object) -> bool:
    """Whether ``name`` names a registered encoder or a member of a registered family (not checked)."""
    if not isinstance(name, str):
        return False
    if _is_exact(name):
        return True
    prefix, colon, _ = name.partition(":")
    return bool(colon) and _family_named(prefix) is not None


def canonical_encoder_name(name: str) -> str:
    """``name`` as it should be stored: a family member's argument in its canonical spelling
    (``hf-clip:ckpt`` -> ``hf-clip:/abs/ckpt``); any other name, valid or not, unchanged."""
    prefix, colon, arg = name.partition(":")
    family = _family_named(prefix) if colon and not _is_exact(name) else None
    if family is None or family.canonical is None or not arg.strip():
        return name
    return f"{prefix}:{family.canonical(arg)}"


def create_encoder(name: str, *, side: Modality | None = None, **kwargs: object) -> Encoder:
    """Instantiate the encoder registered as ``name`` (weights load on first use).

    A family member (``hf-clip:PATH``) has one side per modality: ``side`` picks it; without
    one, a family of two sides is an XmrError (use :func:`create_image_encoder` /
    :func:`create_text_encoder`). An exact name ignores ``side`` (the
    ``create_*_encoder`` helpers check the modality of what it builds).
    """
    entry, arg = resolve_encoder(name)
    if not isinstance(entry, EncoderFamily):
        return entry(**kwargs)
    side = side or entry.modality
    if side is None:
        raise XmrError("encoder {name} builds an image or a text encoder from one {arg}; use it as {image} or "
                       "{text} (create_image_encoder / create_text_encoder)", name=repr(name), arg=entry.arg,
                       image=Param("image_encoder"), text=Param("text_encoder"))
    if side not in entry.modalities:
        raise XmrError(f"encoder family {entry.family!r} has no {side} side (it has: {', '.join(entry.modalities)})")
    return entry.build(arg, side, **kwargs)


def encoder_names(modality: Modality) -> list[str]:
    """The registered encoders (and families, as ``hf-clip:PATH``) that encode ``modality``."""
    names = []
    for name in ENCODERS.names():
        entry = ENCODERS.get(name)
        if modality in (entry.modalities if isinstance(entry, EncoderFamily) else (getattr(entry, "modality", None),)):
            names.append(name)
    return names


def wrong_side(name: str, declared: str, side: Modality) -> XmrError:
    """The one error for encoder ``name`` of modality ``declared`` given where a ``side`` encoder is needed."""
    wanted = "an image" if side == "image" else "a text"
    return XmrError("encoder {name} encodes {declared}s, not {side}s; give {wanted} encoder: {choices}",
                    name=repr(name), declared=declared, side=side, wanted=wanted,
                    choices=", ".join(encoder_names(side)))


def shared_space(image: Encoder, text: Encoder) -> str | None:
    """The space ``image`` and ``text`` both embed into (their ``joint_space``, the same and not None,
    with features of one size), else None: a pair that scores by the cosine of its raw features."""
    space = getattr(image, "joint_space", None)
    if space is None or space != getattr(text, "joint_space", None) or int(image.dim) != int(text.dim):
        return None
    return str(space)


def check_declared_side(name: str, side: Modality) -> None:
    """Refuse a registered encoder whose class declares the other modality, before anything is built
    (factories, such as the region encoders, are checked when built: :func:`create_image_encoder`)."""
    declared = getattr(resolve_encoder(name)[0], "modality", None)
    if isinstance(declared, str) and declared != side:
        raise wrong_side(name, declared, side)


def _create_side(name: str, side: Modality, kind: type[_Side], kwargs: dict[str, object]) -> _Side:
    """:func:`create_encoder` for ``side``, refusing an encoder of the other modality by name."""
    enc = create_encoder(name, side=side, **kwargs)
    if not isinstance(enc, kind):
        raise wrong_side(name, enc.modality, side)
    return enc


def create_image_encoder(name: str, **kwargs: object) -> ImageEncoder:
    """:func:`create_encoder` for an image encoder; a text encoder's name is refused by name."""
    return _create_side(name, "image", ImageEncoder, kwargs)  # type: ignore[type-abstract]  # only isinstance'd (mypy #4717)


def create_text_encoder(name: str, **kwargs: object) -> TextEncoder:
    """:func:`create_encoder` for a text encoder; an image encoder's name is refused by name."""
    return _create_side(name, "text", TextEncoder, kwargs)  # type: ignore[type-abstract]  # only isinstance'd (mypy #4717)
