"""The re-ranker interface: gallery vectors in, re-ordered shortlists out, saved beside an index.

A re-ranker is fit once on a gallery (:class:`GalleryVectors`: the joint-space embeddings of the
indexed images and texts, optionally their encoders' own features) for one *target* modality,
the one it re-orders. Online it receives a query batch and the index's shortlist for it
(``base_scores``, ``base_ids``, best first) and returns the same ids re-ordered; items outside the
shortlist are never touched. Items the method gives no score (no diffusion mass, no path on the
manifold) keep their base order after the scored ones.

On disk (``save`` / ``load``)::

    <dir>/rerank.json     method, target, params, gallery size, index fingerprint
    <dir>/arrays.npz      dense arrays (numpy, no pickles)
    <dir>/<name>.npz      one file per sparse matrix (scipy.sparse.save_npz)

The folder is written beside its destination and renamed into place, so a crash leaves the
previous structures (or none), never half of them.
"""

from __future__ import annotations

import abc
import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from xmr.errors import Call, Param, XmrError
from xmr.modality import Modality, Target, check_target, modality_of_target
from xmr.registry import Registry
from xmr.utils.arrays import l2_normalize
from xmr.utils.folders import atomic_folder
from xmr.utils.io import load_json, save_json

FORMAT = "xmr.rerank"
VERSION = 1
META_FILE = "rerank.json"
ARRAYS_FILE = "arrays.npz"

RERANKERS: Registry[type[Reranker]] = Registry("re-ranker")


# -- gallery -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GalleryVectors:
    """What a re-ranker is fit on: an indexed gallery as arrays.

    Attributes:
        images: joint-space image embeddings, L2-normalised (image index id = row). Shape: (n, d).
        texts: joint-space text embeddings (text index id = row). Shape: (m, d).
        image_feats: the image encoder's own features (before the head), for graphs in the
            images' own space. Shape: (n, d_img), or None.
        text_feats: the text encoder's own features. Shape: (m, d_txt), or None.
        pairs: matched (image id, text id) rows, e.g. each item and its first text, used to
            align the two point clouds. Shape: (p, 2), or None.
    """

    images: np.ndarray
    texts: np.ndarray
    image_feats: np.ndarray | None = None
    text_feats: np.ndarray | None = None
    pairs: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("images", "texts", "image_feats", "text_feats"):
            a = getattr(self, name)
            if a is not None and np.asarray(a).ndim != 2:
                raise XmrError(f"gallery {name} must be a 2-D array, got shape {np.shape(a)}")
        if self.images.shape[1:] != self.texts.shape[1:] and len(self.texts):
            raise XmrError(f"gallery images have dim {self.images.shape[1]}, texts {self.texts.shape[1]}")
        for name, own, joint in (("image_feats", self.image_feats, self.images),
                                 ("text_feats", self.text_feats, self.texts)):
            if own is not None and len(own) != len(joint):
                raise XmrError(f"gallery {name} has {len(own)} rows for {len(joint)} embeddings")
        if self.pairs is not None:
            p = np.asarray(self.pairs)
            if p.ndim != 2 or p.shape[1] != 2 or (p.size and (p.min() < 0 or p[:, 0].max() >= len(self.images)
                                                             or p[:, 1].max() >= len(self.texts))):
                raise XmrError(f"gallery pairs must be (p, 2) ids of images and texts, got shape {p.shape}")

    def oriented(self, target: Target) -> GallerySides:
        """The gallery seen from ``target``: the re-ordered side first, the other modality second."""
        modality = modality_of_target(check_target(target, "re-ranking target"))
        pairs = np.zeros((0, 2), np.int64) if self.pairs is None else np.asarray(self.pairs, np.int64)
        if modality == "image":
            return GallerySides(self.images, self.texts, self.image_feats, self.text_feats, pairs, modality)
        return GallerySides(self.texts, self.images, self.text_feats, self.image_feats, pairs[:, ::-1], modality)


@dataclass(frozen=True)
class GallerySides:
    """:class:`GalleryVectors` oriented for one target; ``pairs`` are (target id, other id)."""

    target: np.ndarray
    other: np.ndarray
    target_feats: np.ndarray | None
    other_feats: np.ndarray | None
    pairs: np.ndarray
    modality: Modality


def first_text_pairs(item_texts: Sequence[Sequence[str]], texts: Sequence[str]) -> np.ndarray:
    """(image id, text id) of each item and its first text, for items whose first text is indexed.

    Args:
        item_texts: each gallery item's texts, in gallery order.
        texts: the indexed text pool (text id = position).

    Returns:
        Integer pairs. Shape: (p, 2).
    """
    pos = {t: j for j, t in enumerate(texts)}
    rows = [(i, pos[ts[0]]) for i, ts in enumerate(item_texts) if ts and ts[0] in pos]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32. Shape: as ``x``."""
    return l2_normalize(np.asarray(x, dtype=np.float32))


# -- parameters ----------------------------------------------------------------------------------


def _bad(method: str, name: str, rule: str, value: object) -> XmrError:
    return XmrError(f"{method} parameter {name} must be {rule}, got {value!r}")


def check_int(method: str, name: str, value: object, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise _bad(method, name, f"an integer >= {low}", value)


def check_float(method: str, name: str, value: object, low: float, high: float, *,
                open_low: bool = False, open_high: bool = False) -> None:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and bool(np.isfinite(value))
    if ok:
        v = float(value)  # type: ignore[arg-type]  # a real number, checked just above
        ok = (v > low if open_low else v >= low) and (v < high if open_high else v <= high)
    if not ok:
        rule = f"in {'(' if open_low else '['}{low:g}, {'inf' if high == np.inf else f'{high:g}'}" \
               f"{')' if open_high else ']'}"
        raise _bad(method, name, rule, value)


def check_bool(method: str, name: str, value: object) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise _bad(method, name, "true or false", value)


@dataclass(frozen=True)
class RerankParams:
    """Parameters every re-ranker has.

    Attributes:
        shortlist: how many of the index's best results are re-ordered (the rest keep their order).
    """

    shortlist: int = 100

    METHOD: ClassVar[str] = "re-ranker"
    ONLINE: ClassVar[frozenset[str]] = frozenset({"shortlist"})
    """Parameters used only at query time: they may differ from the ones the structures were built with."""
    TUNE_GRID: ClassVar[Mapping[str, tuple[object, ...]]] = {}
    """The small grid ``xmr index --rerank NAME --tune val`` searches (parameter -> values; every
    combination is scored on the validation split, parameters given with ``--rerank-param`` stay fixed)."""

    def __post_init__(self) -> None:
        check_int(self.METHOD, "shortlist", self.shortlist)


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _coerce(method: str, name: str, kind: type, value: object) -> object:
    """A string from the command line turned into the field's type; other values pass through."""
    if not isinstance(value, str):
        return float(value) if kind is float and isinstance(value, int) and not isinstance(value, bool) else value
    text = value.strip().lower()
    try:
        if kind is bool:
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValueError
        return kind(text)
    except ValueError:
        raise _bad(method, name, f"{'true or false' if kind is bool else kind.__name__}", value) from None


def params_from_mapping(cls: type[RerankParams], values: Mapping[str, object]) -> RerankParams:
    """Build ``cls`` from keyword values, converting strings (``"0.9"``, ``"true"``) to field types.

    Raises:
        XmrError: an unknown key (the known ones are listed) or a bad value.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise XmrError(f"unknown {cls.METHOD} parameter {unknown[0]!r}; known: {', '.join(sorted(fields))}")
    return cls(**{k: _coerce(cls.METHOD, k, hints[k], v) for k, v in values.items()})  # type: ignore[arg-type]  # _coerce made each value its field's type


def params_dict(params: RerankParams) -> dict[str, object]:
    """The fields of ``params`` as plain JSON values."""
    return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}


# -- the re-ranker -------------------------------------------------------------------------------


class Reranker(abc.ABC):
    """Re-orders an index's shortlist using structures built offline from the gallery.

    Subclasses define ``name``, ``params_type``, :meth:`_fit`, :meth:`_shortlist_scores` and the
    arrays they persist (:meth:`_state`, :meth:`_set_state`).

    Args:
        params: the method's parameters; or give them as keywords (strings are converted).
    """

    name: ClassVar[str]
    params_type: ClassVar[type[RerankParams]]

    def __init__(self, params: RerankParams | None = None, **kwargs: object) -> None:
        if params is not None and kwargs:
            raise TypeError("give params or keyword parameters, not both")
        if params is not None and not isinstance(params, self.params_type):
            raise XmrError(f"{self.name} needs {self.params_type.__name__}, got {type(params).__name__}")
        self.params = params if params is not None else params_from_mapping(self.params_type, kwargs)
        self.target: Target | None = None
        self.n_gallery = 0
        self.fingerprint: str | None = None
        """Which index the structures belong to (see :func:`xmr.rerank.registry.index_fingerprint`)."""

    def __repr__(self) -> str:
        fitted = f", target={self.target!r}, n={self.n_gallery}" if self.target else ""
        return f"{type(self).__name__}({self.params}{fitted})"

    def unfitted_copy(self) -> Reranker:
        """A new re-ranker with the same parameters and no structures."""
        return type(self)(self.params)

    def with_params(self, **changes: object) -> Reranker:
        """The same structures with other query-time parameters (``params_type.ONLINE``).

        Raises:
            XmrError: a change to a parameter the structures were built with.
        """
        current = params_dict(self.params)
        new = params_from_mapping(self.params_type, {**current, **changes})
        fixed = sorted(k for k in changes if k not in self.params_type.ONLINE and getattr(new, k) != current[k])
        if fixed and self.target is not None:
            k = fixed[0]
            raise XmrError("{method} parameter {name} is fixed when the structures are built (built with {built}); "
                           "rebuild them: {fix}", method=self.name, name=k, built=f"{k}={current[k]!r}",
                           fix=Call("index_run", Param("run_dir", "RUN"), Param("rerank", self.name),
                                    Param(f"{self.name}.{k}", getattr(new, k))))
        out = type(self).__new__(type(self))
        out.__dict__.update(self.__dict__)
        out.params = new
        return out

    # -- offline --------------------------------------------------------------------------------

    def fit(self, gallery: GalleryVectors, *, target: Target = "images") -> Reranker:
        """Build the offline structures for re-ordering ``target`` (images or texts). Returns self.

        Raises:
            XmrError: an empty gallery, ``k`` too large for it, or missing inputs the method needs.
        """
        sides = gallery.oriented(target)
        if len(sides.target) == 0:
            raise XmrError(f"cannot build {self.name} re-ranking structures on an empty gallery (0 {target})")
        if len(sides.target) < 2:
            raise XmrError(f"{self.name} re-ranking needs at least 2 gallery {target}, got {len(sides.target)}")
        self._fit(sides)
        self.target, self.n_gallery, self.fingerprint = target, len(sides.target), None
        return self

    @abc.abstractmethod
    def _fit(self, sides: GallerySides) -> None: ...

    # -- online ---------------------------------------------------------------------------------

    def shortlist_scores(self, query_joint: np.ndarray, query_own: np.ndarray | None, base_scores: np.ndarray,
                         base_ids: np.ndarray, *, query_modality: Modality | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
        """The method's score of every shortlist item, in the base order.

        Args:
            query_joint: queries in the joint space, L2-normalised. Shape: (q, d).
            query_own: the queries' own encoder features (methods with own-space graphs). Shape:
                (q, d_own), or None.
            base_scores: the index's similarities, best first. Shape: (q, s).
            base_ids: the gallery ids of those results (-1 = padding). Shape: (q, s).
            query_modality: ``"text"`` or ``"image"``; default: the modality the target is not
                (cross-modal retrieval).

        Returns:
            ``(scores, scored)``: float64 scores (higher is better) and a mask of items the method
            scored at all. Shape: (q, s) each.
        """
        if self.target is None:
            raise XmrError(f"{self.name} re-ranker is not fitted: call fit() or load() first")
        base_scores, base_ids = np.atleast_2d(base_scores), np.atleast_2d(np.asarray(base_ids, np.int64))
        query_joint = np.atleast_2d(np.asarray(query_joint, np.float32))
        if base_scores.shape != base_ids.shape or len(base_ids) != len(query_joint):
            raise XmrError(f"base scores {base_scores.shape}, ids {base_ids.shape} and queries "
                           f"{query_joint.shape} do not match")
        if base_ids.size and base_ids.max() >= self.n_gallery:
            raise XmrError(f"shortlist id {int(base_ids.max())} is outside the {self.n_gallery} gallery "
                           f"{self.target} the {self.name} structures were built on (another index?)")
        target_modality: Modality = "image" if self.target == "images" else "text"
        modality = query_modality or ("text" if target_modality == "image" else "image")
        if modality not in ("image", "text"):
            raise XmrError(f"unknown query modality {modality!r}; use 'image' or 'text'")
        if query_own is not None:
            query_own = np.atleast_2d(np.asarray(query_own, np.float32))
        scores, scored = self._shortlist_scores(query_joint, query_own, base_scores.astype(np.float64),
                                                base_ids, same_modality=modality == target_modality)
        valid = base_ids >= 0
        return np.where(valid, scores, -np.inf), scored & valid

    @abc.abstractmethod
    def _shortlist_scores(self, query_joint: np.ndarray, query_own: np.ndarray | None, base_scores: np.ndarray,
                          base_ids: np.ndarray, *, same_modality: bool) -> tuple[np.ndarray, np.ndarray]: ...

    def rerank(self, query_joint: np.ndarray, query_own: np.ndarray | None, base_scores: np.ndarray,
               base_ids: np.ndarray, *, query_modality: Modality | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Re-order each query's shortlist (see :meth:`shortlist_scores` for the arguments).

        Returns:
            ``(scores, ids)``: the method's scores and the shortlist ids, best first; items the
            method could not score follow in their base order. Shape: (q, s) each.
        """
        scores, scored = self.shortlist_scores(query_joint, query_own, base_scores, base_ids,
                                               query_modality=query_modality)
        return order_shortlist(scores, scored, base_ids)

    # -- persistence ----------------------------------------------------------------------------

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, sp.csr_matrix], dict[str, object]]:
        """Dense arrays, sparse matrices and JSON facts to save."""
        return {}, {}, {}

    def _set_state(self, arrays: Mapping[str, np.ndarray], matrices: Mapping[str, sp.csr_matrix],
                   info: Mapping[str, object]) -> None:
        """Restore what :meth:`_state` returned."""

    def save(self, directory: str | Path) -> Path:
        """Write the fitted structures into ``directory`` (replaced atomically). Returns it."""
        if self.target is None:
            raise XmrError(f"{self.name} re-ranker is not fitted; nothing to save")
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        arrays, matrices, info = self._state()
        with atomic_folder(directory) as tmp:
            np.savez(tmp / ARRAYS_FILE, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
            for key, m in matrices.items():
                sp.save_npz(tmp / f"{key}.npz", sp.csr_matrix(m), compressed=False)
            save_json(tmp / META_FILE, {"format": FORMAT, "version": VERSION, "method": self.name,
                                        "target": self.target, "params": params_dict(self.params),
                                        "n_gallery": self.n_gallery, "fingerprint": self.fingerprint,
                                        "matrices": sorted(matrices), "info": info})
        return directory


def load_reranker(directory: str | Path, *, expect_fingerprint: str | None = None,
                  rebuild_hint: str = "rebuild them") -> Reranker:
    """Load structures saved by :meth:`Reranker.save`.

    Args:
        directory: the folder written by ``save``.
        expect_fingerprint: the fingerprint of the index they must belong to.
        rebuild_hint: how to rebuild them, appended to errors (e.g. an ``xmr index`` command).

    Raises:
        XmrError: no structures there, an unreadable folder, or structures of another index.
    """
    directory = Path(directory)
    if not (directory / META_FILE).is_file():
        raise XmrError(f"no re-ranking structures at {directory}; {rebuild_hint}")
    meta = load_json(directory / META_FILE)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise XmrError(f"{directory / META_FILE}: not xmr re-ranking structures (format {FORMAT!r} "
                       f"version {VERSION} expected); {rebuild_hint}")
    if expect_fingerprint is not None and meta.get("fingerprint") != expect_fingerprint:
        raise XmrError(f"re-ranking structures at {directory} were built for another index "
                       f"({str(meta.get('fingerprint'))[:12]}, this index is {expect_fingerprint[:12]}); "
                       f"{rebuild_hint}")
    cls = RERANKERS.get(str(meta["method"]))
    rr = cls(params_from_mapping(cls.params_type, meta["params"]))
    try:
        with np.load(directory / ARRAYS_FILE, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        matrices = {k: sp.load_npz(directory / f"{k}.npz").tocsr() for k in meta["matrices"]}
    except (OSError, ValueError, KeyError) as e:
        raise XmrError(f"{directory}: unreadable re-ranking structures ({e}); {rebuild_hint}") from None
    rr._set_state(arrays, matrices, meta.get("info") or {})
    try:
        target = check_target(meta.get("target"), "re-ranking target")
    except XmrError as e:
        raise XmrError(f"{directory / META_FILE}: {e}; {rebuild_hint}") from None
    rr.target, rr.n_gallery, rr.fingerprint = target, int(meta["n_gallery"]), meta.get("fingerprint")
    return rr


def order_shortlist(scores: np.ndarray, scored: np.ndarray, base_ids: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by score, scored items first; ties and unscored items keep the base order.

    Args:
        scores: a method's scores of the shortlist, in base order. Shape: (q, s).
        scored: True where the method scored the item. Shape: (q, s).
        base_ids: the shortlist ids in base order (-1 padding stays last). Shape: (q, s).

    Returns:
        ``(scores, ids)`` re-ordered. Shape: (q, s) each.
    """
    key = np.where(scored, scores, -np.inf)
    pos = np.broadcast_to(np.arange(base_ids.shape[1]), base_ids.shape)
    order = np.lexsort((pos, -key), axis=-1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(base_ids, order, axis=1)
