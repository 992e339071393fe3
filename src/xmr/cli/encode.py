"""``xmr encode MANIFEST`` (or ``--images FOLDER``): the feature cache
(:func:`xmr.workflows.features.encode_items`), or one shard per partition, in this process or by a
pool of Ray actors (:mod:`xmr.workflows.ray_encode`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from xmr.cli.options import (
    add_cache,
    add_encoders,
    add_recursive,
    add_runtime,
    add_skip_bad,
    count,
    non_negative,
    positive,
    positive_int,
    runtime_from_args,
)
from xmr.errors import XmrError

if TYPE_CHECKING:
    from xmr.data.manifest import Item
    from xmr.runtime.device import Runtime


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("encode", help="encode a manifest's (or a folder's) images and texts into the feature cache")
    p.add_argument("manifest", nargs="?", default=None, help="JSONL/CSV manifest or Karpathy split JSON")
    p.add_argument("--images", default=None, metavar="FOLDER",
                   help="encode a folder of images instead of a manifest (unreadable files are skipped and listed)")
    add_recursive(p)
    p.add_argument("--image-root", default=None, help="Karpathy files: the folder holding the images")
    p.add_argument("--split", default=None, help="only this split")
    add_skip_bad(p)
    add_encoders(p)
    add_cache(p)
    add_runtime(p, loader=True)
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this process (default); ray: partitions encoded by a pool of Ray actors, each "
                        "partition's shard written atomically, finished ones skipped on a re-run")
    p.add_argument("--shards", default=None, metavar="FOLDER",
                   help="write one feature shard per partition here (default with --engine ray: under the cache)")
    p.add_argument("--address", default=None,
                   help="Ray: auto (the cluster on this machine), HOST:PORT or ray://HEAD:10001; default: start a "
                        "local cluster for this run")
    p.add_argument("--partitions", type=positive_int, default=None,
                   help="cut the manifest into N partitions (default: one per --partition-size items)")
    p.add_argument("--partition-size", type=positive_int, default=None, help="items per partition")
    p.add_argument("--actors", type=positive_int, default=None, help="Ray: encoder actors in the pool")
    p.add_argument("--cpus-per-actor", type=positive, default=None, help="Ray: CPUs per actor")
    p.add_argument("--gpus-per-actor", type=non_negative, default=None,
                   help="Ray: GPUs per actor, its encoders on them (one model per GPU); automatic: 1 when the device "
                        "is CUDA, else 0")
    p.add_argument("--retries", type=count, default=None, help="Ray: attempts after the first for a failing partition")
    p.add_argument("--num-cpus", type=positive_int, default=None, help="Ray: CPUs of the local cluster (default: all)")
    p.defaults_fn = _encode_defaults  # type: ignore[attr-defined]  # read by _Parser.format_help
    p.set_defaults(func=run)


def _encode_defaults() -> dict[str, str]:
    """``xmr encode``'s defaults for ``--help``: the encoders from :class:`~xmr.runs.config.RunConfig` (what a
    run trains on by default), the Ray settings from :class:`~xmr.workflows.ray_encode.RayEncodeConfig`."""
    from xmr.runs.config import RunConfig
    from xmr.workflows.ray_encode import RayEncodeConfig

    c = RayEncodeConfig()
    return {"image_encoder": RunConfig.image_encoder, "text_encoder": RunConfig.text_encoder,
            "partition_size": str(c.partition_size), "actors": str(c.actors), "cpus_per_actor": f"{c.cpus_per_actor:g}",
            "gpus_per_actor": "automatic", "retries": str(c.retries)}


def run(a: argparse.Namespace) -> None:
    from xmr.data.folder import scan_folder
    from xmr.data.manifest import select_split
    from xmr.data.readers import read_items
    from xmr.encoders import create_image_encoder, create_text_encoder
    from xmr.encoders.placement import place_encoder
    from xmr.runs.config import RunConfig
    from xmr.workflows.features import encode_items, feature_cache_dir, skipped_list_path, write_skipped

    runtime = runtime_from_args(a)  # resolved once, before anything is read: a missing device fails first
    if (a.manifest is None) == (a.images is None):
        raise XmrError("give a manifest or --images FOLDER (one of them)")
    source, skip_bad = (a.manifest, a.skip_bad) if a.images is None else (a.images, True)
    scan = scan_folder(a.images, recursive=a.recursive) if a.images is not None else None
    items = scan.items if scan is not None else read_items(a.manifest, image_root=a.image_root, skip_bad=a.skip_bad)
    items = select_split(items, a.split)
    image_encoder, text_encoder = a.image_encoder or RunConfig.image_encoder, a.text_encoder or RunConfig.text_encoder
    if a.engine == "ray" or a.shards is not None:
        return _encode_partitions(a, items, image_encoder, text_encoder, allow_textless=a.images is not None,
                                  runtime=runtime)
    fs = encode_items(items, image_encoder=place_encoder(create_image_encoder(image_encoder), runtime),
                      text_encoder=place_encoder(create_text_encoder(text_encoder), runtime),
                      cache_dir=a.cache_dir, skip_bad=skip_bad, allow_textless=a.images is not None)
    print(f"encoded {len(fs.items)} images ({fs.image_feats.shape[1]}-d) and {len(fs.texts)} texts "
          f"({fs.text_feats.shape[1]}-d); cache: {feature_cache_dir(a.cache_dir)}")
    skipped = (*(scan.skipped if scan is not None else ()), *fs.skipped)  # + unlistable folders, bad sidecars
    if skipped:
        listed = write_skipped(skipped_list_path(source, a.cache_dir), skipped)
        print(f"skipped {len(skipped)} unreadable image(s), caption sidecar(s) or sub-folder(s); listed in {listed}")


def _encode_partitions(a: argparse.Namespace, items: list[Item], image_encoder: str, text_encoder: str, *,
                       allow_textless: bool, runtime: Runtime) -> None:
    """``xmr encode --engine ray`` (or ``--shards`` in this process): partitions -> shards + the cache."""
    from xmr.workflows.features import feature_cache_dir
    from xmr.workflows.ray_encode import RayEncodeConfig, encode_in_process, encode_with_ray
    from xmr.workflows.shards import ShardPlan

    if a.shards is None:
        digest = ShardPlan.make(items, image_encoder=image_encoder, text_encoder=text_encoder, partitions=1).digest
        a.shards = str(feature_cache_dir(a.cache_dir).parent / "shards" / digest[:16])
    shown = _progress_line("partitions")
    given = {k: getattr(a, k) for k in ("address", "partitions", "partition_size", "actors", "cpus_per_actor",
                                        "gpus_per_actor", "retries", "num_cpus") if getattr(a, k, None) is not None}
    if a.engine == "ray":
        report = encode_with_ray(items, image_encoder=image_encoder, text_encoder=text_encoder, shards=a.shards,
                                 cache_dir=a.cache_dir, config=RayEncodeConfig(**given),
                                 allow_textless=allow_textless, progress=shown, runtime=runtime)
    else:
        report = encode_in_process(items, image_encoder=image_encoder, text_encoder=text_encoder, shards=a.shards,
                                   cache_dir=a.cache_dir, partitions=given.get("partitions"),
                                   partition_size=given.get("partition_size", RayEncodeConfig.partition_size),
                                   allow_textless=allow_textless, progress=shown, runtime=runtime)
    print(f"encoded {len(report.encoded)} of {report.partitions} partitions ({len(report.skipped)} done before) "
          f"in {report.seconds:.1f}s; shards: {report.shards}")
    for item in report.bad_items[:5]:
        print(f"  left out {item['id']}: {item['reason']}")
    if len(report.bad_items) > 5:
        print(f"  ... and {len(report.bad_items) - 5} more unreadable image(s)")
    if report.failed:
        p, why = next(iter(sorted(report.failed.items())))
        raise XmrError(f"{len(report.failed)} partition(s) failed after retries (first: partition {p}: {why}); "
                       "the others are kept: run the same command again to retry them")


def _progress_line(what: str) -> Callable[[int, int], None]:
    """``what: done/total`` on one stderr line, redrawn (unless progress is silenced: ``-q``, ``$XMR_NO_PROGRESS``)."""
    from xmr.utils.progress import progress_silenced

    def show(done: int, total: int) -> None:
        if not progress_silenced():
            print(f"\r{what}: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)
    return show
