"""The one exception type users see: a one-line message naming the bad item."""

from __future__ import annotations


class XmrError(ValueError):
    """An error caused by the user's input or environment, not by a bug in xmr.

    The CLI prints ``str(error)`` on one line and exits with status 2; no traceback.
    Messages name the offending item (path, id, name, dimension) so it can be fixed.

    It is a :class:`ValueError`, and every validating constructor (the config dataclasses,
    the registries, the array checks) raises it, so library callers can catch either, and a
    bad value never reaches ``main()`` as a bare ``ValueError`` with a traceback.
    """
