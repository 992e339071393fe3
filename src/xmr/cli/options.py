"""What several commands share: the checked types of numeric options, the options many commands take
(``--skip-bad``, ``--cache-dir``, the encoders, ``--rerank``), and the parsed namespace read back
(the command line as typed, the options given to a task).

No torch or FAISS here: ``xmr --help`` and ``import xmr.cli`` must not load them.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import shlex
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from xmr.errors import XmrError
from xmr.utils.argtypes import Number as Number  # the checked numeric types, shared with the tasks' options
from xmr.utils.argtypes import count as count
from xmr.utils.argtypes import non_negative as non_negative
from xmr.utils.argtypes import positive as positive
from xmr.utils.argtypes import positive_int as positive_int
from xmr.utils.argtypes import seed as seed

if TYPE_CHECKING:
    from xmr.rerank.reranker import Reranker
    from xmr.runtime.device import Runtime
    from xmr.tasks import Task
    from xmr.training.distributed import DistributedConfig


def command_line(a: argparse.Namespace) -> str:
    """The command line as typed, stored beside every number it produced."""
    return "xmr " + " ".join(shlex.quote(x) for x in a.argv)


def run_task(a: argparse.Namespace) -> Task:
    """The task of ``a.run``; ``--task`` (eval) must agree with it."""
    from xmr.tasks import TASKS, task_of_run

    task = task_of_run(a.run)
    if getattr(a, "task", None) is not None and TASKS.get(a.task) is not task:
        raise XmrError(f"{a.run} is a {task.name} run, not {a.task}")
    return task


def rerankers(a: argparse.Namespace) -> list[Reranker]:
    """``--rerank NAME[,NAME]`` and ``--rerank-param key=value`` as unfitted re-rankers."""
    from xmr.rerank.registry import rerankers_from_options

    return rerankers_from_options(a.rerank, a.rerank_param)


def shown_default(value: object) -> str:
    """A default as typed on the command line: a tuple as ``a,b`` (an empty one as ``none``)."""
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


# --- defaults of the commands that call one library function or config: each option defaults to None
# (not given); what was given is passed on and the rest is left to the library, whose default --help shows.

def library_default(owner: object, name: str) -> object:
    """The default the library keeps for ``name``: a field of the dataclass ``owner`` (its default, or
    what its default factory makes), else a keyword parameter of the function ``owner``."""
    if dataclasses.is_dataclass(owner):
        f = next(f for f in dataclasses.fields(owner) if f.name == name)
        return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return inspect.signature(typing.cast(Callable[..., object], owner)).parameters[name].default


def resolve(where: str) -> object:
    """``"module:name"`` (or ``"module:Class.method"``) -> the object, imported when asked: ``--help`` of
    one command pays for its own imports only."""
    module, _, name = where.partition(":")
    owner: object = importlib.import_module(module)
    for part in name.split("."):
        owner = getattr(owner, part)
    return owner


def defaults_from(where: str, names: Mapping[str, str]) -> Callable[[], dict[str, str]]:
    """A parser's ``defaults_fn``: each option's (dest -> field or parameter of ``where``, a
    ``"module:name"``) default as ``--help`` shows it."""
    def shown() -> dict[str, str]:
        owner = resolve(where)
        return {dest: shown_default(library_default(owner, name)) for dest, name in names.items()}
    return shown


def given_values(a: argparse.Namespace, names: Mapping[str, str]) -> dict[str, Any]:
    """``{field or parameter: value}`` of the options (dest -> its name in the library) given on the
    command line; the others are left out, so the library's own default applies."""
    return {name: getattr(a, dest) for dest, name in names.items() if getattr(a, dest) is not None}


def add_skip_bad(p: argparse.ArgumentParser) -> None:
    """``--skip-bad``, as the tasks' options have it."""
    from xmr.tasks.options import add_skip_bad as add_task_skip_bad

    add_task_skip_bad(p.add_argument)


def add_runtime(p: argparse.ArgumentParser, *, loader: bool = False) -> None:
    """``--device`` and ``--precision``, defaults from :class:`xmr.runtime.RuntimeConfig` (torch-free);
    with ``loader`` (a command that encodes sets of images) also ``--loader-workers``."""
    from xmr.runtime import PRECISIONS, RuntimeConfig

    p.add_argument("--device", default=None, metavar="DEVICE",
                   help="where the models run: auto (CUDA, then MPS, else the CPU), cpu, cuda, cuda:N or mps "
                        f"(default: {RuntimeConfig.device})")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="fp32, or mixed precision: bf16 (CPU and GPUs) or fp16 (CUDA); the weights stay fp32 "
                        f"(default: {RuntimeConfig.precision})")
    if loader:
        p.add_argument("--loader-workers", type=count, default=None, metavar="N",
                       help="processes that decode, resize and augment the images to encode (a torch DataLoader, "
                            "pinned memory on CUDA); 0: read in this process; the features are the same "
                            f"(default: {RuntimeConfig.loader_workers})")


def runtime_from_args(a: argparse.Namespace, processes: DistributedConfig | None = None) -> Runtime:
    """The device and precision ``--device`` / ``--precision`` give, resolved once on this machine (a device
    that is not there is one error naming the option) and kept on ``a``: a second call returns it.

    ``processes``: this process among several (torchrun's; the CLI's settings resolve it first, with them):
    on CUDA each process runs on the GPU of its local rank."""
    from xmr.runtime import RuntimeConfig
    from xmr.runtime.device import resolve

    resolved: Runtime | None = getattr(a, "resolved_runtime", None)
    if resolved is None:
        local_rank = processes.local_rank if processes is not None and processes.world_size > 1 else None
        names = {"device": "device", "precision": "precision", "loader_workers": "loader_workers"}
        resolved = resolve(RuntimeConfig(**given_values(a, {k: v for k, v in names.items() if hasattr(a, k)})),
                           local_rank=local_rank)
        a.resolved_runtime = resolved
    return resolved


def add_process_backend(p: argparse.ArgumentParser) -> None:
    """``--process-backend``: the collective backend of several training processes (torchrun), default from
    :data:`xmr.runtime.DEFAULT_PROCESS_BACKEND` (torch-free)."""
    from xmr.runtime import DEFAULT_PROCESS_BACKEND, PROCESS_BACKENDS

    p.add_argument("--process-backend", default=None, choices=PROCESS_BACKENDS,
                   help="several training processes (torchrun): how they exchange tensors; auto is nccl when "
                        "the device is CUDA (each process on cuda:LOCAL_RANK), else gloo "
                        f"(default: {DEFAULT_PROCESS_BACKEND})")


def add_recursive(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recursive", action="store_true", help="with a folder: its sub-folders' images too")


def add_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=None, help="cache root (default: $XMR_CACHE_DIR or ~/.cache/xmr)")


def add_encoders(p: argparse.ArgumentParser) -> None:
    """``--image-encoder`` and ``--text-encoder``, as the tasks' training options have them."""
    from xmr.tasks.options import add_encoders as add_task_encoders

    add_task_encoders(p.add_argument)


def add_rerank(p: argparse.ArgumentParser, *, many: bool) -> None:
    """``--rerank`` and ``--rerank-param``, as a retrieval run's evaluation and search have them."""
    from xmr.tasks.options import add_rerank as add_task_rerank

    add_task_rerank(p.add_argument, many=many)
    p.set_defaults(rerank_param=[])
