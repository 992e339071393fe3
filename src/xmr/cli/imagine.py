"""``xmr imagine RUN --text ... --out PNG``: images from a run trained with GXN's t2i path, by the
run's task if it can draw them (:meth:`xmr.tasks.Task.imagine`; retrieval:
:func:`xmr.workflows.imagine.imagine_images`)."""

from __future__ import annotations

import argparse

from xmr.cli.options import add_runtime, defaults_from, given_values, positive_int, run_task, runtime_from_args, seed

#: the function ``xmr imagine`` calls, and its options that default to its parameters' defaults
IMAGINE_JOB = "xmr.workflows.imagine:imagine_images"
_IMAGINE_OPTIONS = {"n": "n", "seed": "seed"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("imagine", help="64x64 images for a text from a run trained with --generative t2i")
    p.add_argument("run")
    p.add_argument("--text", required=True)
    p.add_argument("--out", required=True, help="PNG path; with --n > 1, OUT-1.png, OUT-2.png ...")
    p.add_argument("--n", type=positive_int, default=None, help="images to draw")
    p.add_argument("--seed", type=seed, default=None, help="seeds the noise z and the condition sample")
    p.add_argument("--mean", action="store_true", help="use the condition's mean instead of a sample of it")
    add_runtime(p)
    p.defaults_fn = defaults_from(IMAGINE_JOB, _IMAGINE_OPTIONS)  # type: ignore[attr-defined]  # _Parser.format_help
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    runtime = runtime_from_args(a)  # resolved once, before anything is read: a missing device fails first
    task = run_task(a)
    task.require("imagines", a.run)  # a run of a task that cannot draw: one line saying what it is
    for path in task.imagine(a.run, a.text, a.out, mean=a.mean, runtime=runtime, **given_values(a, _IMAGINE_OPTIONS)):
        print(path)
