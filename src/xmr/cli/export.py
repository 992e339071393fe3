"""``xmr export RUN --hf-checkpoint OUT``: a fine-tuned ``hf-clip:PATH`` run's whole model as a
transformers folder (:func:`xmr.workflows.export.export_hf_checkpoint`)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="write a fine-tuned hf-clip run's whole model as a transformers folder")
    p.add_argument("run")
    p.add_argument("--hf-checkpoint", required=True, metavar="OUT",
                   help="the folder to write: the checkpoint with the run's fine-tuned layers merged in "
                        "(hf-clip:OUT then gives the run's tail features, frozen)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from xmr.workflows.export import export_hf_checkpoint

    print(export_hf_checkpoint(a.run, a.hf_checkpoint, overwrite=a.overwrite))
