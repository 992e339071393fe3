"""Built-in composed-query datasets for ``fetch_dataset``: CSS-like, CCI-like, emoji edits, icon edits.

Each returns the manifest path; the triplets are ``triplets.jsonl`` beside it
(:func:`triplets_beside`). Builds are deterministic (seed 0) and skipped when their manifest,
written last, already exists.
"""

from __future__ import annotations

from pathlib import Path

from xmr.data.edits import build_emoji_edits
from xmr.data.emoji import fetch_emoji
from xmr.data.icon_edits import fetch_icon_edits
from xmr.data.scenes import make_cci_dataset, make_css_dataset
from xmr.utils.paths import default_cache_dir

#: the CSS-like default size: about TIRG's CSS (19k training and 19k test queries), halved for 2 CPU cores
CSS_TRAIN, CSS_TEST = 10_000, 2_000


def _root(cache_dir: Path | None, name: str) -> Path:
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "datasets" / name


def triplets_beside(manifest: str | Path) -> Path:
    """The triplet file of a built-in composed dataset's manifest."""
    return Path(manifest).parent / "triplets.jsonl"


def fetch_css(cache_dir: Path | None = None, **_: object) -> Path:
    out = _root(cache_dir, "css")
    if not (out / "manifest.jsonl").is_file():
        make_css_dataset(out, n_train=CSS_TRAIN, n_test=CSS_TEST, seed=0)
    return out / "manifest.jsonl"


def fetch_cci(cache_dir: Path | None = None, **_: object) -> Path:
    out = _root(cache_dir, "cci")
    if not (out / "manifest.jsonl").is_file():
        make_cci_dataset(out, seed=0)
    return out / "manifest.jsonl"


def fetch_emoji_edits(cache_dir: Path | None = None, **_: object) -> Path:
    out = _root(cache_dir, "emoji-edits")
    if not (out / "dataset.json").is_file():  # written last by the build
        fetch_emoji(cache_dir)
        build_emoji_edits(_root(cache_dir, "emoji") / "packages", out, seed=0)
    return out / "manifest.jsonl"


def fetch_icons(cache_dir: Path | None = None, **_: object) -> Path:
    return fetch_icon_edits(cache_dir)[0]
