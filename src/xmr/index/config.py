"""Frozen, validated description of an index; saved as ``index.json`` beside ``index.faiss``."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Literal

import faiss

from xmr.errors import XmrError
from xmr.index.faiss_utils import faiss_error_reason, ivf_nlist

METRICS: dict[str, int] = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise XmrError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class IndexConfig:
    """What an index is: its dimension, FAISS structure, metric and the model behind the vectors.

    Validated at construction (``ValueError`` naming the bad value), saved as JSON beside every
    index and checked again on load, so an index is never queried with the wrong model.

    Args:
        dim: Vector dimension.
        factory: Any FAISS ``index_factory`` string, e.g. ``"Flat"``, ``"HNSW32"``,
            ``"IVF1024,Flat"``, ``"IVF256,PQ32"``. As in FAISS, ``PQ<m>`` also runs the slow
            polysemous training; write ``PQ<m>np`` (``"IVF256,PQ32np"``) to skip it.
        metric: ``"ip"`` (inner product; vectors are assumed L2-normalised, so this is cosine
            similarity, higher is better) or ``"l2"`` (squared Euclidean distance, lower is better).
        model_id: Id of the model that produced the vectors, checked on load; ``None`` if unknown.
        nprobe: IVF lists visited per query (ignored by non-IVF indexes).
        ef_search: HNSW search beam width (ignored by non-HNSW indexes).
        refine: shortlist size re-scored exactly (0: off). An IVF index built with ``refine > 0``
            keeps every vector in a store on disk beside it (``vectors.f16``), and each
            search takes ``max(k, refine)`` candidates from the compressed codes and returns the
            best ``k`` by their exact scores (see :mod:`xmr.index.vector_store`).
        store_dtype: the store's ``"float16"`` (half the disk, scores within ~1e-3) or ``"float32"``.

    Example:
        >>> IndexConfig(dim=256, factory="IVF1024,Flat", model_id="clip-b32", nprobe=32)
    """

    dim: int
    factory: str = "Flat"
    metric: Literal["ip", "l2"] = "ip"
    model_id: str | None = None
    nprobe: int = 16
    ef_search: int = 64
    refine: int = 0
    store_dtype: Literal["float16", "float32"] = "float16"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim", _positive_int("dim", self.dim))
        object.__setattr__(self, "nprobe", _positive_int("nprobe", self.nprobe))
        object.__setattr__(self, "ef_search", _positive_int("ef_search", self.ef_search))
        if isinstance(self.refine, bool) or not isinstance(self.refine, numbers.Integral) or self.refine < 0:
            raise XmrError(f"refine must be an integer >= 0, got {self.refine!r}")
        object.__setattr__(self, "refine", int(self.refine))
        if self.store_dtype not in ("float16", "float32"):
            raise XmrError(f"store_dtype must be 'float16' or 'float32', got {self.store_dtype!r}")
        if self.metric not in METRICS:
            raise XmrError(f"metric must be one of {sorted(METRICS)}, got {self.metric!r}")
        if self.model_id is not None and (not isinstance(self.model_id, str) or not self.model_id):
            raise XmrError(f"model_id must be a non-empty string or None, got {self.model_id!r}")
        if not isinstance(self.factory, str) or not self.factory.strip():
            raise XmrError(
                f"factory must be a non-empty FAISS index_factory string, got {self.factory!r}"
            )
        if "IDMAP" in self.factory.upper():
            raise XmrError(f"factory {self.factory!r}: leave out 'IDMap', xmr maps ids itself")
        # Building the (empty, untrained) index is cheap and is the only reliable parser.
        try:
            empty = faiss.index_factory(self.dim, self.factory, self.faiss_metric)
        except RuntimeError as e:
            raise XmrError(
                f"factory {self.factory!r} is not a valid FAISS index for dim {self.dim}: "
                f"{faiss_error_reason(e)}"
            ) from None
        if self.refine and ivf_nlist(empty) is None:
            raise XmrError(f"refine re-scores the shortlist of a compressed IVF index; {self.factory!r} is not one "
                           "(its own scores are exact or graph-approximate): drop refine or use e.g. IVF1024,PQ32")

    @property
    def faiss_metric(self) -> int:
        """The FAISS metric constant (``faiss.METRIC_INNER_PRODUCT`` or ``faiss.METRIC_L2``)."""
        return METRICS[self.metric]

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> IndexConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise ``ValueError``."""
        if not isinstance(data, dict):
            raise XmrError(f"index config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise XmrError(f"unknown index config keys {unknown}")
        if "dim" not in data:
            raise XmrError("index config has no 'dim'")
        return cls(**data)  # type: ignore[arg-type]  # JSON values; __post_init__ validates each
