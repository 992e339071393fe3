"""Where and at which precision torch runs: one :class:`RuntimeConfig` (``device``, ``precision``),
resolved once into a :class:`~xmr.runtime.device.Runtime` (:func:`~xmr.runtime.device.resolve`) and
passed explicitly, as open_clip passes ``device=`` / ``precision=``.

This module holds the config alone and imports no torch (the CLI reads its defaults for ``--help``);
:mod:`xmr.runtime.device` resolves it, gives the autocast context and the numpy boundary.
"""

from __future__ import annotations

from xmr.runtime.config import DEFAULT_PROCESS_BACKEND, DEVICES, PRECISIONS, PROCESS_BACKENDS, RuntimeConfig

__all__ = ["DEFAULT_PROCESS_BACKEND", "DEVICES", "PRECISIONS", "PROCESS_BACKENDS", "RuntimeConfig"]
