"""``xmr eval RUN``: the run's task's evaluate (retrieval: :func:`xmr.workflows.evaluate.evaluate_run`):
the report, and where its JSON was written. Beside ``--split`` and ``--cache-dir``, the options are
the run's task's own (:mod:`xmr.cli.task_options`)."""

from __future__ import annotations

import argparse

from xmr.cli.options import add_cache, add_runtime, command_line, defaults_from, run_task, runtime_from_args
from xmr.cli.task_options import add_task_options


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("eval", help="Recall@K / medr / rsum (+ mAP, CMC) of a run on a split")
    p.add_argument("run")
    p.add_argument("--split", default="test", help="the split of the run's manifest to evaluate on")
    p.add_argument("--task", default=None, metavar="TASK",
                   help="the task the run must be of (default: the run's own, from its run.json)")
    add_cache(p)
    add_runtime(p, loader=True)
    p.defaults_fn = defaults_from(  # type: ignore[attr-defined]  # read by _Parser.format_help
        "xmr.workflows.evaluate:evaluate_run", {"split": "split"})
    add_task_options(p, "eval")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    runtime = runtime_from_args(a)  # resolved once, before anything is read: a missing device fails first
    task = run_task(a)
    a.task_options.refuse_others(a, task, f"`xmr eval` of a {task.name} run")
    outcome = task.evaluate(a.run, a.task_options.given(a, task), split=a.split, cache_dir=a.cache_dir,
                            command=command_line(a), runtime=runtime)
    print(outcome.report)
    print(f"written: {outcome.written}")
