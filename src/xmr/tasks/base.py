"""The :class:`Task` interface, its registry and the lookup of a run folder's task."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from xmr.errors import XmrError
from xmr.registry import Registry
from xmr.runs.base import read_task_name

#: command-line options as argparse parsed them, ``{option dest: value}`` (None: not given)
Options = Mapping[str, Any]


@dataclass(frozen=True)
class TrainOutcome:
    """What ``xmr train`` reports: status, best epoch, its validation metrics, the checkpoint."""

    status: str
    best_epoch: int
    metrics: Mapping[str, float]
    best_dir: Path
    summary: str  # one line: the task's headline validation numbers


@dataclass(frozen=True)
class EvalOutcome:
    """What ``xmr eval`` reports: the metrics, the human-readable report, the JSON written."""

    metrics: Mapping[str, float]
    report: str
    written: Path


class Task(abc.ABC):
    """One kind of run.

    Class attributes:
        name: the registered name (``--task``, ``run.json``'s ``task``).
        train_fields: ``{config dataclass: {CLI option dest: field}}`` — the options ``xmr train``
            maps into each of the task's configs (their defaults stay the dataclasses').
        train_options, eval_options, search_options: the other CLI option dests the task takes;
            an option given that is in none of them is refused, naming it.
    """

    name: ClassVar[str]
    train_options: ClassVar[frozenset[str]] = frozenset()
    eval_options: ClassVar[frozenset[str]] = frozenset()
    search_options: ClassVar[frozenset[str]] = frozenset()

    @property
    @abc.abstractmethod
    def train_fields(self) -> Mapping[type, Mapping[str, str]]:
        """``{config dataclass: {option dest: field}}`` for ``xmr train``."""

    def all_train_options(self) -> frozenset[str]:
        return frozenset(d for fields in self.train_fields.values() for d in fields) | self.train_options

    @abc.abstractmethod
    def config_from_options(self, manifest: str, given: Options) -> object:
        """The run config for ``manifest`` from the options the user gave (``{dest: value}``)."""

    @abc.abstractmethod
    def train(self, config: object, out_dir: str | Path, *, cache_dir: str | Path | None = None,
              overwrite: bool = False, skip_bad: bool = False) -> TrainOutcome:
        """Train (or resume, or load a finished) run of this task into ``out_dir``."""

    @abc.abstractmethod
    def evaluate(self, run_dir: str | Path, given: Options, *, command: str | None = None
                 ) -> EvalOutcome:
        """Evaluate the run with the options the user gave (``split`` always present)."""

    @abc.abstractmethod
    def search(self, run_dir: str | Path, given: Options) -> Iterable[str]:
        """Answer the query or queries in ``given``: printable lines (one per hit, or per query with
        ``--json``), yielded as they are ready; a query that failed raises at the end."""


TASKS: Registry[Task] = Registry("task")


def task_of_run(run_dir: str | Path) -> Task:
    """The task of the run in ``run_dir`` (``run.json``'s ``task``; runs without one are ``retrieval``)."""
    return TASKS.get(read_task_name(run_dir))


def refuse_options(given: Options, allowed: frozenset[str], where: str) -> None:
    """One XmrError naming every given option not in ``allowed`` ("--x does not apply to <where>")."""
    foreign = sorted(d for d, v in given.items() if v is not None and v is not False and v != [] and d not in allowed)
    if foreign:
        names = ", ".join("--" + d.replace("_", "-") for d in foreign)
        raise XmrError(f"{names} {'does' if len(foreign) == 1 else 'do'} not apply to {where}")
