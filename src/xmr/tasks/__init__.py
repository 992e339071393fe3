"""Tasks: each kind of run (``retrieval``, ``composed``, later ones) is one registered package.

A task (:class:`Task`, generic in its run config) knows its config class (``config_class``: the
one registry of run configs is :data:`TASKS`), the options it takes for ``xmr train`` / ``eval`` /
``search`` (``add_arguments``; an option another task adds and it does not is refused by name), how
to train, evaluate and search a run of its kind, and what else it can do (``capabilities``:
``index``, ``serve``, ``captions``, ``imagines``, each with its method). The CLI looks the task up
(``--task`` for ``xmr train``, the run's ``run.json`` otherwise) and dispatches; it never asks
``if task == ...``. Nothing here imports torch until a task is asked to do something.

    >>> from xmr.tasks import TASKS, task_of_run
    >>> TASKS.names()
    ['composed', 'retrieval']
"""

from __future__ import annotations

from xmr.tasks import composed, retrieval  # noqa: E402,F401,I001  (register the built-in tasks)
from xmr.tasks.base import (
    CAPABILITIES,
    DEFAULT_TASK,
    OPTION_COMMANDS,
    TASKS,
    EvalOutcome,
    OptionParser,
    Options,
    Task,
    TrainOutcome,
    load_run_config,
    load_service,
    pick,
    task_of_run,
)

__all__ = ["CAPABILITIES", "DEFAULT_TASK", "OPTION_COMMANDS", "TASKS", "EvalOutcome", "OptionParser", "Options", "Task",
           "TrainOutcome", "load_run_config", "load_service", "pick", "task_of_run"]
