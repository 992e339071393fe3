"""Registry of built-in datasets: ``fetch_dataset(name)`` fetches/builds one, returns its manifest.

Example::

    manifest = fetch_dataset("emoji")            # <cache>/datasets/emoji/manifest.jsonl
    items = read_manifest(manifest)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from xmr.data.composed_sets import fetch_cci, fetch_css, fetch_emoji_edits, fetch_icons
from xmr.data.emoji import fetch_emoji
from xmr.data.icons import fetch_extra_icons
from xmr.data.icons import fetch_icons as fetch_icon_sets
from xmr.data.openclipart import fetch_openclipart
from xmr.data.scene_captions import fetch_scene_captions
from xmr.errors import Param, XmrError
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


def seeded_datasets() -> list[str]:
    """The datasets whose split is drawn with a seed: their fetch function takes ``seed`` (a seed other than the
    default builds beside the default's, which stays as it is)."""
    return [n for n in DATASETS.names() if "seed" in inspect.signature(DATASETS.get(n)).parameters]


def fetch_dataset(name: str, cache_dir: str | Path | None = None, **kw: object) -> Path:
    """Fetch (or find in the cache) the built-in dataset ``name``; return its manifest path.

    Args:
        name: a registered dataset name (see ``DATASETS.names()``).
        cache_dir: cache root; None uses ``$XMR_CACHE_DIR`` or the platform's user cache.
        **kw: passed to the dataset's fetch function (e.g. ``image_size``, ``progress``; ``seed``: the split's
            seed, for the datasets of :func:`seeded_datasets` only; None: the default).

    Raises:
        XmrError: unknown name (listing the known ones), a seed for a dataset with one fixed split, or a failed
            fetch.
    """
    fetch = DATASETS.get(name)
    if kw.get("seed") is not None and name not in seeded_datasets():
        raise XmrError("dataset {name} has one fixed split; {seed} draws the split of: {seeded}", name=repr(name),
                       seed=Param("seed", str(kw["seed"])), seeded=", ".join(seeded_datasets()))
    kw = {k: v for k, v in kw.items() if not (k == "seed" and v is None)}
    return fetch(Path(cache_dir) if cache_dir is not None else None, **kw)
