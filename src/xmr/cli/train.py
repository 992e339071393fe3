"""``xmr train MANIFEST --out RUN``: the task's train (:mod:`xmr.tasks`; retrieval:
:func:`xmr.workflows.train.train_run`), its config built from the options given. The options are
the tasks' own (:meth:`xmr.tasks.Task.add_arguments`, merged by :mod:`xmr.cli.task_options`); the
defaults are the task's config dataclasses' (shown in ``--help``)."""

from __future__ import annotations

import argparse
from typing import Any

from xmr.cli.errors import cli_wording
from xmr.cli.options import add_cache, add_process_backend, add_runtime, runtime_from_args
from xmr.cli.task_options import add_task_options, task_help
from xmr.errors import XmrError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from xmr.tasks import DEFAULT_TASK

    p = sub.add_parser("train", help="learn a joint space on cached features")
    p.add_argument("manifest", help="JSONL/CSV manifest or Karpathy split JSON (see README: Data); its val and "
                                    "test splits are the run's")
    p.add_argument("--out", required=True, help="run folder (created; an unfinished run there is resumed)")
    p.add_argument("--task", default=DEFAULT_TASK, metavar="TASK", help=task_help())
    p.add_argument("--overwrite", action="store_true", help="discard any run in --out and start again")
    add_cache(p)
    add_runtime(p, loader=True)
    add_process_backend(p)
    add_task_options(p, "train")
    p.set_defaults(func=run)


def train_config_from_args(a: argparse.Namespace) -> Any:
    """The run config ``xmr train`` builds from its parsed options (exposed for tests); an option the
    task does not take is refused by name, and errors are worded for the command line."""
    from xmr.tasks import TASKS

    task = TASKS.get(a.task)
    a.task_options.refuse_others(a, task, f"--task {task.name}")
    try:
        return task.config_from_options(a.manifest, a.task_options.given(a, task))
    except XmrError as e:
        raise XmrError(e.worded(cli_wording)) from None


def run(a: argparse.Namespace) -> None:
    from xmr.tasks import TASKS
    from xmr.training.distributed import current_world

    runtime = runtime_from_args(a)  # resolved once, before anything is read: a missing device fails first
    task = TASKS.get(a.task)
    r = task.train(train_config_from_args(a), a.out, cache_dir=a.cache_dir, overwrite=a.overwrite,
                   given=a.task_options.given(a, task), runtime=runtime)
    if current_world().is_main:  # several processes (torchrun): one summary
        print(f"{r.status}: best epoch {r.best_epoch}, {r.summary}; checkpoint: {r.best_dir}")
