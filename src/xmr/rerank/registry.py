"""Re-ranking an index's results on the data manifold: the registry and how structures are stored.

    >>> rr = create_reranker("diffusion", k=10, alpha=0.9).fit(gallery)           # doctest: +SKIP
    >>> scores, ids = rr.rerank(q_joint, None, *index.search(q_joint, 100))      # doctest: +SKIP
    >>> rr.save("runs/x/index/rerank/diffusion/images")                          # doctest: +SKIP

Registered methods (``RERANKERS.names()``): ``diffusion``, ``bidirectional``, ``geodesic``; see
:mod:`xmr.rerank.methods`. ``xmr index RUN --rerank NAME`` stores fitted structures in
``<index>/rerank/<NAME>/<target>/`` together with :func:`index_fingerprint` of the index they
were built on; :class:`~xmr.search.Searcher` refuses structures of another index.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from xmr.errors import Param, XmrError
from xmr.modality import TARGETS, Target, check_target
from xmr.rerank.methods import (
    BidirectionalParams,
    BidirectionalReranker,
    DiffusionParams,
    DiffusionReranker,
    GeodesicParams,
    GeodesicReranker,
)
from xmr.rerank.reranker import (
    RERANKERS,
    GalleryVectors,
    Reranker,
    RerankParams,
    first_text_pairs,
    load_reranker,
    order_shortlist,
)
from xmr.utils.io import load_json

__all__ = ["RERANKERS", "TARGETS", "GalleryVectors", "Reranker", "RerankParams", "Target", "DiffusionParams",
           "DiffusionReranker", "BidirectionalParams", "BidirectionalReranker", "GeodesicParams",
           "GeodesicReranker", "create_reranker", "load_reranker", "rerankers_from_strings", "index_fingerprint",
           "rerank_dir", "first_text_pairs", "order_shortlist"]

RERANK_FOLDER = "rerank"


def create_reranker(name: str, **params: object) -> Reranker:
    """An unfitted re-ranker of the registered method ``name``.

    Args:
        name: one of ``RERANKERS.names()``.
        **params: the method's parameters (see its ``*Params`` class); strings are converted.

    Raises:
        XmrError: an unknown method, an unknown parameter or an invalid value.
    """
    return RERANKERS.get(name)(None, **params)


def rerankers_from_options(names: str | None, params: Sequence[str] = ()) -> list[Reranker]:
    """``--rerank`` and ``--rerank-param`` as parsed: none when no method is named (then no
    parameter may be given), else :func:`rerankers_from_strings`."""
    if names is None:
        if params:
            raise XmrError("{params} needs {rerank}", params=Param("rerank_param"), rerank=Param("rerank"))
        return []
    return rerankers_from_strings(names, params)


def rerankers_from_strings(names: str | Sequence[str], params: Sequence[str] = ()) -> list[Reranker]:
    """Re-rankers from command-line text: ``"diffusion,geodesic"`` and ``["k=10", "geodesic.align=false"]``.

    A ``key=value`` applies to every named method that has the parameter (and must belong to at
    least one of them); ``method.key=value`` to that method only.

    Raises:
        XmrError: an unknown method, a malformed or unknown parameter, or a bad value.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise XmrError("no re-ranking method given")
    for name in names:
        RERANKERS.get(name)
    values: dict[str, dict[str, str]] = {name: {} for name in names}
    for item in params:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise XmrError(f"re-ranking parameter {item!r} is not key=value")
        method, dot, field = key.rpartition(".")
        chosen = [method] if dot else list(names)
        if dot and method not in values:
            raise XmrError(f"re-ranking parameter {item!r} names {method!r}, which is not among {', '.join(names)}")
        takers = [m for m in chosen if field in _field_names(m)]
        if not takers:
            known = sorted({f for m in chosen for f in _field_names(m)})
            raise XmrError(f"unknown re-ranking parameter {field!r} for {', '.join(chosen)}; known: {', '.join(known)}")
        for m in takers:
            values[m][field] = value.strip()
    return [create_reranker(name, **values[name]) for name in names]


def _field_names(method: str) -> set[str]:
    return {f.name for f in dataclasses.fields(RERANKERS.get(method).params_type)}


def index_fingerprint(index_dir: str | Path) -> str:
    """SHA-1 identifying an index folder's contents: both FAISS files, their sizes and the model.

    Cheap: it reads the fingerprints ``index.json`` already holds for ``index.faiss``.
    """
    index_dir = Path(index_dir)
    parts = {}
    for name in ("images", "texts"):
        meta = load_json(index_dir / name / "index.json")
        cfg = meta.get("config") if isinstance(meta, dict) else None
        if not isinstance(cfg, dict):
            raise XmrError(f"{index_dir / name / 'index.json'}: not an xmr index description")
        parts[name] = {"faiss_file": meta.get("faiss_file"), "ntotal": meta.get("ntotal"),
                       "model_id": cfg.get("model_id"), "dim": cfg.get("dim")}
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def rerank_dir(index_dir: str | Path, name: str, target: Target) -> Path:
    """Where ``xmr index`` stores the ``name`` structures for ``target``: ``<index>/rerank/<name>/<target>``."""
    return Path(index_dir) / RERANK_FOLDER / name / check_target(target, "re-ranking target")

