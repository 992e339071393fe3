"""``xmr encode MANIFEST --engine ray``: partitions of a manifest encoded by a pool of Ray actors.

Ray Data carries the partitions (one row each) through ``map_batches`` with an actor pool
(``ActorPoolStrategy``): each actor loads the encoders once, encodes a partition through the
shared feature cache (which is safe for many writers, :mod:`xmr.encoders.cache`) and writes the
partition's shard atomically (:mod:`xmr.workflows.shards`). A re-run skips partitions whose
shard exists; a partition that fails is retried ``retries`` times inside its actor, and if it
still fails it is reported by partition and item while the others finish. Unreadable images are
reported by item and left out, as ``--skip-bad`` does.

The same command runs on a multi-node cluster: ``--address auto`` on a node of the cluster, or
``--address ray://HEAD:10001`` from outside it; the cache and shard folders must then be on a
filesystem every node sees (see ``docs/distributed.md``).

On GPUs (the command's runtime on CUDA: ``--device cuda`` or ``auto`` on a machine with one) each actor
asks Ray for ``gpus_per_actor`` GPUs (automatic: one) and runs its encoders on the GPU Ray gives it
(Ray sets the actor's ``CUDA_VISIBLE_DEVICES``): one model per GPU, at most as many actors as the
cluster has GPUs for (:func:`actor_placement`). Partitioned encoding runs at fp32 only: its shards and
the cache hold fp32 features, whatever device made them (within rounding of the CPU's).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmr.data.manifest import Item
from xmr.encoders.image_io import current_image_read
from xmr.errors import Param, XmrError
from xmr.utils.numbers import check_finite_fields
from xmr.utils.paths import default_cache_dir
from xmr.workflows.features import encode_items
from xmr.workflows.shards import ShardPlan, prepare, write_shard

if TYPE_CHECKING:
    from xmr.runtime.device import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayEncodeConfig:
    """Every default of ``xmr encode --engine ray``.

    Args:
        address: ``None``: start a local cluster for this run (``num_cpus`` CPUs); ``"auto"``: join the
            cluster running on this machine; ``"HOST:PORT"`` or ``"ray://HOST:10001"``: join that one.
        num_cpus: CPUs of a local cluster (default: all).
        partitions: how many partitions (default: one per ``partition_size`` items).
        partition_size: items per partition when ``partitions`` is not given.
        actors: encoder actors in the pool.
        cpus_per_actor: CPUs Ray reserves for each actor (and torch threads it runs).
        gpus_per_actor: GPUs Ray reserves for each actor, whose encoders run on them (one model per GPU);
            None: automatic, 1 when the command's device is CUDA, else 0 (the actors on the CPU).
        retries: attempts after the first for a partition that fails.
        connect_timeout: seconds to wait for a remote cluster's port before giving up.
    """

    address: str | None = None
    num_cpus: int | None = None
    partitions: int | None = None
    partition_size: int = 1000
    actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float | None = None
    retries: int = 2
    connect_timeout: float = 3.0

    def __post_init__(self) -> None:
        check_finite_fields(self)
        for name, bound, ok in (("actors", ">= 1", self.actors >= 1),
                                ("cpus_per_actor", "> 0", self.cpus_per_actor > 0),
                                ("partition_size", ">= 1", self.partition_size >= 1),
                                ("retries", ">= 0", self.retries >= 0),
                                ("gpus_per_actor", ">= 0", self.gpus_per_actor is None or self.gpus_per_actor >= 0)):
            if not ok:
                raise XmrError("{param} must be {bound}", param=Param(name, getattr(self, name)), bound=bound)


@dataclass(frozen=True)
class ActorPlacement:
    """What each encoder actor asks Ray for, and where its encoders run.

    Attributes:
        num_cpus: CPUs Ray reserves for the actor.
        num_gpus: GPUs Ray reserves for the actor (0: none).
        device: the device the actor runs its encoders on: ``cuda`` (the GPU Ray gave it) or ``cpu``.
    """

    num_cpus: float
    num_gpus: float
    device: str

    def pool_size(self, actors: int, cluster_gpus: float) -> int:
        """The actors to start: ``actors``, and on GPUs no more than the cluster's GPUs hold.

        Raises:
            XmrError: the actors need GPUs and the cluster has fewer than one actor's.
        """
        if self.num_gpus == 0:
            return actors
        fit = int(cluster_gpus // self.num_gpus)
        if fit < 1:
            raise XmrError("each encoder actor asks for {gpus} GPU(s) and the Ray cluster has {n}",
                           gpus=Param("gpus_per_actor", self.num_gpus), n=f"{cluster_gpus:g}")
        return min(actors, fit)


def actor_placement(config: RayEncodeConfig, runtime: Runtime | None) -> ActorPlacement:
    """Each actor's Ray resources and device for ``config`` when the command runs on ``runtime`` (None: the
    CPU): on CUDA, ``gpus_per_actor`` GPUs (automatic: 1) and the encoders on them; else the CPU.

    Raises:
        XmrError: GPUs asked for (``gpus_per_actor`` > 0) while the command runs on another device.
    """
    on_cuda = runtime is not None and runtime.device.type == "cuda"
    gpus = config.gpus_per_actor if config.gpus_per_actor is not None else (1.0 if on_cuda else 0.0)
    if gpus > 0 and not on_cuda:
        raise XmrError("{gpus} asks each encoder actor for GPUs, but the command runs on {device}: give {fix}",
                       gpus=Param("gpus_per_actor", gpus), device=str(runtime.device if runtime else "cpu"),
                       fix=Param("device", "cuda"))
    return ActorPlacement(num_cpus=config.cpus_per_actor, num_gpus=gpus, device="cuda" if gpus > 0 else "cpu")


@dataclass(frozen=True)
class RayEncodeReport:
    """What a run did: partitions encoded now, skipped (done before), failed; items left out."""

    shards: Path
    partitions: int
    encoded: tuple[int, ...]
    skipped: tuple[int, ...]
    failed: dict[int, str] = field(default_factory=dict)
    bad_items: tuple[dict[str, str], ...] = ()
    seconds: float = 0.0
    busy_seconds: float = 0.0  # the actors' time inside partitions (encoding + writing shards), summed


class _PartitionEncoder:
    """A Ray Data actor: the encoders loaded once, then one partition per call."""

    def __init__(self, image_encoder: str, text_encoder: str, cache_dir: str, shards: str, allow_textless: bool,
                 retries: int, threads: int, max_pixels: int, device: str = "cpu") -> None:
        import torch

        from xmr.encoders import create_image_encoder, create_text_encoder
        from xmr.encoders.image_io import ImageReadConfig, set_image_read
        from xmr.encoders.placement import place_encoder
        from xmr.runtime import RuntimeConfig
        from xmr.runtime.device import resolve

        torch.set_num_threads(max(1, threads))
        set_image_read(ImageReadConfig(max_pixels=max_pixels))  # the driver's limit, in the actor's process
        runtime = resolve(RuntimeConfig(device=device))  # cuda: the GPU Ray gave this actor (its only visible one)
        self.image_encoder = place_encoder(create_image_encoder(image_encoder), runtime)
        self.text_encoder = place_encoder(create_text_encoder(text_encoder), runtime)
        self.cache_dir, self.shards = cache_dir, Path(shards)
        self.allow_textless, self.retries = allow_textless, retries

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"partition": [], "error": [], "skipped": [], "seconds": []}
        for p, rows in zip(batch["partition"], batch["items"], strict=True):
            start = time.perf_counter()
            items = [Item(**r) for r in json.loads(str(rows))]
            error, skipped = "", "[]"
            for attempt in range(self.retries + 1):
                try:
                    fs = encode_items(items, image_encoder=self.image_encoder, text_encoder=self.text_encoder,
                                      cache_dir=self.cache_dir, skip_bad=True,
                                      allow_textless=self.allow_textless, show_progress=False)
                    write_shard(self.shards, int(p), fs)
                    error, skipped = "", json.dumps(list(fs.skipped))
                    break
                except Exception as e:  # noqa: BLE001  # reported by partition, the pool goes on
                    error = f"{type(e).__name__}: {e}" if not isinstance(e, XmrError) else str(e)
                    log.warning("partition %d, attempt %d: %s", p, attempt + 1, error)
            out["partition"].append(int(p))
            out["error"].append(error)
            out["skipped"].append(skipped)
            out["seconds"].append(time.perf_counter() - start)
        return out


def _refuse_reduced_precision(runtime: Runtime | None) -> None:
    """Partitioned encoding writes fp32 features (its shards and the cache's fp32 folder): refuse another."""
    if runtime is not None and runtime.precision != "fp32":
        raise XmrError("partitioned encoding runs at fp32 only, not at {precision}",
                       precision=Param("precision", runtime.precision))


def _check_reachable(address: str, timeout: float) -> None:
    """A one-line error now for an address nobody answers at (Ray itself retries for minutes)."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise XmrError("{address}: give auto, HOST:PORT or ray://HOST:PORT", address=Param("address", address))
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise XmrError("cannot reach the Ray cluster at {address} ({reason}); start it with {start} or check the "
                       "address", address=address, reason=e.strerror or e, start="`ray start --head`") from None


def connect(config: RayEncodeConfig) -> None:
    """Join (or start) the cluster ``config`` names, unless this process is connected already."""
    import ray

    for name in ("ray", "ray.data"):  # Ray Data logs every operator's metrics at DEBUG
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    if ray.is_initialized():
        return
    quiet: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False, "configure_logging": False}
    if config.address is None:
        ray.init(num_cpus=config.num_cpus, object_store_memory=256 << 20, **quiet)
        return
    _check_reachable(config.address, config.connect_timeout)
    try:
        ray.init(address=config.address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError) as e:
        raise XmrError(f"cannot join the Ray cluster at {config.address}: {str(e).splitlines()[0]}") from None


def encode_in_process(items: list[Item], *, image_encoder: str, text_encoder: str, shards: str | Path,
                      cache_dir: str | Path | None = None, partitions: int | None = None,
                      partition_size: int = RayEncodeConfig.partition_size, allow_textless: bool = False,
                      progress: Callable[[int, int], None] | None = None,
                      runtime: Runtime | None = None) -> RayEncodeReport:
    """The single-process engine with the same partitions and shards as :func:`encode_with_ray`
    (``xmr encode --shards`` without ``--engine ray``): the reference the Ray engine is tested against.
    ``runtime``: where the encoders run (None: the CPU; fp32 only, see the module docstring)."""
    from xmr.encoders import create_image_encoder, create_text_encoder
    from xmr.encoders.placement import place_encoder

    _refuse_reduced_precision(runtime)

    folder = Path(shards)
    n_parts = partitions or max(1, -(-len(items) // partition_size))
    plan = ShardPlan.make(items, image_encoder=image_encoder, text_encoder=text_encoder, partitions=n_parts)
    todo = prepare(folder, plan)
    start = time.perf_counter()
    image = place_encoder(create_image_encoder(image_encoder), runtime)
    text = place_encoder(create_text_encoder(text_encoder), runtime)
    bad: list[dict[str, str]] = []
    for k, p in enumerate(todo):
        fs = encode_items(items[slice(*plan.bounds[p])], image_encoder=image, text_encoder=text, cache_dir=cache_dir,
                          skip_bad=True,
                          allow_textless=allow_textless, show_progress=False)
        write_shard(folder, p, fs)
        bad.extend(fs.skipped)
        if progress is not None:
            progress(len(plan.bounds) - len(todo) + k + 1, len(plan.bounds))
    return RayEncodeReport(folder, len(plan.bounds), tuple(todo),
                           tuple(p for p in range(len(plan.bounds)) if p not in todo), {}, tuple(bad),
                           time.perf_counter() - start)


def encode_with_ray(items: list[Item], *, image_encoder: str, text_encoder: str, shards: str | Path,
                    cache_dir: str | Path | None = None, config: RayEncodeConfig | None = None,
                    allow_textless: bool = False,
                    progress: Callable[[int, int], None] | None = None,
                    runtime: Runtime | None = None) -> RayEncodeReport:
    """Encode ``items`` in partitions on Ray into the feature cache and the shard folder ``shards``.

    Args:
        items: the manifest's items, in order (partition ``p`` is a contiguous run of them).
        image_encoder, text_encoder: registered encoder names.
        shards: the shard folder (its ``plan.json`` must match, or it must be new).
        progress: called with (partitions done, partitions in all) as partitions finish.
        runtime: the command's device (None: the CPU): on CUDA each actor runs on GPUs of its own
            (:func:`actor_placement`); fp32 only.

    Raises:
        XmrError: a shard folder of another plan, an unreachable cluster, a bad option, GPUs asked for
            off CUDA or that the cluster lacks, a reduced precision.
    """
    import ray.data

    c = config or RayEncodeConfig()  # its numbers checked when it was made
    _refuse_reduced_precision(runtime)
    placement = actor_placement(c, runtime)
    if c.address is not None:  # a wrong address is an error even when every partition is done
        _check_reachable(c.address, c.connect_timeout)
    folder = Path(shards)
    n_parts = c.partitions or max(1, -(-len(items) // c.partition_size))
    plan = ShardPlan.make(items, image_encoder=image_encoder, text_encoder=text_encoder, partitions=n_parts)
    todo = prepare(folder, plan)
    done_before = tuple(p for p in range(len(plan.bounds)) if p not in todo)
    start = time.perf_counter()
    if progress is not None:
        progress(len(done_before), len(plan.bounds))
    if not todo:
        return RayEncodeReport(folder, len(plan.bounds), (), done_before)
    connect(c)
    pool = placement.pool_size(min(c.actors, len(todo)), float(ray.cluster_resources().get("GPU", 0)))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    rows = [{"partition": p, "items": json.dumps([items[i].to_row() for i in range(*plan.bounds[p])])} for p in todo]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        _PartitionEncoder, batch_size=1, num_cpus=placement.num_cpus,
        num_gpus=placement.num_gpus or None,  # None: the CPU path as before
        compute=ray.data.ActorPoolStrategy(size=pool),
        fn_constructor_kwargs={"image_encoder": image_encoder, "text_encoder": text_encoder,
                               "cache_dir": str(Path(cache_dir or default_cache_dir()).resolve()),
                               "shards": str(folder.resolve()),
                               "allow_textless": allow_textless, "retries": c.retries,
                               "threads": int(c.cpus_per_actor), "max_pixels": current_image_read().max_pixels,
                               "device": placement.device})
    encoded, failed, bad, busy = [], {}, [], 0.0
    for row in ds.iter_rows():
        p = int(row["partition"])
        busy += float(row["seconds"])
        if row["error"]:
            failed[p] = str(row["error"])
        else:
            encoded.append(p)
            bad.extend(json.loads(row["skipped"]))
        if progress is not None:
            progress(len(done_before) + len(encoded) + len(failed), len(plan.bounds))
    return RayEncodeReport(folder, len(plan.bounds), tuple(sorted(encoded)), done_before, failed, tuple(bad),
                           time.perf_counter() - start, busy)
