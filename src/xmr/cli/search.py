"""``xmr search RUN --text ...``: the run's task's search (retrieval: :class:`xmr.search.Searcher`),
one terminal-safe line per hit. The options are the run's task's own (:mod:`xmr.cli.task_options`)."""

from __future__ import annotations

import argparse

from xmr.cli.options import run_task
from xmr.cli.task_options import add_task_options


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("search", help="query an indexed run by text or image")
    p.add_argument("run")
    add_task_options(p, "search")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    task = run_task(a)
    a.task_options.refuse_others(a, task, f"`xmr search` of a {task.name} run")
    for line in task.search(a.run, a.task_options.given(a, task)):
        print(line)
