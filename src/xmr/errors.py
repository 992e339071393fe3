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

A message without fields is used as it is (``XmrError("no such file")``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: a Param's value when it names the parameter alone
NO_VALUE: Any = type("NoValue", (), {"__repr__": lambda self: "NO_VALUE"})()


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


#: how an edge words a :class:`Param`
Wording = Callable[[Param], str]


def python_wording(p: Param) -> str:
    return p.python()


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
        def shown(m: re.Match[str]) -> str:
            value = self.fields[m.group(1)]
            return wording(value) if isinstance(value, Param) else str(value)

        if not self.fields:
            return self.template
        keys = "|".join(re.escape(k) for k in self.fields)
        return re.sub(r"\{(" + keys + r")\}", shown, self.template)  # one pass: shown values are not re-read

    def params(self) -> list[Param]:
        """The parameters the error names, in field order."""
        return [v for v in self.fields.values() if isinstance(v, Param)]

    def prefixed(self, prefix: str) -> XmrError:
        """The same error with ``prefix`` in front of its text (fields kept, so edges still word it)."""
        key = "_prefix"
        while key in self.fields:
            key += "_"
        return XmrError("{" + key + "}" + self.template, **{key: prefix, **self.fields})

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes (Ray workers) with its fields
        return (_rebuild, (self.template, self.fields))


def _rebuild(template: str, fields: dict[str, Any]) -> XmrError:
    return XmrError(template, **fields)
