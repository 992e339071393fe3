"""The one run-folder config type and its one loader.

Every run folder holds ``run.json``: the task's config, a frozen dataclass derived from
:class:`BaseRunConfig` whose ``task`` field's default is the task's name. The registry of tasks
(:data:`xmr.tasks.TASKS`, above this package) knows each task's config class; here, a caller that
knows the class it expects loads a run with :func:`load_run_config` (``load_run_config(run,
RunConfig)``): it reads the ``task`` key (``retrieval`` when absent, as in runs written before tasks
existed), refuses a run of another task, checks every value's JSON type against the dataclass's
fields (nested configs included) and builds it. Loading any run, whatever its task, is
:func:`xmr.tasks.load_run_config`. One writer (:func:`save_run_config`) and one matcher
(:func:`saved_run_matches`) serve every task's trainer.

    @dataclass(frozen=True)
    class MyRunConfig(BaseRunConfig):
        ABOUT: ClassVar[str] = "a my-task run"
        steps: int = 10
        task: str = field(default="my-task", kw_only=True)
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from xmr.errors import Call, XmrError
from xmr.utils.io import load_json_object, matches_saved, save_json, without_removed_fields
from xmr.utils.json_types import check_json_types

RUN_FILE = "run.json"
#: the task of a ``run.json`` without a ``task`` key (written before tasks were named)
DEFAULT_TASK = "retrieval"


@dataclass(frozen=True)
class BaseRunConfig:
    """What every run's config is: a task name and the dataset it learns from.

    Attributes:
        manifest: the dataset file (absolute path).
        task: the task's registered name; each subclass fixes it as its default, and a value that
            differs from it is refused (a config is always of the task it says).

    Class attributes:
        ABOUT: how a run of this task is named in messages ("a composed-query run (...)").
    """

    ABOUT: ClassVar[str] = "a run"
    manifest: str
    task: str = field(default="", kw_only=True)

    def __post_init__(self) -> None:
        own = task_of_config_class(type(self))
        if self.task != own:
            raise XmrError(f"a {type(self).__name__} is a {own!r} run config, not {self.task!r}")


C = TypeVar("C", bound=BaseRunConfig)


def task_of_config_class(cls: type[BaseRunConfig]) -> str:
    """The task name a run-config class fixes (its ``task`` field's default)."""
    return str(next(f.default for f in dataclasses.fields(cls) if f.name == "task"))


def read_task_name(run_dir: str | Path) -> str:
    """The task named by ``run_dir/run.json`` (``retrieval`` when it names none); whether a task of
    that name is registered is :func:`xmr.tasks.task_of_run`'s to check."""
    path = _run_file(run_dir)
    return _task_name(load_json_object(path, "run config"), path)


def _task_name(raw: dict[str, Any], path: Path) -> str:
    name = raw.get("task", DEFAULT_TASK)
    if not isinstance(name, str) or not name:
        raise XmrError("{path}: unknown task {name}", path=str(path), name=repr(name))
    return name


def load_run_config(run_dir: str | Path, expect: type[C]) -> C:
    """Read a run folder's ``run.json`` as the config class ``expect``.

    Args:
        run_dir: the run folder.
        expect: the config class the caller needs; a run of another task (``run.json``'s
            ``task`` against ``expect``'s own task name) is refused with a one-line error saying
            what the run is.

    Raises:
        XmrError: no ``run.json``, a damaged one (not an object, wrong value types, unknown
            keys), or a task other than ``expect``'s.
    """
    path = _run_file(run_dir)
    raw = load_json_object(path, "run config")
    name = _task_name(raw, path)
    if name != task_of_config_class(expect):
        raise XmrError("{run} is a {task} run, not {expected}", run=str(run_dir), task=name, expected=expect.ABOUT)
    return config_from_json(expect, raw, path)


def config_from_json(cls: type[C], raw: dict[str, Any], where: str | Path) -> C:
    """The dataclass ``cls`` from its JSON form, nested config dataclasses included.

    Each value's JSON type is checked against its field first (one line naming the file and
    the field); keys of fields removed while they held nothing are dropped; any other unknown key
    is refused.
    """
    return typing.cast(C, _build(cls, raw, str(where)))


def _build(cls: type, raw: dict[str, Any], where: str) -> Any:
    try:
        values = without_removed_fields(cls, raw)  # an older file's shape upgraded first (TrainConfig.upgrade_saved)
    except XmrError as e:
        raise e.prefixed(f"{where}: ") from None
    check_json_types(cls, values, where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        raise XmrError(f"{where}: not a valid {cls.__name__} (unknown field {', '.join(map(repr, unknown))})")
    for name, value in values.items():
        hint = hints.get(name)
        nested = _dataclass_in(hint)
        if nested is not None and isinstance(value, dict):
            values[name] = _build(nested, value, f"{where} ({name})")
        elements = _dataclass_elements(hint)
        if elements is not None and isinstance(value, list):
            values[name] = tuple(_build(elements, v, f"{where} ({name}[{i}])") if isinstance(v, dict) else v
                                 for i, v in enumerate(value))
    try:
        return cls(**values)
    except TypeError as e:  # a missing required field
        raise XmrError(f"{where}: not a valid {cls.__name__} ({e})") from None
    except XmrError as e:
        raise XmrError(f"{where}: not a valid {cls.__name__} ({e})") from None


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass of a field typed ``D`` or ``D | None``, else None."""
    for h in (hint, *typing.get_args(hint)):
        if isinstance(h, type) and dataclasses.is_dataclass(h):
            return h
    return None


def _dataclass_elements(hint: Any) -> type | None:
    """The dataclass of a field typed ``tuple[D, ...]``, else None."""
    if typing.get_origin(hint) is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if len(args) == 1 and isinstance(args[0], type) and dataclasses.is_dataclass(args[0]):
            return args[0]
    return None


def save_run_config(out_dir: str | Path, cfg: BaseRunConfig) -> None:
    """Write ``cfg`` as ``out_dir/run.json`` (atomically)."""
    save_json(Path(out_dir) / RUN_FILE, cfg)


def saved_run_matches(out_dir: str | Path, cfg: BaseRunConfig) -> bool:
    """True when ``out_dir`` holds no run yet, or a run of exactly ``cfg`` (so it may resume there).

    ``run.json`` files written before a field existed match a config holding that field's
    default, so does one without ``task`` (a ``retrieval`` run from before tasks were named).
    """
    path = Path(out_dir) / RUN_FILE
    if not path.exists():
        return True
    saved = load_json_object(path, "run config")
    if saved.get("task", DEFAULT_TASK) != cfg.task:
        return False
    return matches_saved({**saved, "task": cfg.task}, cfg)


def _run_file(run_dir: str | Path) -> Path:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise XmrError("{run} is not an xmr run folder (no {file}); train one with {fix}", run=str(run_dir),
                       file=RUN_FILE, fix=Call("train_run"))
    return path
