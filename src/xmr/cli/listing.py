"""``xmr list``: the registered tasks, encoders, text models, losses, similarities, heads, indexes,
re-rankers and datasets."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("list", help="registered encoders, losses, heads, indexes, re-rankers and datasets")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from xmr.data import DATASETS
    from xmr.encoders import ENCODERS
    from xmr.evaluation.similarity import SIMILARITIES
    from xmr.index import INDEXES
    from xmr.models import HEADS
    from xmr.objectives import train_loss_names
    from xmr.rerank import RERANKERS
    from xmr.tasks import TASKS
    from xmr.text import TEXT_MODELS

    for name, names in (("tasks", TASKS.names()), ("encoders", ENCODERS.names()),
                        ("text models (trained)", TEXT_MODELS.names()),
                        ("losses", train_loss_names()), ("similarities", SIMILARITIES.names()),
                        ("heads", HEADS.names()), ("indexes", INDEXES.names()), ("rerankers", RERANKERS.names()),
                        ("datasets", DATASETS.names())):
        print(f"{name}: {', '.join(names)}")
