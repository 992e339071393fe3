"""The registered re-rankers: ``diffusion``, ``bidirectional`` and ``geodesic``.

All three only re-order the index's shortlist; the heavy work (graphs, truncated inverses,
epsilon-graphs) is done once by :meth:`~xmr.rerank.reranker.Reranker.fit` and saved beside
the index. The array primitives come from :mod:`xmr.rerank`.

* ``diffusion``: mutual-kNN graph of the gallery in the joint space, truncated inverse of
  (I - alpha S) offline, online scores from the query's nearest gallery items (Yang et al. 2019).
* ``bidirectional``: the heterogeneous-manifolds paper (AAAI 2020), Eq. 8 in an online form,
  walks over the gallery's own-space graph and over the other modality's own-space graph.
* ``geodesic``: the joint-embedding-manifold paper (Sec. 3.2, Alg. 1), shortest paths on a
  great-circle epsilon-graph of the aligned gallery (plus the other modality's points).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from xmr.errors import Param, XmrError
from xmr.rerank.geodesic import epsilon_graph, great_circle, icp_align, procrustes_align
from xmr.rerank.graphs import knn, mutual_knn_affinity, row_normalize, symmetric_normalize
from xmr.rerank.offline import online_scores, truncated_inverse
from xmr.rerank.reranker import (
    RERANKERS,
    GallerySides,
    Reranker,
    RerankParams,
    check_bool,
    check_float,
    check_int,
    unit_rows,
)
from xmr.utils.arrays import l2_normalize

# -- parameters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffusionParams(RerankParams):
    """Diffusion on the gallery's mutual-kNN graph.

    Attributes:
        k: neighbours per node of the mutual kNN graph (must be below the gallery size).
        gamma: affinities are max(0, cosine)^gamma, in the graph and for the query's kNN.
        alpha: restart parameter in (0, 1); larger walks further.
        n_trunc: each node's diffusion is solved on its n_trunc nearest neighbours (clipped
            to the gallery size; n_trunc >= gallery size is exact diffusion).
        k_q: the query's nearest gallery items that start the walk (<= shortlist).
        shortlist: results of the index that are re-ordered.
    """

    k: int = 30
    gamma: float = 3.0
    alpha: float = 0.9
    n_trunc: int = 500
    k_q: int = 10

    METHOD: ClassVar[str] = "diffusion"
    ONLINE: ClassVar[frozenset[str]] = frozenset({"shortlist", "k_q"})
    TUNE_GRID: ClassVar[Mapping[str, tuple[object, ...]]] = {"k": (10, 30), "alpha": (0.7, 0.9), "gamma": (1.0, 3.0),
                                                             "k_q": (5, 10)}

    def __post_init__(self) -> None:
        super().__post_init__()
        m = self.METHOD
        check_int(m, "k", self.k)
        check_float(m, "gamma", self.gamma, 0.0, np.inf, open_low=True, open_high=True)
        check_float(m, "alpha", self.alpha, 0.0, 1.0, open_low=True, open_high=True)
        check_int(m, "n_trunc", self.n_trunc)
        check_int(m, "k_q", self.k_q)
        if self.k_q > self.shortlist:
            raise XmrError(f"{m} parameter k_q ({self.k_q}) must not exceed shortlist ({self.shortlist})")


@dataclass(frozen=True)
class BidirectionalParams(DiffusionParams):
    """The bi-directional walk (diffusion parameters apply to both graphs).

    Attributes:
        lam: weight of the walk over the target's graph; 1 - lam goes to the walk over the
            other modality's graph (Eq. 8's lambda), in [0, 1].
        hetero: True builds each modality's graph in its encoder's own feature space (the
            paper); False builds both in the joint space (no own features needed).
        k_cross: each other-modality point's nearest targets in the joint space (the S_yx block).
        normalize: scale each direction's scores to unit L2 norm per query before fusing.
    """

    lam: float = 0.5
    hetero: bool = True
    k_cross: int = 10
    normalize: bool = True

    METHOD: ClassVar[str] = "bidirectional"
    ONLINE: ClassVar[frozenset[str]] = frozenset({"shortlist", "k_q", "lam", "normalize"})
    TUNE_GRID: ClassVar[Mapping[str, tuple[object, ...]]] = {"k": (10, 30), "alpha": (0.7, 0.9),
                                                             "lam": (0.25, 0.5, 0.75)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_float(self.METHOD, "lam", self.lam, 0.0, 1.0)
        check_bool(self.METHOD, "hetero", self.hetero)
        check_int(self.METHOD, "k_cross", self.k_cross)
        check_bool(self.METHOD, "normalize", self.normalize)


@dataclass(frozen=True)
class GeodesicParams(RerankParams):
    """Geodesic distance on the joint-space manifold.

    Attributes:
        edges_per_vertex: the epsilon of the great-circle graph is chosen so that it has about
            edges_per_vertex x |V| edges (|E| = O(|V|)).
        align: rotate and shift the target points onto the other modality's points first
            (Alg. 1): one Procrustes step on the gallery's matched pairs when it has them (items
            and their first text), otherwise iterative closest point on mutual nearest neighbours.
        with_other_modality: add the other modality's points (texts, for an image gallery) to
            the graph as extra manifold samples; they are never returned.
    """

    edges_per_vertex: float = 10.0
    align: bool = True
    with_other_modality: bool = True

    METHOD: ClassVar[str] = "geodesic"
    TUNE_GRID: ClassVar[Mapping[str, tuple[object, ...]]] = {"edges_per_vertex": (5.0, 10.0, 20.0),
                                                             "with_other_modality": (True, False)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_float(self.METHOD, "edges_per_vertex", self.edges_per_vertex, 0.0, np.inf,
                    open_low=True, open_high=True)
        check_bool(self.METHOD, "align", self.align)
        check_bool(self.METHOD, "with_other_modality", self.with_other_modality)


# -- shared pieces -------------------------------------------------------------------------------


def _check_k(method: str, name: str, k: int, n: int, what: str) -> None:
    if k > n - 1:
        raise XmrError("{method} parameter {name}={k} is too large for a gallery of {n} {what} (at most {most}); "
                       "lower it ({fix})", method=method, name=name, k=k, n=n, what=what, most=n - 1,
                       fix=Param(f"{method}.{name}", n - 1))


def diffusion_inverse(points: np.ndarray, *, k: int, gamma: float, alpha: float, n_trunc: int) -> sp.csr_matrix:
    """Truncated inverse of (I - alpha S) for the mutual-kNN graph of ``points``. Shape: (n, n).

    Each node's truncation set is itself and its ``n_trunc - 1`` nearest neighbours in the same
    space the graph is built in (clipped to the gallery size).
    """
    s = symmetric_normalize(mutual_knn_affinity(points, k, gamma=gamma))
    n = len(points)
    t = min(n_trunc, n)
    self_ids = np.arange(n)[:, None]
    neighbours = self_ids if t == 1 else np.hstack([self_ids, knn(points, t - 1)[1]])
    return truncated_inverse(s, neighbours, alpha=alpha)


def _seeds(base_scores: np.ndarray, base_ids: np.ndarray, k_q: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k_q`` shortlist entries as online_scores input; padding gets weight 0."""
    sims, ids = base_scores[:, :k_q], base_ids[:, :k_q]
    pad = ids < 0
    return np.where(pad, 0.0, sims), np.where(pad, 0, ids)


def _at(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``scores[q, ids[q, j]]`` with 0 for padding ids. Shape: as ``ids``."""
    return np.where(ids >= 0, np.take_along_axis(scores, np.maximum(ids, 0), axis=1), 0.0)


def _top_per_row(m: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """Keep the ``keep`` largest entries of each row of a CSR matrix."""
    m = sp.csr_matrix(m)
    counts = np.diff(m.indptr)
    if counts.max(initial=0) <= keep:
        return m
    data, indices = m.data.copy(), m.indices
    for i in np.flatnonzero(counts > keep):
        a, b = m.indptr[i], m.indptr[i + 1]
        drop = np.argpartition(-data[a:b], keep)[keep:]
        data[a + drop] = 0.0
    out = sp.csr_matrix((data, indices, m.indptr.copy()), shape=m.shape)
    out.eliminate_zeros()
    return out


# -- diffusion -----------------------------------------------------------------------------------


@RERANKERS.register("diffusion")
class DiffusionReranker(Reranker):
    """Diffusion in the gallery's joint space, offline truncated inverse + online scoring.

    Offline: mutual kNN graph of the gallery (k, gamma), S = D^-1/2 A D^-1/2, and for every node
    the diffusion (I - alpha S_T)^-1 e_i solved on its n_trunc nearest neighbours T (rows of M).
    Online: a query's k_q nearest gallery items j (from the shortlist) with cosines s_j give
    f = sum_j s_j^gamma M[j, :]; with n_trunc >= n this is exactly (I - alpha S)^-1 y. Works for
    any query modality (the query only enters through its joint-space neighbours).

    Example:
        >>> rr = DiffusionReranker(k=5, n_trunc=50).fit(GalleryVectors(img, txt))   # doctest: +SKIP
        >>> scores, ids = rr.rerank(q, None, *index.search(q, 100))                 # doctest: +SKIP
    """

    name = "diffusion"
    params_type = DiffusionParams
    params: DiffusionParams

    def _fit(self, sides: GallerySides) -> None:
        p = self.params
        _check_k(self.name, "k", p.k, len(sides.target), f"{sides.modality}s")
        self.inverse = diffusion_inverse(unit_rows(sides.target), k=p.k, gamma=p.gamma, alpha=p.alpha,
                                         n_trunc=p.n_trunc)

    def _shortlist_scores(self, query_joint: np.ndarray, query_own: np.ndarray | None, base_scores: np.ndarray,
                          base_ids: np.ndarray, *, same_modality: bool) -> tuple[np.ndarray, np.ndarray]:
        f = online_scores(self.inverse, *_seeds(base_scores, base_ids, self.params.k_q), gamma=self.params.gamma)
        scores = _at(f, base_ids)
        return scores, scores > 0

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, sp.csr_matrix], dict[str, object]]:
        return {}, {"inverse": self.inverse}, {"nnz": int(self.inverse.nnz)}

    def _set_state(self, arrays, matrices, info) -> None:
        self.inverse = matrices["inverse"]


# -- bidirectional -------------------------------------------------------------------------------


@RERANKERS.register("bidirectional")
class BidirectionalReranker(Reranker):
    """The bi-directional random walk over heterogeneous manifolds (AAAI 2020, Eq. 8), online.

    Write X for the gallery side that is re-ordered (the images, for text queries) and Y for the
    indexed points of the query's modality (the texts). Offline:

    * M_x: truncated inverse of (I - alpha S_xx), S_xx from the mutual kNN graph of X in X's own
      encoder space (``hetero``; the joint space otherwise);
    * M_y: the same for Y in Y's own space;
    * R_y = M_y S_yx with S_yx each y's k_cross nearest x in the joint space, row-normalised;
      row y' of R_y is the walk over Y's graph that starts at y' and jumps into X (Eq. 7, the
      L_yy^-1 S_yx term). The n_trunc largest entries per row are kept.

    Online, for a new query q:

    * F_x = sum_{j in kNN_joint(q, X)} s_j^gamma M_x[j] (the query enters X's graph through its
      k_q nearest gallery items: gallery-guided, as in Sec. 3.4);
    * F_y = sum_{y' in kNN_own(q, Y)} w_y'^gamma R_y[y']. Eq. 8 needs the walk from q itself over
      Y's graph, but q is not a node of it; its k_q nearest indexed points of its own modality (in
      its own encoder space) stand in for it, as in online diffusion. When q is one of them (an
      evaluation query) its own row dominates, which is Eq. 8 exactly for a truncated inverse;
    * B = lam F_x + (1 - lam) F_y. With ``normalize`` each part is first scaled to unit L2 norm
      per query: the paper fuses raw scores because both of its columns come from row-normalised
      blocks; here F_x is built from raw kNN weights and F_y through a row-normalised block, so
      their scales differ by orders of magnitude.

    Cross-modal only: an image query against an image gallery has no Y-side walk (use diffusion
    or geodesic). Both targets work: for image queries over the texts the roles swap.
    """

    name = "bidirectional"
    params_type = BidirectionalParams
    params: BidirectionalParams

    def _fit(self, sides: GallerySides) -> None:
        p = self.params
        other = "texts" if sides.modality == "image" else "images"
        if len(sides.other) == 0:
            raise XmrError(f"bidirectional re-ranking needs indexed {other} beside the gallery "
                           f"{sides.modality}s; this gallery has none")
        if p.hetero and (sides.target_feats is None or sides.other_feats is None):
            raise XmrError("bidirectional re-ranking with hetero=true needs the encoders' own features of "
                           "the gallery; pass image_feats/text_feats or set hetero=false")
        n, m = len(sides.target), len(sides.other)
        _check_k(self.name, "k", p.k, n, f"{sides.modality}s")
        _check_k(self.name, "k", p.k, m, other)
        if p.k_cross > n:
            raise XmrError(f"bidirectional parameter k_cross={p.k_cross} is larger than the gallery ({n})")
        xj, yj = unit_rows(sides.target), unit_rows(sides.other)
        xf, yf = (unit_rows(sides.target_feats), unit_rows(sides.other_feats)) if p.hetero else (xj, yj)  # type: ignore[arg-type]  # fit checked feats exist when hetero
        kw = {"k": p.k, "gamma": p.gamma, "alpha": p.alpha, "n_trunc": p.n_trunc}
        self.inverse_x = diffusion_inverse(xf, **kw)  # type: ignore[arg-type]  # int and float knobs
        inverse_y = diffusion_inverse(yf, **kw)  # type: ignore[arg-type]  # int and float knobs
        sims, ids = knn(yj, p.k_cross, y=xj)
        w = np.power(np.clip(sims, 0.0, None), p.gamma).ravel()
        s_yx = row_normalize(sp.csr_matrix((w, (np.repeat(np.arange(m), p.k_cross), ids.ravel())), shape=(m, n)))
        step = 1024  # R_y row blocks: bounds the memory of the product before pruning
        self.cross_y = sp.vstack([_top_per_row(inverse_y[a:a + step] @ s_yx, p.n_trunc)
                                  for a in range(0, m, step)]).tocsr()
        self.other_points = yf

    def _shortlist_scores(self, query_joint: np.ndarray, query_own: np.ndarray | None, base_scores: np.ndarray,
                          base_ids: np.ndarray, *, same_modality: bool) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        if same_modality:
            kind = self.target[:-1] if self.target else ""
            raise XmrError(f"bidirectional re-ranking is cross-modal: it re-orders {self.target} for "
                           f"{'text' if kind == 'image' else 'image'} queries; use diffusion or geodesic "
                           f"for {kind}-to-{kind} search")
        if p.hetero:
            if query_own is None:
                raise XmrError("bidirectional re-ranking with hetero=true needs the queries' own encoder features")
            if query_own.shape[1] != self.other_points.shape[1] or len(query_own) != len(query_joint):
                raise XmrError(f"query features have shape {query_own.shape}; the structures expect "
                               f"({len(query_joint)}, {self.other_points.shape[1]})")
            q_own = unit_rows(query_own)
        else:
            q_own = unit_rows(query_joint)
        k_y = min(p.k_q, len(self.other_points))
        f_x = online_scores(self.inverse_x, *_seeds(base_scores, base_ids, p.k_q), gamma=p.gamma)
        f_y = online_scores(self.cross_y, *knn(q_own, k_y, y=self.other_points), gamma=p.gamma)
        if p.normalize:
            f_x, f_y = l2_normalize(f_x, eps=1e-300), l2_normalize(f_y, eps=1e-300)
        scores = _at(p.lam * f_x + (1.0 - p.lam) * f_y, base_ids)
        return scores, scores > 0

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, sp.csr_matrix], dict[str, object]]:
        return ({"other_points": self.other_points}, {"inverse_x": self.inverse_x, "cross_y": self.cross_y},
                {"nnz": int(self.inverse_x.nnz + self.cross_y.nnz)})

    def _set_state(self, arrays, matrices, info) -> None:
        self.other_points = arrays["other_points"]
        self.inverse_x, self.cross_y = matrices["inverse_x"], matrices["cross_y"]


# -- geodesic ------------------------------------------------------------------------------------


@RERANKERS.register("geodesic")
class GeodesicReranker(Reranker):
    """Shortlist ordered by geodesic distance on a great-circle epsilon-graph (Alg. 1, Sec. 3.2).

    Offline: the target points (e.g. images) are rotated and shifted onto the other modality's
    points (``align``: Procrustes over the gallery's matched pairs, or ICP on mutual nearest
    neighbours when there are none, as in evaluation), re-normalised to the unit
    sphere, and joined with the other modality's points (``with_other_modality``) into an
    epsilon-graph with about edges_per_vertex x |V| edges. Online: the query becomes a vertex
    linked to every point within epsilon (great-circle), Dijkstra runs from it, and the shortlist
    is sorted by distance (score = -distance). A query of the target's own modality is moved by
    the same alignment first. Targets with no path keep their base order after the reachable
    ones; a query with no point within epsilon is *unretrievable* and keeps the base order.
    """

    name = "geodesic"
    params_type = GeodesicParams
    params: GeodesicParams

    def _fit(self, sides: GallerySides) -> None:
        p = self.params
        x = unit_rows(sides.target).astype(np.float64)
        other = unit_rows(sides.other).astype(np.float64) if len(sides.other) else np.zeros((0, x.shape[1]))
        d = x.shape[1]
        self.rotation, self.shift, self.alignment = np.eye(d), np.zeros(d), "none"
        if p.align:
            if len(sides.pairs) >= 2:
                self.rotation, self.shift = procrustes_align(x[sides.pairs[:, 0]], other[sides.pairs[:, 1]])
                self.alignment = f"procrustes on {len(sides.pairs)} pairs"
            elif len(other) >= 2:
                self.rotation, self.shift, n_pairs = icp_align(x, other)
                self.alignment = f"icp on {n_pairs} mutual nearest neighbours"
            else:
                raise XmrError("geodesic alignment needs points of the other modality (indexed texts); set {fix}",
                               fix=Param("geodesic.align", False))
            x = x @ self.rotation.T + self.shift
        points = np.vstack([x, other]) if p.with_other_modality and len(other) else x
        self.points = l2_normalize(points)
        self.graph, self.epsilon = epsilon_graph(self.points, edges_per_vertex=p.edges_per_vertex)

    def query_distances(self, query_joint: np.ndarray, *, same_modality: bool = False) -> np.ndarray:
        """Geodesic distance from each query to every graph vertex (inf: no path). Shape: (q, V).

        The first ``n_gallery`` vertices are the target points in gallery order.
        """
        q = np.asarray(query_joint, np.float64)
        if same_modality and self.params.align:
            q = q @ self.rotation.T + self.shift
        q = l2_normalize(q)
        n_v = len(self.points)
        coo = self.graph.tocoo()
        out = np.full((len(q), n_v), np.inf)
        for i, d in enumerate(great_circle(q, self.points)):
            near = np.flatnonzero(d <= self.epsilon)
            if not len(near):
                continue  # unretrievable: no vertex within epsilon
            w = np.maximum(d[near], 1e-12)  # a zero-length edge must still be an edge
            qv = np.full(len(near), n_v)
            g = sp.csr_matrix((np.concatenate([coo.data, w]), (np.concatenate([coo.row, qv]),
                                                               np.concatenate([coo.col, near]))),
                              shape=(n_v + 1, n_v + 1))
            out[i] = dijkstra(g, directed=False, indices=n_v)[:n_v]
        return out

    def _shortlist_scores(self, query_joint: np.ndarray, query_own: np.ndarray | None, base_scores: np.ndarray,
                          base_ids: np.ndarray, *, same_modality: bool) -> tuple[np.ndarray, np.ndarray]:
        dist = self.query_distances(query_joint, same_modality=same_modality)[:, :self.n_gallery]
        g = np.where(base_ids >= 0, np.take_along_axis(dist, np.maximum(base_ids, 0), axis=1), np.inf)
        return -g, np.isfinite(g)

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, sp.csr_matrix], dict[str, object]]:
        return ({"points": self.points, "rotation": self.rotation, "shift": self.shift}, {"graph": self.graph},
                {"epsilon": self.epsilon, "n_vertices": len(self.points), "n_edges": int(self.graph.nnz // 2),
                 "alignment": self.alignment})

    def _set_state(self, arrays, matrices, info) -> None:
        self.points, self.rotation, self.shift = arrays["points"], arrays["rotation"], arrays["shift"]
        self.graph, self.epsilon = matrices["graph"], float(info["epsilon"])
        self.alignment = str(info.get("alignment", ""))
