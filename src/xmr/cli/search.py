"""``xmr search RUN --text ...``: the run's task's search (retrieval: :class:`xmr.search.Searcher`),
one terminal-safe line per hit. The options are the run's task's own (:mod:`xmr.cli.task_options`)."""

from __future__ import annotations

import argparse

from xmr.cli.options import add_runtime, run_task, runtime_from_args
from xmr.cli.task_options import add_task_options


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("search", help="query an indexed run by text or image")
    p.add_argument("run")
    add_task_options(p, "search")
    add_runtime(p)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    runtime = runtime_from_args(a)  # resolved once, before anything is read: a missing device fails first
    task = run_task(a)
    a.task_options.refuse_others(a, task, f"`xmr search` of a {task.name} run")
    for line in task.search(a.run, a.task_options.given(a, task), runtime=runtime):
        print(line)
