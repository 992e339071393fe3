"""Registry of built-in datasets: ``fetch_dataset(name)`` fetches/builds one, returns its manifest.

Example::

    manifest = fetch_dataset("emoji")            # <cache>/datasets/emoji/manifest.jsonl
    items = read_manifest(manifest)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from xmr.data.composed_sets import fetch_cci, fetch_css, fetch_emoji_edits, fetch_icons
from xmr.data.emoji import fetch_emoji
from xmr.data.icons import fetch_extra_icons
from xmr.data.icons import fetch_icons as fetch_icon_sets
from xmr.data.openclipart import fetch_openclipart
from xmr.data.scene_captions import fetch_scene_captions
from xmr.registry import Registry

#: name -> fetch function ``(cache_dir: Path | None, **kw) -> manifest path``
DATASETS: Registry[Callable[..., Path]] = Registry("dataset")
DATASETS.add("emoji", fetch_emoji)
DATASETS.add("css", fetch_css)
DATASETS.add("cci", fetch_cci)
DATASETS.add("emoji-edits", fetch_emoji_edits)
DATASETS.add("icon-edits", fetch_icons)
DATASETS.add("icons", fetch_icon_sets)
DATASETS.add("icons-extra", fetch_extra_icons)
DATASETS.add("scene-captions", fetch_scene_captions)
DATASETS.add("openclipart", fetch_openclipart)


def fetch_dataset(name: str, cache_dir: str | Path | None = None, **kw: object) -> Path:
    """Fetch (or find in the cache) the built-in dataset ``name``; return its manifest path.

    Args:
        name: a registered dataset name (see ``DATASETS.names()``).
        cache_dir: cache root; None uses ``$XMR_CACHE_DIR`` or the platform's user cache.
        **kw: passed to the dataset's fetch function (e.g. ``image_size``, ``progress``).

    Raises:
        XmrError: unknown name (listing the known ones) or a failed fetch.
    """
    fetch = DATASETS.get(name)
    return fetch(Path(cache_dir) if cache_dir is not None else None, **kw)
