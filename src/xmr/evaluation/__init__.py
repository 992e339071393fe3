"""Retrieval evaluation: score matrices or embeddings plus ground truth in, dicts of floats out.

Imports only numpy and scipy, never torch or faiss.
"""

from __future__ import annotations

from xmr.evaluation.metrics import (
    PRIMARY_METRIC,
    average_precision,
    average_precisions,
    cmc,
    cross_modal_metrics,
    cross_modal_metrics_from_ranks,
    cross_modal_ranks,
    cross_modal_ranks_from_embeddings,
    first_relevant_ranks,
    label_retrieval_metrics,
    mean_average_precision,
    rank_metrics,
)
from xmr.evaluation.overlap import overlap_indicator, plot_overlap_histogram, positive_negative_sims
from xmr.evaluation.protocol import TABLE_KEYS, build_text_queries, evaluate_embeddings, format_table

__all__ = [
    "PRIMARY_METRIC",
    "TABLE_KEYS",
    "average_precision",
    "average_precisions",
    "build_text_queries",
    "cmc",
    "cross_modal_metrics",
    "cross_modal_metrics_from_ranks",
    "cross_modal_ranks",
    "cross_modal_ranks_from_embeddings",
    "evaluate_embeddings",
    "first_relevant_ranks",
    "format_table",
    "label_retrieval_metrics",
    "mean_average_precision",
    "overlap_indicator",
    "plot_overlap_histogram",
    "positive_negative_sims",
    "rank_metrics",
]
