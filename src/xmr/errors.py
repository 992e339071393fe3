"""The one exception type users see: a one-line message naming the bad item, with its facts as data.

An error is raised where its rule is checked, in the library's words; the *edges* word the
parameters it names. The library never writes a command-line flag or an HTTP field into a message:
it names a :class:`Param` (a keyword argument or config field, optionally with the value it had or
the value that would fix it), and each edge words it its own way:

=========  ===========================  ==============================
edge       ``Param("overwrite", True)``  ``Param("factory", "Flat")``
=========  ===========================  ==============================
Python     ``overwrite=True``            ``factory='Flat'``
CLI        ``--overwrite``               ``--factory Flat``
HTTP       ``overwrite``                 ``factory`` (the JSON field)
=========  ===========================  ==============================

    >>> e = XmrError("{out} holds a run with another config; pick a new folder or pass {fix} to start again",
    ...              out="/runs/a", fix=Param("overwrite", True))
    >>> str(e)
    '/runs/a holds a run with another config; pick a new folder or pass overwrite=True to start again'
    >>> e.fields["fix"].name
    'overwrite'
    >>> e.worded(lambda p: "--" + p.name.replace("_", "-"))
    '/runs/a holds a run with another config; pick a new folder or pass --overwrite to start again'

A job that would fix the error is a :class:`Call` (a Param naming a library function and its
arguments): Python words it as the call, the CLI as its command (```xmr index RUN --images photos```).
A message without fields is used as it is (``XmrError("no such file")``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class _NoValue:
    def __repr__(self) -> str:
        return "NO_VALUE"

    def __reduce__(self) -> str:  # unpickled as this module's one NO_VALUE (``is`` still holds)
        return "NO_VALUE"


#: a Param's value when it names the parameter alone
NO_VALUE: Any = _NoValue()


@dataclass(frozen=True)
class Param:
    """A parameter an error names: a keyword argument of the called function or a config field.

    Attributes:
        name: the Python name (``out_dir``, ``overwrite``, ``factory``); the CLI maps it to its
            option, the HTTP layer to its JSON field.
        value: the value it had (what is wrong) or should have (what would fix it); NO_VALUE
            names the parameter alone.
    """

    name: str
    value: Any = NO_VALUE

    def python(self) -> str:
        """The Python wording: ``name=value`` (``repr``), or ``name`` alone."""
        return self.name if self.value is NO_VALUE else f"{self.name}={self.value!r}"


@dataclass(frozen=True, init=False)
class Call(Param):
    """A library job the user can run to fix an error, with the arguments that matter: a
    :class:`Param` whose ``name`` is the function and whose ``value`` is its arguments. The
    Python edge words it as a call, the CLI as the command that runs the job (a table in the CLI
    maps the function to its command), the HTTP layer by the function's name.

        >>> Call("index_run", Param("run_dir", "RUN"), Param("images", "photos")).python()
        "index_run(run_dir='RUN', images='photos')"
    """

    value: tuple[Param, ...]

    def __init__(self, name: str, *args: Param) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "value", tuple(args))

    @property
    def args(self) -> tuple[Param, ...]:
        return self.value

    def python(self) -> str:
        return f"{self.name}({', '.join(a.python() for a in self.args)})"


#: how an edge words a :class:`Param` (a :class:`Call` too)
Wording = Callable[[Param], str]


def python_wording(p: Param) -> str:
    return p.python()


def fill(template: str, fields: Mapping[str, Any], wording: Wording) -> str:
    """``template`` with each ``{key}`` of ``fields`` replaced: a :class:`Param` worded by ``wording``,
    anything else by ``str`` (an error's text, or a hint a report shares with an error)."""
    def shown(m: re.Match[str]) -> str:
        value = fields[m.group(1)]
        return wording(value) if isinstance(value, Param) else str(value)

    if not fields:
        return template
    keys = "|".join(re.escape(k) for k in fields)
    return re.sub(r"\{(" + keys + r")\}", shown, template)  # one pass: shown values are not re-read


class XmrError(ValueError):
    """An error caused by the user's input or environment, not by a bug in xmr.

    The CLI prints it on one line and exits with status 2; no traceback. Messages name the
    offending item (path, id, name, dimension) so it can be fixed.

    Args:
        message: the text; with ``fields`` a template in which ``{key}`` stands for the field
            ``key`` (only those placeholders are replaced, so user data in the text is safe).
        fields: the error's facts as data (the item, the value, what would fix it). A
            :class:`Param` value is worded by the edge (:meth:`worded`); anything else is shown
            with ``str``.

    It is a :class:`ValueError`, and every validating constructor (the config dataclasses,
    the registries, the array checks) raises it, so library callers can catch either, and a
    bad value never reaches ``main()`` as a bare ``ValueError`` with a traceback.
    """

    def __init__(self, message: str, /, **fields: Any) -> None:
        self.template = message
        self.fields: dict[str, Any] = fields
        super().__init__(self.worded(python_wording))

    def worded(self, wording: Wording) -> str:
        """The message with each :class:`Param` field worded by ``wording`` (an edge's own)."""
        return fill(self.template, self.fields, wording)

    def params(self) -> list[Param]:
        """The parameters the error names, in field order."""
        return [v for v in self.fields.values() if isinstance(v, Param)]

    def prefixed(self, prefix: str) -> XmrError:
        """The same error with ``prefix`` in front of its text (fields kept, so edges still word it)."""
        key = "_prefix"
        while key in self.fields:
            key += "_"
        return XmrError("{" + key + "}" + self.template, **{key: prefix, **self.fields})

    def suffixed(self, suffix: str, /, **fields: Any) -> XmrError:
        """The same error with ``suffix`` (a template over the new ``fields``) after its text; the
        error's own fields are kept, so a wrapped error's parameters are still worded by the edge:
        ``e.prefixed(f"item {i!r}: ").suffixed("; pass {fix} to leave it out", fix=Param("skip_bad", True))``."""
        clash = sorted(set(fields) & set(self.fields))
        if clash:
            raise ValueError(f"suffixed: fields {clash} are already the error's")
        if not self.fields:  # its text is kept whole, whatever braces it holds
            return XmrError("{_text}" + suffix, _text=self.template, **fields)
        return XmrError(self.template + suffix, **self.fields, **fields)

    def __reduce__(self) -> tuple[Any, ...]:
        # picklable across processes (Ray workers) with its fields, its class and a subclass's attributes
        state = {k: v for k, v in self.__dict__.items() if k not in ("template", "fields")}
        return (_rebuild, (type(self), self.template, self.fields, state))


def _rebuild(cls: type[XmrError], template: str, fields: dict[str, Any], state: dict[str, Any]) -> XmrError:
    error = cls.__new__(cls)
    XmrError.__init__(error, template, **fields)
    error.__dict__.update(state)
    return error
