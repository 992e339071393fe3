"""The top-level parser: the global options, one subcommand per command module, ``--threads``
everywhere, one-line parse errors and defaults shown from the config dataclasses."""

from __future__ import annotations

import argparse
import typing

from xmr.cli import (
    caption,
    data,
    demo,
    encode,
    evaluate,
    export,
    imagine,
    index,
    listing,
    pretrained,
    search,
    serve,
    train,
)
from xmr.cli.options import positive_int
from xmr.errors import XmrError

#: the command modules, in the order ``xmr --help`` lists their commands
COMMANDS = (data, encode, train, pretrained, index, search, evaluate, export, demo, caption, imagine, serve, listing)


class _Parser(argparse.ArgumentParser):
    """argparse with xmr's one-line errors: ``xmr: error: <what>`` (exit 2), no usage block.

    A parser with a ``defaults_fn`` (dest -> shown default) adds ``(default: X)`` to those options'
    help when help is asked for (the train defaults import the configs, which ``xmr --help`` need
    not pay for).
    """

    def format_help(self) -> str:
        fn = getattr(self, "defaults_fn", None)
        if fn is not None:
            defaults = fn()
            for action in self._actions:
                shown = defaults.get(action.dest)
                if shown is not None and "(default" not in (action.help or ""):
                    more = f"(default: {shown})".replace("%", "%%")
                    action.help = f"{action.help} {more}" if action.help else more
        return super().format_help()

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"xmr: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    ap = _Parser(prog="xmr", description="Cross-modal retrieval: train, index, search, evaluate.")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ap.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only; no progress bars")
    # the default is written here, not read (xmr.encoders loads torch); tests compare it with the field
    ap.add_argument("--max-image-pixels", type=positive_int, default=None, metavar="N",
                    help="refuse images declaring more pixels than N, before decoding (default: "
                         "$XMR_MAX_IMAGE_PIXELS, else xmr.encoders.image_io.ImageReadConfig.max_pixels, 178,956,970)")
    _add_threads(ap, argparse.SUPPRESS)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return _with_threads_everywhere(ap)


def _add_threads(parser: argparse.ArgumentParser, default: object) -> None:
    """``--threads`` on ``parser`` (given before or after the command: the top-level parser and every
    subcommand take it; ``default`` SUPPRESS keeps a subcommand from overwriting the top-level value)."""
    from xmr.utils.threads import ThreadConfig

    light = ThreadConfig().light_threads
    parser.add_argument("--threads", type=_threads, default=default, metavar="N|auto",
                        help=f"threads of torch and FAISS (default: $XMR_THREADS, else auto: every core this process "
                             f"may use for encoders and index builds, {light} for heads trained on cached features; "
                             "idle threads sleep, OMP_WAIT_POLICY=PASSIVE, unless the environment says otherwise)")


def _threads(text: str) -> int | None:
    from xmr.utils.threads import parse_threads

    try:
        return parse_threads(text)
    except XmrError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _with_threads_everywhere(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--threads`` to every subcommand, however deep (``xmr data fetch``, ``xmr index add`` ...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                if "--threads" not in child._option_string_actions:
                    _add_threads(child, argparse.SUPPRESS)
                _with_threads_everywhere(child)
    return parser
