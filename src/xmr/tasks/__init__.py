"""Tasks: each kind of run (``retrieval``, ``composed``, later ones) is one registered object.

A task knows its config type, which ``xmr`` options it takes (the CLI refuses the others by name),
and how to train, evaluate and search a run of its kind. The CLI looks the task up (``--task`` for
``xmr train``, the run's ``run.json`` otherwise) and dispatches; it never asks ``if task == ...``.

    >>> from xmr.tasks import TASKS, task_of_run
    >>> TASKS.names()
    ['composed', 'retrieval']
"""

from __future__ import annotations

from xmr.tasks import composed, retrieval  # noqa: E402,F401,I001  (register the built-in tasks)
from xmr.tasks.base import TASKS, EvalOutcome, Task, TrainOutcome, task_of_run

__all__ = ["TASKS", "EvalOutcome", "Task", "TrainOutcome", "task_of_run"]
