"""The label-retrieval study's building blocks (``benchmarks/label_retrieval.py``), kept in the
package so that tests check them without importing a benchmark script.

N-way k-shot label retrieval, Euclidean vs geodesic (the joint-manifold paper's Table 2), scored
on one prebuilt epsilon-graph per pool: Dijkstra runs from the database vertices, N x k sources
instead of one per query (:func:`score_database`, checked against
:func:`xmr.rerank.manifold_eval.label_retrieval`).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from xmr.rerank.geodesic import epsilon_graph, geodesic_distances
from xmr.rerank.manifold_eval import sample_n_way_k_shot
from xmr.utils.arrays import l2_normalize

EPV_GRID = (1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 50.0, 100.0)
METRICS = ("r1_euclidean", "r1_geodesic", "r1_euclidean_retrievable", "r1_geodesic_retrievable",
           "n_queries", "n_retrievable")


@dataclass
class Pool:
    """One evaluation pool: labels plus, per space, the image points and optional text points."""

    labels: np.ndarray
    spaces: dict[str, tuple[np.ndarray, np.ndarray | None]]


def unit(x: np.ndarray) -> np.ndarray:
    return l2_normalize(np.asarray(x, np.float64))


def make_pools(img_feats: dict[str, np.ndarray], img_emb: dict[str, np.ndarray],
               txt_emb: dict[str, np.ndarray], labels: dict[str, np.ndarray],
               align: tuple[np.ndarray, np.ndarray]) -> dict[str, Pool]:
    """Pools ``val`` and ``test`` with the three spaces; ``align`` = (R, t) from the training pairs."""
    r, t = align
    pools = {}
    for split in ("val", "test"):
        aligned = unit(img_emb[split] @ r.T + t)
        pools[split] = Pool(labels[split], {
            "pretrained": (unit(img_feats[split]), None),
            "image": (aligned, None),
            "image+text": (aligned, unit(txt_emb[split])),
        })
    return pools


def manifold_graph(points: np.ndarray, extra: np.ndarray | None, epv: float) -> tuple[sp.csr_matrix, float]:
    """Epsilon-graph over the image points (vertices 0..n-1) and the extra points after them."""
    return epsilon_graph(points if extra is None else np.vstack([points, extra]), edges_per_vertex=epv)


def score_database(points: np.ndarray, graph: sp.csr_matrix, labels: np.ndarray, n_way: int, k_shot: int,
                   seed: int) -> dict[str, float]:
    """:func:`n_way_k_shot_retrieval` on a prebuilt graph (same sampling, ties and counting).

    Dijkstra runs from the database vertices (the graph is undirected), N x k sources instead of
    one per query.
    """
    db, queries = sample_n_way_k_shot(labels, n_way, k_shot, seed=seed)
    eu_nn = db[np.argmax(points[queries] @ points[db].T, axis=1)]
    d = geodesic_distances(graph, db)[:, queries].T  # (n_queries, n_db)
    retrievable = np.isfinite(d).any(axis=1)
    geo_nn = db[np.argmin(d, axis=1)]
    eu_hit = labels[eu_nn] == labels[queries]
    geo_hit = retrievable & (labels[geo_nn] == labels[queries])
    n_ret = int(retrievable.sum())
    nan = float("nan")
    return {"r1_euclidean": 100.0 * eu_hit.mean(), "r1_geodesic": 100.0 * geo_hit.mean(),
            "r1_euclidean_retrievable": 100.0 * eu_hit[retrievable].mean() if n_ret else nan,
            "r1_geodesic_retrievable": 100.0 * geo_hit[retrievable].mean() if n_ret else nan,
            "n_queries": float(len(queries)), "n_retrievable": float(n_ret)}


def evaluate(pool: Pool, space: str, epv: float, seeds: list[int], settings: tuple[tuple[int, int], ...]
             ) -> dict[str, object]:
    points, extra = pool.spaces[space]
    graph, eps = manifold_graph(points, extra, epv)
    n_classes = len(set(pool.labels))
    per: dict[str, dict[str, float | list[float]]] = {}
    for n_way, k_shot in settings:
        if n_way > n_classes:
            continue
        runs = [score_database(points, graph, pool.labels, n_way, k_shot, s) for s in seeds]
        agg: dict[str, float | list[float]] = {m: float(np.nanmean([r[m] for r in runs])) for m in METRICS}
        gain = [r["r1_geodesic"] - r["r1_euclidean"] for r in runs]
        agg["geo_minus_eu"] = float(np.mean(gain))
        agg["geo_minus_eu_sd"] = float(np.std(gain, ddof=1)) if len(gain) > 1 else 0.0
        gain_ret = [r["r1_geodesic_retrievable"] - r["r1_euclidean_retrievable"] for r in runs]
        agg["geo_minus_eu_retrievable"] = float(np.nanmean(gain_ret))
        agg["geo_minus_eu_retrievable_sd"] = float(np.nanstd(gain_ret, ddof=1)) if len(gain_ret) > 1 else 0.0
        agg["n_seeds"] = float(len(runs))
        per[f"{n_way}-way {k_shot}-shot"] = agg
    return {"edges_per_vertex": epv, "epsilon": eps, "settings": per}


def choose_epv(pool: Pool, space: str, seeds: list[int], settings: tuple[tuple[int, int], ...]
               ) -> tuple[float, dict[str, float]]:
    """edges_per_vertex maximising the mean geodesic R@1 (all queries) on the validation pool."""
    curve: dict[str, float] = {}
    eu = 0.0
    for epv in EPV_GRID:
        res = typing.cast(dict[str, dict[str, float]], evaluate(pool, space, epv, seeds, settings)["settings"])
        curve[f"{epv:g}"] = float(np.mean([v["r1_geodesic"] for v in res.values()]))
        eu = float(np.mean([v["r1_euclidean"] for v in res.values()]))
    best = max(curve, key=lambda k: (curve[k], -float(k)))  # ties -> the sparser graph
    return float(best), {**curve, "euclidean": eu}
