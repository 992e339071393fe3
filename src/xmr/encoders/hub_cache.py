"""Model ids resolved from the local Hugging Face cache, strictly offline: a path, never a download.

``org/name`` (or ``org/name@revision``) names the snapshot folder that the hub client's cache
already holds (the layout ``huggingface_hub`` writes; the same folder its
``snapshot_download(repo_id, revision=..., local_files_only=True)`` returns)::

    <cache>/models--org--name/refs/<revision>        the commit hash the revision points at
    <cache>/models--org--name/snapshots/<commit>/    the files (links into ../../blobs/)

``<cache>`` is ``$HF_HUB_CACHE``, else ``$HUGGINGFACE_HUB_CACHE`` (its older name), else
``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``:
the client's own order, read when an id is resolved. The revision is ``main`` by default, a branch
or tag (a file under ``refs/``) or a full 40-digit commit hash (a folder under ``snapshots/``).

Nothing here imports the hub client or opens a connection: an id that the cache lacks is a
one-line :class:`~xmr.errors.XmrError` naming the folder it looked in. The encoder families that
take ids (``hf-clip``, ``open-clip``) look for a local folder of that name first.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from xmr.errors import XmrError

#: ``org/name`` or ``name``, then an optional ``@revision`` (the hub's repository-name characters)
_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*(?:/[A-Za-z0-9][\w.-]*)?)(?:@(?P<rev>[\w.][\w./-]*))?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
DEFAULT_REVISION = "main"


@dataclass(frozen=True)
class ModelId:
    """A parsed model id: ``repo`` (``org/name``) and ``revision`` (``main`` unless given)."""

    repo: str
    revision: str = DEFAULT_REVISION

    def pinned(self, commit: str) -> str:
        """The id at a commit: ``org/name@<commit>`` (what a run stores, so it reads the same snapshot later)."""
        return f"{self.repo}@{commit}"


def parse_model_id(text: str) -> ModelId | None:
    """``text`` as a model id, or None when it cannot be one (an absolute path, ``..``, spaces)."""
    m = _ID.match(text)
    if m is None or ".." in text.split("@", 1)[0] or ".." in (m["rev"] or "").split("/"):
        return None
    return ModelId(m["repo"], m["rev"] or DEFAULT_REVISION)


def hub_cache_dir() -> Path:
    """The hub client's cache folder, from the environment as the client reads it (see the module docstring)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(os.path.expanduser(explicit)))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def repo_folder(cache: Path, repo: str) -> Path:
    """The cache's folder of one model repository: ``models--org--name``."""
    return cache / ("models--" + repo.replace("/", "--"))


def snapshot_commit(model: ModelId, cache: Path | None = None, *, family: str = "model") -> tuple[Path, str]:
    """The snapshot folder of ``model`` in the cache and its commit hash; never downloads.

    Raises:
        XmrError (one line, naming where it looked): the cache has no such repository, no such
        revision (no ``refs/<revision>`` file and not a commit it holds), or the revision points at
        a snapshot the cache does not hold (a partly deleted cache).
    """
    cache = hub_cache_dir() if cache is None else cache
    where = repo_folder(cache, model.repo)
    if not where.is_dir():
        raise XmrError(f"{family} {model.repo}: no such local folder, and the Hugging Face cache {cache} has no "
                       f"{where.name} (xmr never downloads: fetch the model there first, or set HF_HOME / "
                       "HF_HUB_CACHE to the cache that holds it)")
    if _COMMIT.match(model.revision):
        commit = model.revision
    else:
        ref = where / "refs" / model.revision
        try:
            commit = ref.read_text(encoding="utf-8").strip() if ref.is_file() else ""
        except (OSError, UnicodeDecodeError) as e:
            raise XmrError(f"{family} {model.repo}: cannot read {ref} ({type(e).__name__})") from None
        if not commit:
            raise XmrError(f"{family} {model.repo}: the Hugging Face cache has no revision {model.revision!r} of "
                           f"it (no file {ref})")
        if not _COMMIT.match(commit):
            raise XmrError(f"{family} {model.repo}: {ref} does not hold a commit hash")
    snapshot = where / "snapshots" / commit
    if not snapshot.is_dir():
        named = "" if commit == model.revision else f" ({where / 'refs' / model.revision} names it)"
        raise XmrError(f"{family} {model.repo}@{model.revision}: the Hugging Face cache has no snapshot {commit}: "
                       f"no folder {snapshot}{named}")
    return snapshot, commit


def resolve_local_or_cached(arg: str, *, family: str) -> tuple[Path, str] | None:
    """What ``arg`` names: ``(folder, canonical)`` for an existing local path (made absolute) or a model id in
    the cache (``org/name@<commit>``); None when ``arg`` is neither an existing path nor an id. An id the
    cache lacks raises the one-line XmrError of :func:`snapshot_commit`."""
    path = Path(os.path.expanduser(arg))
    if path.exists():
        return path, os.path.abspath(path)
    model = parse_model_id(arg)
    if model is None:
        return None
    snapshot, commit = snapshot_commit(model, family=family)
    return snapshot, model.pinned(commit)
