"""``xmr demo``: fetch emoji, train InfoNCE and VSE++, index, evaluate, query
(:func:`xmr.workflows.demo.run_demo`)."""

from __future__ import annotations

import argparse
import sys

from xmr.cli.options import add_cache, command_line, defaults_from, given_values, positive_int

#: the function ``xmr demo`` calls, and its options that default to its parameters' defaults
DEMO_JOB = "xmr.workflows.demo:run_demo"
_DEMO_OPTIONS = {"out": "out_dir", "epochs": "epochs"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="fetch emoji, train InfoNCE and VSE++, index, evaluate, query")
    p.add_argument("--out", default=None, help="the folder of the demo's runs")
    p.add_argument("--epochs", type=positive_int, default=None, help="most epochs of each run")
    p.add_argument("--more-data", action="store_true",
                   help="also fetch the icons and icons-extra datasets and train the best measured pipeline on "
                        "emoji + icons (InfoNCE + --cross-style 3); about 17 more minutes the first time")
    add_cache(p)
    p.defaults_fn = defaults_from(DEMO_JOB, _DEMO_OPTIONS)  # type: ignore[attr-defined]  # _Parser.format_help
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from xmr.workflows.demo import run_demo

    run_demo(cache_dir=a.cache_dir, command=command_line(a), out=sys.stdout, more_data=a.more_data,
             **given_values(a, _DEMO_OPTIONS))
