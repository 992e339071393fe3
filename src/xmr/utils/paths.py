"""Where xmr keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def default_cache_dir() -> Path:
    """``$XMR_CACHE_DIR`` if set, else the platform's user cache folder for ``xmr``."""
    env = os.environ.get("XMR_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("xmr"))
