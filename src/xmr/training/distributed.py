"""Several training processes (data parallel): who this process is, the process group, and what they exchange.

``torchrun --nproc_per_node N -m xmr train ...`` (or ``python -m torch.distributed.run``) starts N
processes with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in
their environment. The command line reads them once (:func:`config_from_env`), resolves the
command's runtime with this process's ``LOCAL_RANK`` (on CUDA each process gets ``cuda:LOCAL_RANK``:
:func:`xmr.runtime.device.process_device`) and, with more than one process, joins the process group
for the command's run on that device (:func:`joined`; the backend by :func:`choose_backend`: ``nccl``
for CUDA, ``gloo`` on the CPU, or the one ``backend`` forces); the trainer asks :func:`current_world`.

Several machines (``torchrun --nnodes M --node_rank I --rdzv_endpoint HOST:PORT ...``): torchrun sets the
same variables (``RANK`` global, ``LOCAL_RANK`` per machine), nothing else is needed. Global rank 0 alone
takes the run's lock, encodes the features into the cache, validates and writes the run folder; the
others wait for it and then read the cache and, on resume, ``last.pt``: the run folder (``out``) and the
cache folder must be on a filesystem every machine shares (a process that does not see the folder rank 0
wrote stops with an error saying so: :func:`check_shared_folder`).

One process (no such variables) is today's path exactly: no group, no collective, nothing exchanged.

With several processes each takes its consecutive shard of every global batch
(:meth:`World.shard`), the objective components gather the features of every shard before the loss
(:mod:`xmr.objectives.gather`), and the gradients are averaged (:func:`average_gradients`), so a
step equals the one-process step on the global batch. Rank 0 alone validates and writes the run
folder; the others wait for its bookkeeping (:meth:`World.broadcast`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from xmr.errors import Param, XmrError
from xmr.objectives import ObjectiveComponent
from xmr.objectives.gather import collective
from xmr.runtime.config import DEFAULT_PROCESS_BACKEND, PROCESS_BACKENDS

T = TypeVar("T")

#: what torchrun sets in each process's environment
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedConfig:
    """Where this process stands among the processes of one job (torchrun's environment).

    Attributes:
        rank: this process, 0-based.
        world_size: the number of processes (1: no process group).
        local_rank: this process on its machine (its GPU, on CUDA).
        master_addr, master_port: where rank 0 listens for the others.
        backend: ``auto`` (``nccl`` when the runtime's device is CUDA, else ``gloo``: :func:`choose_backend`),
            or forced: ``gloo`` (CPU tensors; CUDA ones too, slower) or ``nccl`` (CUDA tensors, each process
            on the GPU of its ``local_rank``).
        timeout_s: how long a collective waits for a process that does not answer (long: the others wait
            while rank 0 encodes the run's features into the cache).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    backend: str = DEFAULT_PROCESS_BACKEND
    timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise XmrError("invalid process rank {rank} of {world_size}", rank=self.rank, world_size=self.world_size)
        if self.backend not in PROCESS_BACKENDS:
            raise XmrError("unknown process group backend {backend}; one of {known}",
                           backend=Param("backend", self.backend), known=", ".join(PROCESS_BACKENDS))


def config_from_env(environ: Mapping[str, str] | None = None, backend: str | None = None) -> DistributedConfig:
    """The :class:`DistributedConfig` torchrun's variables give (none set: one process); ``backend``: the
    one forced (None: the default, ``auto``)."""
    env = os.environ if environ is None else environ
    forced = {} if backend is None else {"backend": backend}
    if "WORLD_SIZE" not in env:
        return DistributedConfig(**forced)  # type: ignore[arg-type]  # str field
    try:
        rank, world_size, local_rank, port = (int(env.get(k, d)) for k, d in
                                              (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"),
                                               ("MASTER_PORT", "29500")))
    except ValueError:
        raise XmrError("the process variables {names} must be numbers", names=", ".join(ENV_VARS)) from None
    return DistributedConfig(rank=rank, world_size=world_size, local_rank=local_rank,
                             master_addr=env.get("MASTER_ADDR", "127.0.0.1"), master_port=port,
                             **forced)  # type: ignore[arg-type]  # str field


@dataclass(frozen=True)
class World:
    """This process among the training processes (one process: ``World()``).

    Attributes:
        rank: this process, 0-based.
        world_size: the number of processes.
    """

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True for the process that validates and writes (rank 0)."""
        return self.rank == 0

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This process's consecutive share of a global batch (sizes differ by at most one row).

        Args:
            rows: the global batch. Shape: (B, ...).

        Returns:
            Rows ``[B * rank // world_size, B * (rank + 1) // world_size)``. Shape: (about B / world_size, ...).
        """
        if self.world_size == 1:
            return rows
        n = len(rows)
        return rows[n * self.rank // self.world_size: n * (self.rank + 1) // self.world_size]

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every process (a picklable object; the others' is ignored)."""
        if self.world_size == 1:
            return value
        box: list[object] = [value]
        with collective():
            dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def barrier(self) -> None:
        """Wait until every process is here."""
        if self.world_size > 1:
            with collective():
                dist.barrier()


_WORLD: ContextVar[World] = ContextVar("xmr_world", default=World())


def current_world() -> World:
    """The processes of the running command (one process unless :func:`joined` set more)."""
    return _WORLD.get()


def choose_backend(backend: str, device: torch.device) -> str:
    """The collective backend of processes whose tensors live on ``device``: ``backend`` when forced, else
    (``auto``) ``nccl`` on CUDA and ``gloo`` elsewhere.

    Raises:
        XmrError: ``nccl`` forced for a device other than CUDA (nccl moves CUDA tensors only).
    """
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise XmrError("the process group backend {backend} exchanges CUDA tensors only, and this process "
                       "trains on {device}; use gloo there", backend=Param("backend", backend), device=str(device))
    return backend


@contextlib.contextmanager
def joined(config: DistributedConfig, device: torch.device | None = None) -> Iterator[World]:
    """Join the process group ``config`` describes for the block (one process: nothing to join), left after.

    ``device``: where this process's tensors live (the command's runtime device; None: the CPU); it picks
    the backend (:func:`choose_backend`) and, for ``nccl``, this process's current CUDA device.
    """
    if config.world_size == 1:
        yield World()
        return
    device = device if device is not None else torch.device("cpu")
    backend = choose_backend(config.backend, device)
    if backend == "nccl":
        torch.cuda.set_device(device if device.index is not None else torch.device("cuda", config.local_rank))
    dist.init_process_group(backend, init_method=f"tcp://{config.master_addr}:{config.master_port}",
                            rank=config.rank, world_size=config.world_size,
                            timeout=datetime.timedelta(seconds=config.timeout_s))
    world = World(config.rank, config.world_size)
    token = _WORLD.set(world)
    try:
        yield world
    finally:
        _WORLD.reset(token)
        dist.destroy_process_group()


def check_shared_folder(world: World, path: Path) -> None:
    """On a process other than rank 0: refuse to go on when ``path``, which rank 0 wrote before the last
    barrier, is not there (several machines whose run folder is not on a shared filesystem)."""
    if not world.is_main and not path.exists():
        raise XmrError("training process {rank} does not see {path}, which process 0 wrote: with several "
                       "machines, the run folder and the cache folder must be on a filesystem every machine "
                       "shares", rank=world.rank, path=str(path))


def average_gradients(params: Sequence[torch.nn.Parameter], world: World) -> None:
    """Average the parameters' gradients over the processes in place (one all-reduce of a flat buffer).

    A parameter without a gradient on every process keeps none (the optimiser leaves it alone, as with
    one process); one with a gradient on some processes counts zeros for the others.
    """
    if world.world_size == 1:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int64, device=params[0].device)
    with collective():
        dist.all_reduce(has)
    live = [p for p, h in zip(params, has.tolist()) if h]
    if not live:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in live])
    with collective():
        dist.all_reduce(flat)
    flat /= world.world_size
    offset = 0
    for p in live:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def join_components(components: Sequence[ObjectiveComponent], world: World, batch_size: int) -> None:
    """Set the objective components' ``rank`` / ``world_size``; refuse what several processes cannot train yet.

    Several processes need a batch of at least one pair each, and components whose only updates are the
    rank update: one that runs its own updates before it (GXN's generative paths: a discriminator's step, the
    decoder's self-critical step, each followed by a rank update) trains in one process, refused naming
    its option.
    """
    for component in components:
        component.rank, component.world_size = world.rank, world.world_size
    if world.world_size == 1:
        return
    if batch_size < world.world_size:
        raise XmrError("batch_size {batch_size} is smaller than the {n} training processes: each needs a share",
                       batch_size=batch_size, n=world.world_size)
    for component in components:
        if component.steps_before_rank():
            raise XmrError("{about} ({option}) train in one process only, not in {n}: their own updates (a "
                           "discriminator, a decoder's self-critical step) are not data parallel",
                           about=component.about, option=Param(component.name), n=world.world_size)


@contextlib.contextmanager
def lost_process_stops(world: World, out: os.PathLike[str]) -> Iterator[None]:
    """A collective that fails because another process stopped (killed, out of memory) becomes one
    :class:`XmrError` naming the run folder, whose ``last.pt`` (written atomically) resumes the run."""
    if world.world_size == 1:
        yield
        return
    try:
        yield
    except dist.DistError as e:
        raise XmrError("training process {rank} lost the others ({kind}); {out} keeps the last finished epoch: "
                       "run the same training again to resume", rank=world.rank, kind=type(e).__name__,
                       out=str(out)) from None


def seed_rank(world: World, seed: int, epoch: int) -> None:
    """Several processes: seed this process's torch generator by (seed, epoch, rank) before an epoch, so that the
    processes draw different dropout masks for their shards (one seeding of the model leaves them all the same)
    and a resumed epoch draws what it drew before. One process: nothing (its generator runs on as always)."""
    if world.world_size > 1:
        torch.manual_seed(int(np.random.SeedSequence([seed, epoch, world.rank]).generate_state(1)[0]))
