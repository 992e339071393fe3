"""The ``xmr`` command line. Each subcommand is a thin wrapper over one library function, in a module
of its own (``add_parser(subparsers)`` and ``run(args)``):

    xmr data fetch emoji           cli.data      xmr.data.fetch_dataset
    xmr data manifest DIR --out M  cli.data      xmr.workflows.folder.write_folder_manifest
    xmr encode MANIFEST            cli.encode    xmr.workflows.features.encode_items
    xmr train MANIFEST --out RUN   cli.train     the task's train (xmr.tasks; retrieval: xmr.workflows.train.train_run)
    xmr pretrained --out RUN       cli.pretrained  xmr.workflows.pretrained.pretrained_run (a pretrained pair)
    xmr index RUN                  cli.index     the run's task's index (retrieval: xmr.workflows.index.index_run;
                                                 add / remove: xmr.workflows.index_edit)
    xmr index --images DIR         cli.index     xmr.workflows.pretrained.index_folder (DIR/.xmr, made the first time)
    xmr search RUN --text "..."    cli.search    the run's task's search (retrieval: xmr.search.Searcher)
    xmr eval RUN                   cli.evaluate  the run's task's evaluate (retrieval: workflows.evaluate.evaluate_run)
    xmr demo                       cli.demo      xmr.workflows.demo.run_demo
    xmr caption RUN --image IMG    cli.caption   the run's task's caption (retrieval: workflows.imagine.caption_image)
    xmr imagine RUN --text T       cli.imagine   the run's task's imagine (retrieval: workflows.imagine.imagine_images)
    xmr serve RUN                  cli.serve     xmr.serve.serve with the run's task's service (xmr.tasks.load_service)
    xmr list                       cli.listing   the registered tasks, encoders, losses, similarities, heads, indexes,
                                                 re-rankers, datasets

``cli.parser`` builds the parser, ``cli.options`` holds what several commands share,
``cli.task_options`` merges the tasks' own options of train / eval / search, and
``cli.errors`` words errors: user errors print one line (``xmr: error: ...``) and exit with status 2,
never a traceback. Importing this package loads neither torch nor FAISS.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from xmr.cli.errors import cli_wording, print_error
from xmr.cli.index import join_index_edit
from xmr.cli.parser import build_parser
from xmr.cli.train import train_config_from_args
from xmr.errors import XmrError

__all__ = ["build_parser", "cli_wording", "main", "train_config_from_args"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xmr`` console script. Returns the exit status.

    Before anything imports torch or FAISS, idle OpenMP threads are told to sleep
    (``OMP_WAIT_POLICY=PASSIVE`` unless set: :mod:`xmr.utils.threads`); the command then runs at the
    thread count ``--threads`` / ``$XMR_THREADS`` / its work gives, restored when it returns.
    """
    from xmr.utils.threads import quiet_openmp

    quiet_openmp()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(join_index_edit(argv))
    args.argv = argv
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("faiss", "faiss.loader", "sentence_transformers", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        with _settings(args):
            args.func(args)
    except (XmrError, OSError, MemoryError) as e:  # OSError: the environment, not the input (a full disk ...)
        return print_error(e)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (a scheduler's stop): temp files are removed on the way
        print("xmr: interrupted; finished work is kept, re-run the same command to resume", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


@contextlib.contextmanager
def _settings(args: argparse.Namespace) -> Iterator[None]:
    """The library settings the global options give, for the command's run (restored after, as ``main``
    may run several times in one process): threads (``--threads``), progress (``-q``) and the image
    pixel limit (``--max-image-pixels``; without it, ``$XMR_MAX_IMAGE_PIXELS`` or the default), and, started by
    torchrun (``$WORLD_SIZE``), the training processes' group (:mod:`xmr.training.distributed`)."""
    from xmr.utils.progress import ProgressConfig, using_progress
    from xmr.utils.threads import config_from_env, using_config

    with contextlib.ExitStack() as stack:
        stack.enter_context(using_config(config_from_env(getattr(args, "threads", None))))
        stack.enter_context(using_progress(ProgressConfig(quiet=args.quiet)))
        if args.max_image_pixels is not None:  # xmr.encoders loads torch: only when the option is given
            from xmr.encoders.image_io import ImageReadConfig, using_image_read

            stack.enter_context(using_image_read(ImageReadConfig(max_pixels=args.max_image_pixels)))
        if "WORLD_SIZE" in os.environ:  # started by torchrun: join its processes (xmr.training.distributed loads torch)
            from xmr.cli.options import runtime_from_args
            from xmr.training.distributed import config_from_env as processes_from_env
            from xmr.training.distributed import joined

            processes = processes_from_env(backend=getattr(args, "process_backend", None))
            # the command's runtime, resolved once here with this process's local rank (cuda:LOCAL_RANK)
            runtime = runtime_from_args(args, processes) if hasattr(args, "device") else None
            stack.enter_context(joined(processes, runtime.device if runtime is not None else None))
        yield


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every ``finally`` runs (temporary folders removed)."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated()
