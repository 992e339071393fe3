"""Start the service: load the run once, build the app, run it with uvicorn.

With ``workers > 1`` uvicorn starts that many processes, each calling :func:`app_from_env`
(the run and settings travel in environment variables), so each loads the run once.
SIGTERM (or Ctrl-C) stops accepting connections and lets the requests in flight finish, for
:attr:`ServeConfig.graceful_timeout` seconds; those still running then are answered 503 and
dropped, one log line each (:class:`xmr.serve.limits.Limits`).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI

from xmr.encoders.image_io import ImageReadConfig, current_image_read, set_image_read
from xmr.runtime.config import RuntimeConfig
from xmr.serve.app import create_app
from xmr.serve.config import ServeConfig
from xmr.serve.service import GalleryService, SearchService

log = logging.getLogger(__name__)

_ENV = "XMR_SERVE_SPEC"
#: blocks at least this large are mapped from the system for each allocation, and given back when freed:
#: below Pillow's 16 MB image blocks, above the activations of the few images a query batch encodes
MMAP_THRESHOLD = 8 << 20
#: loads a run folder's service: ``load(run_dir, index_dir, config)``. A module-level function: each
#: worker process (``workers > 1``) imports it by its name. :func:`load_service` (the default) loads a
#: retrieval run's; :func:`xmr.tasks.load_service`, which ``xmr serve`` gives, any run's, by its task
#: (:meth:`xmr.tasks.Task.service`).
ServiceLoader = Callable[[str | Path, str | Path | None, ServeConfig], GalleryService]


def return_large_blocks() -> None:
    """Make the C allocator give large freed blocks (a decoded image's pixels) back to the system.

    glibc raises its mmap threshold after each large block freed (up to 32 MB), so the 16 MB
    blocks Pillow decodes into then come from the heap of the request thread that decoded them
    and stay there. 8 uploads of a 12000 x 12000 PNG at once, two decoded at a time
    (``python benchmarks/hostile_service.py big-decodes`` in a folder holding ``run``), server peak
    RSS: on an EfficientNet run +1,120 MB with the threshold left to EfficientNet's tuning, +400 MB
    with it fixed here; on a toy-encoder run +286 MB. Nothing to do under another C library.
    Called after the encoders load: EfficientNet's loader raises the threshold for batch encoding
    (:mod:`xmr.utils.malloc`, once per process), which would undo this.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD; a fixed one is never raised


def load_service(run_dir: str | Path, index_dir: str | Path | None, config: ServeConfig) -> GalleryService:
    """The default :data:`ServiceLoader`: the search service of a retrieval run's index."""
    return SearchService.serving(run_dir, index_dir, config)


def build_app(run_dir: str | Path, index_dir: str | Path | None = None, config: ServeConfig | None = None, *,
              load: ServiceLoader | None = None) -> FastAPI:
    """Load ``run_dir`` (and its index) with ``load`` (default :func:`load_service`) and return the
    application; the start-up time is logged."""
    import torch

    config = config or ServeConfig()
    torch.set_num_threads(config.torch_threads)
    t0 = time.perf_counter()
    service = (load or load_service)(run_dir, index_dir, config)
    service.warm_up()  # the encoders' weights load now, not at the first query
    return_large_blocks()  # after the encoders' own allocator tuning (EfficientNet's), which it overrides
    # the gallery's objects (an Item per image: a million at 1M) live as long as the process: out of
    # the collector's sight, a full collection no longer walks them in the middle of a request
    gc.collect()
    gc.freeze()
    seconds = time.perf_counter() - t0
    log.info("loaded %s (%d images, %d texts, re-rankers: %s, query texts by %s) in %.1f s", run_dir,
             len(service.items), service.n_texts, ", ".join(service.rerankers) or "none", service.text_encoder_id,
             seconds)
    return create_app(service, config, startup_seconds=seconds)


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker process (``workers > 1``), from :data:`_ENV`."""
    spec = json.loads(os.environ[_ENV])
    given = spec["config"]
    set_image_read(ImageReadConfig(**spec["image_read"]))  # the limits the starting command had, for this process
    config = ServeConfig(**{**given, "cors_origins": tuple(given["cors_origins"]),
                            "allowed_hosts": tuple(given["allowed_hosts"]),
                            "runtime": RuntimeConfig(**given["runtime"])})
    module, _, name = spec["load"].partition(":")
    return build_app(spec["run"], spec["index"], config, load=getattr(importlib.import_module(module), name))


def serve(run_dir: str | Path, index_dir: str | Path | None = None, config: ServeConfig | None = None, *,
          load: ServiceLoader | None = None) -> None:
    """Serve ``run_dir``, loaded by ``load`` (default :func:`load_service`), until stopped (blocks)."""
    import uvicorn

    config, load = config or ServeConfig(), load or load_service
    key = config.key()  # a key no client could send is refused now, before the run loads
    if not config.is_local:
        log.warning("listening on %s: the service is reachable from other machines%s", config.host,
                    "" if key else "; set XMR_API_KEY to require a key")
    common = {"host": config.host, "port": config.port, "timeout_graceful_shutdown": config.graceful_timeout,
              "log_level": "info"}
    if config.workers == 1:
        uvicorn.run(build_app(run_dir, index_dir, config, load=load), **common)  # type: ignore[arg-type]
        return
    os.environ[_ENV] = json.dumps({"run": str(Path(run_dir).resolve()),
                                   "index": str(Path(index_dir).resolve()) if index_dir else None,
                                   "config": asdict(config), "image_read": asdict(current_image_read()),
                                   "load": f"{load.__module__}:{load.__qualname__}"})
    uvicorn.run("xmr.serve.run:app_from_env", factory=True, workers=config.workers, **common)  # type: ignore[arg-type]
