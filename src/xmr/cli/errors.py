"""How the CLI words an error: a :class:`~xmr.errors.Param` as its option, and every user error,
OS error or exhaustion as one printable line (``xmr: error: ...``, exit status 2)."""

from __future__ import annotations

import shlex
import sys

from xmr.errors import NO_VALUE, Call, Param, XmrError
from xmr.utils.io import os_error_reason
from xmr.utils.terminal import terminal_safe

#: library parameters whose option is not ``--`` + the name with dashes
_OPTION_OF_PARAM = {"out_dir": "--out", "index_dir": "--index", "max_pixels": "--max-image-pixels",
                    "backend": "--process-backend",
                    "rerank_targets": "--rerank-target"}
#: library parameter values the CLI spells as an option of their own
_OPTION_OF_VALUE: dict[tuple[str, object], str] = {
    ("edits", "keep"): "--keep-edits", ("edits", "drop"): "--drop-edits",
    ("rerank_targets", ("images", "texts")): "--rerank-target both",
}


#: library jobs an error may name (:class:`~xmr.errors.Call`) -> (their command, the parameters it takes
#: as positional arguments, in order)
_COMMAND_OF_CALL: dict[str, tuple[str, tuple[str, ...]]] = {
    "index_run": ("index", ("run_dir",)),
    "index_folder": ("index", ()),
    "pretrained_run": ("pretrained", ()),
    "write_folder_manifest": ("data manifest", ("root",)),
    "train_run": ("train", ("manifest",)),
    "Searcher.from_run": ("search", ("run_dir",)),
    "add_to_index": ("index add", ("run_dir", "manifest")),
    "remove_from_index": ("index remove", ("run_dir", "item_ids")),
}


def cli_wording(p: Param) -> str:
    """How the CLI names a parameter an error carries: its option, with the value where one is given
    (``Param("overwrite", True)`` -> ``--overwrite``; ``Param("factory", "Flat")`` -> ``--factory Flat``);
    a re-ranking method's parameter (``Param("diffusion.k", 20)``) as ``--rerank-param diffusion.k=20``;
    a :class:`~xmr.errors.Call` as its command (```xmr index RUN --images photos```)."""
    if isinstance(p, Call):
        return _command(p)
    if _is_rerank_param(p.name):
        given = "" if p.value is NO_VALUE else " " + shlex.quote(f"{p.name}={_text(p.value)}")
        return "--rerank-param" + given
    value = tuple(p.value) if isinstance(p.value, list) else p.value
    if isinstance(value, (str, tuple)) and (p.name, value) in _OPTION_OF_VALUE:
        return _OPTION_OF_VALUE[p.name, value]
    flag = _OPTION_OF_PARAM.get(p.name, "--" + p.name.replace("_", "-"))
    if p.value is NO_VALUE or p.value is True:
        return flag
    return f"{flag} {shlex.quote(_text(p.value))}"


def _text(value: object) -> str:
    """A value as an option takes it: a list joined by commas, a bool as ``true`` / ``false``."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _is_rerank_param(name: str) -> bool:
    """``method.key`` where ``method`` is a registered re-ranker (what ``--rerank-param`` takes)."""
    method, dot, _ = name.partition(".")
    if not dot:
        return False
    from xmr.rerank.registry import RERANKERS

    return method in RERANKERS.names()


def _command(call: Call) -> str:
    """The ``xmr`` command that runs ``call``'s job, in backquotes; its Python wording when the CLI
    has no command for it."""
    if call.name not in _COMMAND_OF_CALL:
        return call.python()
    command, positional = _COMMAND_OF_CALL[call.name]
    given = {a.name: a for a in call.args}
    words = ["xmr", command, *(shlex.quote(_text(given[n].value)) for n in positional if n in given)]
    words += [cli_wording(a) for a in call.args if a.name not in positional]
    return "`" + " ".join(words) + "`"


def one_line(message: str) -> str:
    """An error message as one printable line: its lines joined, control characters escaped."""
    return terminal_safe(" ".join(message.split("\n")) if "\n" in message else message)


def print_error(e: XmrError | OSError | MemoryError) -> int:
    """Print ``e`` as the one ``xmr: error: ...`` line on stderr; returns the exit status (2)."""
    if isinstance(e, XmrError):
        text = one_line(e.worded(cli_wording))
    elif isinstance(e, OSError):  # the environment, not the input: a full disk, a read-only folder ...
        text = f"{e.filename}: " if e.filename else ""
        text += os_error_reason(e)
    else:
        text = "out of memory"
    print(f"xmr: error: {text}", file=sys.stderr)
    return 2
