"""Several training processes (data parallel): who this process is, the process group, and what they exchange.

``torchrun --nproc_per_node N -m xmr train ...`` (or ``python -m torch.distributed.run``) starts N
processes with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in
their environment. The command line reads them once (:func:`config_from_env`) and, with more than
one process, joins the process group for the command's run (:func:`joined`: ``gloo``, as the
trainer trains on the CPU; ``nccl`` is the backend for CUDA tensors); the trainer asks
:func:`current_world`. One process (no such variables) is today's path exactly: no group, no
collective, nothing exchanged.

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
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from xmr.errors import XmrError
from xmr.objectives import ObjectiveComponent
from xmr.objectives.gather import collective

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
        backend: ``gloo`` (CPU tensors: the trainer's today) or ``nccl`` (CUDA tensors, each process on the
            GPU of its ``local_rank``).
        timeout_s: how long a collective waits for a process that does not answer (long: the others wait
            while rank 0 encodes the run's features into the cache).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    backend: str = "gloo"
    timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise XmrError("invalid process rank {rank} of {world_size}", rank=self.rank, world_size=self.world_size)
        if self.backend not in ("gloo", "nccl"):
            raise XmrError("unknown process group backend {backend}", backend=repr(self.backend))


def config_from_env(environ: Mapping[str, str] | None = None) -> DistributedConfig:
    """The :class:`DistributedConfig` torchrun's variables give (none set: one process)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return DistributedConfig()
    try:
        rank, world_size, local_rank, port = (int(env.get(k, d)) for k, d in
                                              (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"),
                                               ("MASTER_PORT", "29500")))
    except ValueError:
        raise XmrError("the process variables {names} must be numbers", names=", ".join(ENV_VARS)) from None
    return DistributedConfig(rank=rank, world_size=world_size, local_rank=local_rank,
                             master_addr=env.get("MASTER_ADDR", "127.0.0.1"), master_port=port)


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


@contextlib.contextmanager
def joined(config: DistributedConfig) -> Iterator[World]:
    """Join the process group ``config`` describes for the block (one process: nothing to join), left after."""
    if config.world_size == 1:
        yield World()
        return
    if config.backend == "nccl":
        torch.cuda.set_device(config.local_rank)
    dist.init_process_group(config.backend, init_method=f"tcp://{config.master_addr}:{config.master_port}",
                            rank=config.rank, world_size=config.world_size,
                            timeout=datetime.timedelta(seconds=config.timeout_s))
    world = World(config.rank, config.world_size)
    token = _WORLD.set(world)
    try:
        yield world
    finally:
        _WORLD.reset(token)
        dist.destroy_process_group()


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
    rank update: one that runs its own updates before it (GXN's generative paths) trains in one process.
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
            raise XmrError("{about} ({name}) trains in one process only: its own updates are not data parallel yet",
                           about=component.about, name=component.name)


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
