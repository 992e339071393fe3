"""``xmr caption RUN --image IMG``: a caption from a run trained with GXN's i2t path, by the run's
task if it can caption (:meth:`xmr.tasks.Task.caption`; retrieval:
:func:`xmr.workflows.imagine.caption_image`)."""

from __future__ import annotations

import argparse

from xmr.cli.options import add_runtime, defaults_from, given_values, positive_int, run_task, runtime_from_args

#: the function ``xmr caption`` calls, and its options that default to its parameters' defaults
CAPTION_JOB = "xmr.workflows.imagine:caption_image"
_CAPTION_OPTIONS = {"beam": "beam"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("caption", help="a caption for an image from a run trained with --generative i2t")
    p.add_argument("run")
    p.add_argument("--image", required=True)
    p.add_argument("--beam", type=positive_int, default=None, help="beam width (1: greedy decoding)")
    add_runtime(p)
    p.defaults_fn = defaults_from(CAPTION_JOB, _CAPTION_OPTIONS)  # type: ignore[attr-defined]  # _Parser.format_help
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    runtime = runtime_from_args(a)  # resolved once, before anything is read: a missing device fails first
    task = run_task(a)
    task.require("captions", a.run)  # a run of a task that cannot caption: one line saying what it is
    print(task.caption(a.run, a.image, runtime=runtime, **given_values(a, _CAPTION_OPTIONS)))
