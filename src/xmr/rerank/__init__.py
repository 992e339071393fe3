"""Re-ranking on the data manifold: kNN graphs, diffusion and bi-directional random walks, and the
registered re-rankers built on them (``RERANKERS``: ``diffusion``, ``bidirectional``, ``geodesic``;
:mod:`.reranker`, :mod:`.methods`, :mod:`.registry`) that re-order a search's shortlist.

Array in, array out (numpy / scipy.sparse / FAISS); nothing here imports a torch model.
Papers: "Mining on Heterogeneous Manifolds for Zero-Shot Cross-Modal Image Retrieval" (AAAI
2020), Eqs. 1-8; diffusion after Iscen et al., CVPR 2017; geodesic retrieval from "Learning a
joint image-text embedding manifold" (Sec. 3.2, Alg. 1).
"""

from __future__ import annotations

from xmr.rerank.diffusion import bidirectional_scores, diffuse, random_walk_scores
from xmr.rerank.geodesic import (
                                 epsilon_graph,
                                 geodesic_distances,
                                 geodesic_knn,
                                 great_circle,
                                 icp_align,
                                 procrustes_align,
)
from xmr.rerank.graphs import cross_knn_affinity, knn, mutual_knn_affinity, row_normalize, symmetric_normalize
from xmr.rerank.manifold_eval import count_smooth_paths, n_way_k_shot_retrieval, sample_n_way_k_shot
from xmr.rerank.offline import online_scores, online_topk, truncated_inverse
from xmr.rerank.registry import (  # noqa: I001  (after the arrays: the re-rankers are built on them)
                                 RERANKERS,
                                 GalleryVectors,
                                 Reranker,
                                 create_reranker,
                                 load_reranker,
                                 rerankers_from_strings,
)
from xmr.rerank.truncation import gallery_guided_ranges, truncated_bidirectional_scores, truncated_walk_scores

__all__ = ["knn", "mutual_knn_affinity", "cross_knn_affinity", "symmetric_normalize", "row_normalize",
           "diffuse", "random_walk_scores", "bidirectional_scores", "procrustes_align", "icp_align", "great_circle",
           "epsilon_graph", "geodesic_distances", "geodesic_knn", "truncated_inverse", "online_scores",
           "online_topk",
           "gallery_guided_ranges", "truncated_walk_scores", "truncated_bidirectional_scores",
           "n_way_k_shot_retrieval", "sample_n_way_k_shot", "count_smooth_paths",
           "RERANKERS", "GalleryVectors", "Reranker", "create_reranker", "load_reranker", "rerankers_from_strings"]
