"""The :class:`Task` interface, its registry and the lookup of a run folder's task.

A task is generic in its run-config type: ``Task[RunConfig]`` builds, trains and reads
:class:`~xmr.runs.RunConfig` runs only, and its ``config_class`` is that class (the one registry,
:data:`TASKS`, is also the registry of run configs: ``TASKS.get(name).config_class``).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from xmr.errors import Param, XmrError
from xmr.registry import Registry

if TYPE_CHECKING:
    from xmr.runs.base import BaseRunConfig
    from xmr.runtime.device import Runtime
    from xmr.serve.config import ServeConfig
    from xmr.serve.service import GalleryService
    from xmr.workflows.index_job import IndexJob

#: command-line options as argparse parsed them, ``{option dest: value}`` (None: not given)
Options = Mapping[str, Any]
C = TypeVar("C", bound="BaseRunConfig")
#: the task of ``xmr train`` without ``--task``
DEFAULT_TASK = "retrieval"
#: the commands whose options a task adds (:meth:`Task.add_arguments`)
OPTION_COMMANDS = ("train", "eval", "search")
#: what a task may do besides train, evaluate and search: ``{capability: (its method, what a run
#: of a task without it cannot do)}``; a task declares the ones it has (:attr:`Task.capabilities`)
CAPABILITIES: Mapping[str, tuple[str, str]] = {
    "index": ("index", "has no joint-space index to build"),
    "serve": ("service", "cannot be served"),
    "captions": ("caption", "cannot caption images"),
    "imagines": ("imagine", "cannot draw images for a text"),
}


class OptionParser(Protocol):
    """Where a task adds its options: an :class:`argparse.ArgumentParser` (or the CLI's recorder of
    each task's options)."""

    def add_argument(self, *name_or_flags: str, **kwargs: Any) -> Any: ...


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


class Task(abc.ABC, Generic[C]):
    """One kind of run, generic in its run config ``C``.

    Class attributes:
        name: the registered name (``xmr train --task``, ``run.json``'s ``task``); the
            ``task`` field's default of :attr:`config_class`.
        about: what a run of this task does, one line (``xmr train --help``).
        capabilities: what it can do besides train, evaluate and search (keys of
            :data:`CAPABILITIES`); each has its method here, which a task overrides exactly when
            it declares the capability (checked when the class is made). A command asks the
            capability, never the task's name.
    """

    name: ClassVar[str]
    about: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = set(cls.capabilities) - set(CAPABILITIES)
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown capabilities {sorted(unknown)}; known: {list(CAPABILITIES)}")
        for capability, (method, _) in CAPABILITIES.items():
            if (getattr(cls, method) is not getattr(Task, method)) != (capability in cls.capabilities):
                raise TypeError(f"{cls.__name__}: declare {capability!r} in capabilities exactly when {method}() "
                                "is overridden")

    @property
    @abc.abstractmethod
    def config_class(self) -> type[C]:
        """The task's run-config dataclass (``run.json``): a :class:`~xmr.runs.BaseRunConfig`
        subclass whose ``task`` field's default is :attr:`name`."""

    def add_arguments(self, command: str, parser: OptionParser) -> None:
        """Add the options this task takes for ``command`` (one of :data:`OPTION_COMMANDS`).

        ``default=`` is what ``--help`` shows: the config field's default (its one source), or a
        function of no arguments returning it, called only for ``--help`` (a config whose import
        loads torch is then imported only when help is asked). An option not given reaches the
        task as None, so the dataclass's own default applies. An option another task adds and this
        one does not is refused by name. Default: none.
        """

    def can(self, capability: str) -> bool:
        """Whether the task declares ``capability`` (a key of :data:`CAPABILITIES`)."""
        if capability not in CAPABILITIES:
            raise XmrError("unknown capability {capability}; known: {known}", capability=repr(capability),
                           known=", ".join(CAPABILITIES))
        return capability in self.capabilities

    def require(self, capability: str, run_dir: str | Path) -> None:
        """Refuse a run of this task when the task lacks ``capability`` (:meth:`refusal`)."""
        if not self.can(capability):
            raise self.refusal(capability, run_dir)

    def refusal(self, capability: str, run_dir: str | Path) -> XmrError:
        """The one-line error refusing ``capability`` to the run in ``run_dir``, saying what the run is."""
        return XmrError("{run} is {about}; it {cannot}", run=str(run_dir), about=self.config_class.ABOUT,
                        cannot=CAPABILITIES[capability][1])

    def load_run_config(self, run_dir: str | Path) -> C:
        """The run's config (``run.json``), of :attr:`config_class`."""
        from xmr.runs.base import load_run_config

        return load_run_config(run_dir, self.config_class)

    @abc.abstractmethod
    def config_from_options(self, manifest: str, given: Options) -> C:
        """The run config for ``manifest`` from the ``xmr train`` options the user gave (``{dest: value}``,
        this task's options only)."""

    @abc.abstractmethod
    def train(self, config: C, out_dir: str | Path, *, cache_dir: str | Path | None = None,
              overwrite: bool = False, given: Options | None = None, runtime: Runtime | None = None) -> TrainOutcome:
        """Train (or resume, or load a finished) run of ``config`` into ``out_dir``; ``given``: the
        task's own ``xmr train`` options that are not config fields (e.g. ``skip_bad``); ``runtime``: the
        resolved device and precision to train at (None: the CPU at fp32; a task that trains only there
        refuses another)."""

    @abc.abstractmethod
    def evaluate(self, run_dir: str | Path, given: Options, *, split: str, cache_dir: str | Path | None = None,
                 command: str | None = None, runtime: Runtime | None = None) -> EvalOutcome:
        """Evaluate the run on ``split`` with the task's own ``xmr eval`` options in ``given``; ``runtime``: the
        device and precision its models run at (None: the CPU at fp32; a task that runs only there refuses
        another)."""

    @abc.abstractmethod
    def search(self, run_dir: str | Path, given: Options, *, runtime: Runtime | None = None) -> Iterable[str]:
        """Answer the query or queries in ``given``: printable lines (one per hit, or per query as
        JSON), yielded as they are ready; a query that failed raises at the end. ``runtime``: the device and
        precision its models run at (None: the CPU at fp32; a task that runs only there refuses another)."""

    def index(self, run_dir: str | Path, job: IndexJob, *, runtime: Runtime | None = None) -> Path:
        """Build the run's search index as ``job`` says, its models on ``runtime`` (None: the CPU at fp32); the
        index folder (capability ``index``)."""
        raise self.refusal("index", run_dir)  # a task that can overrides this

    def service(self, run_dir: str | Path, index_dir: str | Path | None = None,
                config: ServeConfig | None = None) -> GalleryService:
        """The loaded search service of the run (capability ``serve``), as ``xmr serve`` serves it."""
        raise self.refusal("serve", run_dir)  # a task that can overrides this

    def caption(self, run_dir: str | Path, image: str | Path, *, beam: int | None = None,
                runtime: Runtime | None = None) -> str:
        """A caption of ``image`` (capability ``captions``); None: the captioner's own default; ``runtime``:
        where its models run (None: the CPU at fp32)."""
        raise self.refusal("captions", run_dir)  # a task that can overrides this

    def imagine(self, run_dir: str | Path, text: str, out: str | Path, *, n: int | None = None,
                seed: int | None = None, mean: bool = False, runtime: Runtime | None = None) -> list[Path]:
        """Images drawn for ``text``, written at ``out`` (capability ``imagines``); None: the
        generator's own default; ``runtime``: where its models run (None: the CPU at fp32)."""
        raise self.refusal("imagines", run_dir)  # a task that can overrides this


TASKS: Registry[Task[Any]] = Registry("task")


def task_of_run(run_dir: str | Path) -> Task[Any]:
    """The task of the run in ``run_dir`` (``run.json``'s ``task``; runs without one are ``retrieval``)."""
    from xmr.runs.base import RUN_FILE, read_task_name

    name = read_task_name(run_dir)
    if name not in TASKS:
        raise XmrError("{path}: unknown task {name}; known: {known}", path=str(Path(run_dir) / RUN_FILE),
                       name=repr(name), known=", ".join(TASKS.names()))
    return TASKS.get(name)


def load_run_config(run_dir: str | Path) -> BaseRunConfig:
    """Any run folder's ``run.json`` as its task's config (:attr:`Task.config_class`)."""
    return task_of_run(run_dir).load_run_config(run_dir)


def load_service(run_dir: str | Path, index_dir: str | Path | None = None,
                 config: ServeConfig | None = None) -> GalleryService:
    """The search service of any run, by its task (a :data:`xmr.serve.run.ServiceLoader`)."""
    task = task_of_run(run_dir)
    task.require("serve", run_dir)
    return task.service(run_dir, index_dir, config)


def pick(given: Options, fields: Mapping[str, str]) -> dict[str, Any]:
    """``{field: value}`` of the options given (not None), by ``{option dest: field}``."""
    return {f: given[d] for d, f in fields.items() if given.get(d) is not None}


def refuse_accelerated(task: str, runtime: Runtime | None) -> None:
    """Refuse a device or precision other than the CPU at fp32 for a task whose models run only there; a
    device picked by ``auto`` is not refused (the task runs on the CPU).

    Raises:
        XmrError: a named device other than the CPU, or a precision other than fp32.
    """
    if runtime is None or runtime.is_cpu_fp32 or (runtime.picked and runtime.precision == "fp32"):
        return
    raise XmrError("the {task} task trains on the CPU at fp32 only, not on {device} at {precision}", task=task,
                   device=Param("device", str(runtime.device)), precision=Param("precision", runtime.precision))
