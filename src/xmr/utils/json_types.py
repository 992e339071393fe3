"""Type checks of JSON configs against the dataclass fields they fill (one-line errors, not deep failures)."""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping
from typing import Any

from xmr.errors import XmrError


def check_json_types(cls: type, raw: dict[str, Any], where: str | os.PathLike[str]) -> None:
    """Refuse JSON values whose type does not fit the field of dataclass ``cls`` they are for.

    ``{"manifest": 5}`` for a ``str`` field, ``"3"`` for an ``int``, a list for a nested
    config ...: a one-line XmrError naming the file and the field, instead of a failure far
    away. Unknown keys are left to the caller; nested dataclass fields are checked as objects
    (their own fields are the caller's to check with their class).
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in raw and not _fits(raw[f.name], hints.get(f.name, Any)):
            shown = json.dumps(raw[f.name])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise XmrError(f"{where}: field {f.name!r} is {shown}, expected {_type_name(hints.get(f.name, Any))}")


def _fits(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list, collections.abc.Sequence):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value) if args else \
            isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return isinstance(value, (dict, hint))
    return True


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is typing.Literal:
        return " or ".join(json.dumps(a) for a in typing.get_args(hint))
    if dataclasses.is_dataclass(hint):
        return "an object"
    origin = typing.get_origin(hint)
    if origin in (tuple, list):
        return "a list"
    if origin is dict:
        return "an object"
    return {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}.get(hint, str(hint))


def fields_by_owner(by_dest: Mapping[str, str], owners: Mapping[str, tuple[type, str]],
                    default: type) -> dict[type, dict[str, str]]:
    """``{config dataclass: {option dest: field}}`` of options that fill a config's flat settings.

    Args:
        by_dest: option dest -> the flat setting it fills.
        owners: flat setting -> (the nested config class that holds it, its field there).
        default: the class of a flat setting ``owners`` does not name (a field of its own, same name).
    """
    out: dict[type, dict[str, str]] = {}
    for dest, flat in by_dest.items():
        owner, name = owners.get(flat, (default, flat))
        out.setdefault(owner, {})[dest] = name
    return out
