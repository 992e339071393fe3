"""``xmr export RUN --hf-checkpoint OUT``: a fine-tuned ``hf-clip:PATH`` run's whole model as a
transformers folder (:func:`xmr.workflows.export.export_hf_checkpoint`)."""

from __future__ import annotations

import argparse

from xmr.cli.options import defaults_from, given_values

#: the function ``xmr export`` calls, and its options that default to its parameters' defaults
EXPORT_JOB = "xmr.workflows.export:export_hf_checkpoint"
_EXPORT_OPTIONS = {"overwrite": "overwrite"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="write a fine-tuned hf-clip run's whole model as a transformers folder")
    p.add_argument("run")
    p.add_argument("--hf-checkpoint", required=True, metavar="OUT",
                   help="the folder to write: the checkpoint with the run's fine-tuned layers merged in "
                        "(hf-clip:OUT then gives the run's tail features, frozen)")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace OUT if it exists")
    p.defaults_fn = defaults_from(EXPORT_JOB, _EXPORT_OPTIONS)  # type: ignore[attr-defined]  # _Parser.format_help
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from xmr.workflows.export import export_hf_checkpoint

    print(export_hf_checkpoint(a.run, a.hf_checkpoint, **given_values(a, _EXPORT_OPTIONS)))
