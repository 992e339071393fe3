"""A query to the service in its parsed form (:class:`Query`), the errors a request may get (each
with its HTTP status), and the seconds each stage of a query took (:class:`Stages`)."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from xmr.errors import XmrError
from xmr.modality import DEFAULT_K, Target


class ServiceError(XmrError):
    """A request the service refuses; ``status`` is its HTTP status."""

    status = 400


class NotFound(ServiceError):
    status = 404


class TooLarge(ServiceError):
    status = 413


@dataclass
class Stages:
    """Seconds spent per stage of one query (``encode``, ``search``, ``rerank``, ``metadata``)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now


@dataclass(frozen=True)
class Query:
    """A parsed query: its kind and inputs (see :class:`xmr.serve.schemas.SearchRequest`)."""

    text: str | None = None
    image: bytes | None = None
    image_id: str | None = None
    vector: Sequence[float] | None = None
    target: Target = "images"
    k: int = DEFAULT_K
    offset: int = 0
    rerank: str | None = None
    filters: Mapping[str, str | Sequence[str]] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        has_image = self.image is not None or self.image_id is not None
        given = [n for n, v in (("text", self.text), ("image", self.image), ("image_id", self.image_id),
                                ("vector", self.vector)) if v is not None]
        if has_image and self.text is not None and len(given) == 2:
            return "composed"
        if len(given) != 1:
            raise ServiceError("give exactly one of text, image, image_id, vector (or image / image_id + text "
                               f"for a composed query); got {', '.join(given) or 'none'}")
        return given[0]


def decode_base64_image(data: str, limit: int) -> bytes:
    """The bytes of a base64 image (a ``data:...;base64,`` prefix allowed), refused past ``limit`` bytes."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    if len(data) * 3 // 4 > limit:
        raise TooLarge(f"the image is larger than the upload limit ({limit / 2 ** 20:g} MB)")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError("image: not valid base64") from None
