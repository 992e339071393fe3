"""The options the registered tasks add to a command (``xmr train``, ``xmr eval``, ``xmr search``).

Each task adds its own (:meth:`xmr.tasks.Task.add_arguments`); they are merged into the command's
parser (an option two tasks add is added once, as the first declared it: the default task's) and
recorded per task, so that:

- the options a task added reach it (:meth:`TaskOptions.given`), those it did not are refused by
  name when given (:meth:`TaskOptions.refuse_others`): no hand-kept list of what is whose;
- every option defaults to None (not given), so the task's config dataclass's own default applies,
  while ``--help`` shows the default each task declared, per task where they differ
  (``30 (composed: 20)``).

A task registered later (a test's, a plug-in's) is reached with no change here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from xmr.cli.options import shown_default
from xmr.errors import XmrError
from xmr.tasks.options import option_dest

if TYPE_CHECKING:
    from xmr.tasks import Task


def tasks_in_order() -> Iterator[Task[Any]]:
    """The registered tasks, the default one (``xmr train`` without ``--task``) first."""
    from xmr.tasks import DEFAULT_TASK, TASKS

    for name in sorted(TASKS.names(), key=lambda n: n != DEFAULT_TASK):
        yield TASKS.get(name)


class TaskOptions:
    """The tasks' options of one command, added to its parser, and which task added which."""

    def __init__(self, parser: argparse.ArgumentParser, command: str) -> None:
        self.parser, self.command = parser, command
        self.dests: dict[str, set[str]] = {}  # task -> the dests of the options it added
        self.defaults: dict[str, dict[str, Any]] = {}  # dest -> {task: the default it declared}
        for task in tasks_in_order():
            self.dests[task.name] = set()
            task.add_arguments(command, _Adder(self, task.name))

    def add(self, task: str, flags: tuple[str, ...], kwargs: dict[str, Any]) -> None:
        """One ``add_argument`` of ``task``: added to the parser unless another task added it first."""
        if "default" in kwargs:
            self.defaults.setdefault(option_dest(flags, kwargs), {})[task] = kwargs["default"]
        kwargs = {**kwargs, "default": None}  # not given: None, and the config's own default applies
        if flags[0].startswith("-"):
            known = next((self.parser._option_string_actions[f] for f in flags
                          if f in self.parser._option_string_actions), None)
        else:  # a positional
            known = next((a for a in self.parser._actions if not a.option_strings and a.dest == flags[0]), None)
        action = known if known is not None else self.parser.add_argument(*flags, **kwargs)
        self.dests[task].add(action.dest)

    def given(self, a: argparse.Namespace, task: Task[Any]) -> dict[str, Any]:
        """``{dest: value}`` of the options ``task`` added (None: not given)."""
        return {d: getattr(a, d, None) for d in sorted(self.dests.get(task.name, ()))}

    def refuse_others(self, a: argparse.Namespace, task: Task[Any], where: str) -> None:
        """One error naming every option given that ``task`` did not add ("--x does not apply to <where>")."""
        others = set().union(*self.dests.values()) - self.dests.get(task.name, set())
        foreign = sorted(d for d in others if getattr(a, d, None) not in (None, False, []))
        if foreign:
            names = ", ".join("--" + d.replace("_", "-") for d in foreign)
            raise XmrError(f"{names} {'does' if len(foreign) == 1 else 'do'} not apply to {where}")

    def shown_defaults(self) -> dict[str, str]:
        """``{dest: the default --help shows}``: the default task's first, the others' where they differ."""
        out = {}
        for dest, by_task in self.defaults.items():
            shown = {t: shown_default(v() if callable(v) else v) for t, v in by_task.items()}
            first_task, first = next(iter(shown.items()))
            others = [f"{t}: {v}" for t, v in shown.items() if v != first]
            label = first if first_task == next(tasks_in_order()).name else f"{first_task}: {first}"
            out[dest] = label + (f" ({'; '.join(others)})" if others else "")
        return out


class _Adder:
    """What a task's ``add_arguments`` receives: ``add_argument`` recorded under the task's name."""

    def __init__(self, options: TaskOptions, task: str) -> None:
        self._options, self._task = options, task

    def add_argument(self, *flags: str, **kwargs: Any) -> None:
        self._options.add(self._task, flags, kwargs)


def add_task_options(parser: argparse.ArgumentParser, command: str) -> TaskOptions:
    """Add every task's options of ``command`` to ``parser``; ``args.task_options`` is the record and
    ``--help`` shows the tasks' defaults (beside those of the parser's own ``defaults_fn``)."""
    options = TaskOptions(parser, command)
    parser.set_defaults(task_options=options)
    before: Callable[[], dict[str, str]] | None = getattr(parser, "defaults_fn", None)  # the command's own

    def shown() -> dict[str, str]:
        return {**(before() if before is not None else {}), **options.shown_defaults()}

    parser.defaults_fn = shown  # type: ignore[attr-defined]  # read by cli.parser._Parser.format_help
    return options


def task_help() -> str:
    """``--task``'s help: the registered tasks, each with what it does, the default first."""
    parts = [f"{t.name}{' (default)' if i == 0 else ''}: {t.about}" for i, t in enumerate(tasks_in_order())]
    return "a registered task (xmr list): " + "; ".join(parts)
