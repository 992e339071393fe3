"""``xmr data manifest DIR``: a manifest written from a folder of images (see :mod:`xmr.data.folder`).

Every image is opened once (reduced) so that the manifest lists only images xmr can read; the
others are left out and listed, with the reason, in ``<manifest>.skipped.jsonl`` beside it, with
what the scan itself left out (sub-folders that could not be listed, images whose caption
sidecar could not be read: :attr:`xmr.data.folder.FolderScan.skipped`).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xmr.data.folder import FolderScan, scan_folder
from xmr.data.manifest import Item, write_manifest
from xmr.encoders.image_io import UnreadableImage, load_rgb
from xmr.errors import Call, Param, Wording, XmrError, fill, python_wording
from xmr.utils.progress import progress
from xmr.workflows.features import write_skipped

log = logging.getLogger(__name__)

#: a folder's own run, inside it (hidden: a scan of the folder leaves it out; :mod:`xmr.workflows.pretrained`)
FOLDER_RUN = ".xmr"
#: the side an image is decoded at to check it can be read (small: only readability is asked)
CHECK_SIDE = 32


def no_captions_hint(items: Sequence[Item]) -> tuple[str, dict[str, Param]]:
    """What to do with ``items`` when none has a text: training needs captions, searching does not
    (the folder indexed with a pretrained pair, no training: :func:`xmr.workflows.pretrained.index_folder`;
    or with a run one already has). A template and its fields, to end an error or a report with
    (:func:`xmr.errors.fill` words it)::

        text, fields = no_captions_hint(items)
        raise XmrError("nothing to learn from; " + text, **fields)
    """
    parents = {os.path.dirname(os.path.abspath(it.image)) for it in items}
    folder = os.path.commonpath(sorted(parents)) if parents else "FOLDER"
    recursive = (Param("recursive", True),) if len(parents) > 1 else ()
    now = Call("index_folder", Param("images", folder), *recursive)
    search = Call("Searcher.from_run", Param("run_dir", os.path.join(folder, FOLDER_RUN)))
    index = Call("index_run", Param("run_dir", "RUN"), Param("images", folder), *recursive,
                 Param("out_dir", "NEW_INDEX"))
    return ("to search these images now, with no training and no captions: {_now} (a pretrained pair), then "
            "{_search} (README: \"Your own folder of images\"); with a run you already have: {_index}; to train "
            "on them, give them captions (a .txt sidecar beside each image, or {_captions}) and write the manifest "
            "again", {"_now": now, "_search": search, "_index": index, "_captions": Param("captions", "CSV")})


@dataclass(frozen=True)
class FolderManifest:
    """:func:`write_folder_manifest`'s result: where, what went in, what was left out."""

    path: Path
    items: list[Item]
    skipped: tuple[dict[str, str], ...]
    scan: FolderScan
    skipped_path: Path | None = None

    def summary(self, wording: Wording = python_wording) -> str:
        """Lines for a person: counts, splits, texts, what was left out (the parameters and jobs a
        hint names worded by ``wording``: the CLI passes its own)."""
        n = len(self.items)
        lines = [f"{n} images from {self.scan.root} -> {self.path}"]
        splits = Counter(it.split for it in self.items if it.split is not None)
        if splits:
            lines.append("  splits: " + ", ".join(f"{s} {c}" for s, c in sorted(splits.items())))
        with_texts = sum(1 for it in self.items if it.texts)
        lines.append(f"  {with_texts} with texts, {n - with_texts} without (those can be indexed and searched, "
                     "not trained on)" if with_texts < n else f"  all {n} with texts")
        if not with_texts:
            hint, fields = no_captions_hint(self.items)
            lines.append(fill("  no texts at all: {_train} has nothing to learn from; " + hint,
                              {**fields, "_train": Call("train_run")}, wording))
        if self.skipped:
            kinds = Counter(row.get("what", "image") for row in self.skipped)
            shown = [f"{kinds[k]} {name}" for k, name in (("image", "unreadable image(s)"),
                                                          ("sidecar", "image(s) with an unreadable caption sidecar"),
                                                          ("folder", "unreadable sub-folder(s)")) if kinds[k]]
            lines.append(f"  {' + '.join(shown)} left out, listed in {self.skipped_path}")
        if self.scan.n_ignored:
            lines.append(f"  {self.scan.n_ignored} other file(s) passed over (not images by their suffix)")
        return "\n".join(lines)


def skipped_beside(manifest: Path) -> Path:
    """``photos.jsonl`` -> ``photos.skipped.jsonl``: where the images a folder manifest left out are listed."""
    return manifest.with_name(manifest.stem + ".skipped.jsonl")


def readable_items(items: Sequence[Item], *, show_progress: bool | None = None
                   ) -> tuple[list[Item], tuple[dict[str, str], ...]]:
    """``items`` split into those whose image opens and the others (``{"id", "image", "reason"}`` each)."""
    kept, skipped = [], []
    for it in progress(items, desc="checking images", unit="img",
                       disable=None if show_progress is None else not show_progress):
        try:
            load_rgb(it.image, min_side=CHECK_SIDE)
        except UnreadableImage as e:
            skipped.append({"id": it.id, "image": it.image, "reason": e.reason})
            continue
        kept.append(it)
    return kept, tuple(skipped)


def write_folder_manifest(root: str | Path, out: str | Path, *, recursive: bool = False,
                          captions: str | Path | None = None, split_fractions: Sequence[float] | None = None,
                          seed: int = 0, overwrite: bool = False, show_progress: bool | None = None
                          ) -> FolderManifest:
    """Write the manifest of a folder of images (JSONL, or CSV for a ``.csv`` name), atomically.

    Args:
        root: the folder; ``recursive``, ``captions``, ``split_fractions``, ``seed`` as in
            :func:`xmr.data.folder.scan_folder`.
        out: the manifest to write (image paths in it are relative to its folder where they can be).
        overwrite: replace an existing file at ``out`` (refused otherwise: it may be hand-edited).

    Raises:
        XmrError: ``out`` exists (without ``overwrite``), the folder has no readable image.
    """
    out = Path(out)
    if os.path.lexists(out) and not overwrite:
        raise XmrError("{path} exists; pass {overwrite} to replace it, or give another {out}", path=str(out),
                       overwrite=Param("overwrite", True), out=Param("out"))
    scan = scan_folder(root, recursive=recursive, captions=captions, split_fractions=split_fractions, seed=seed)
    kept, unreadable = readable_items(scan.items, show_progress=show_progress)
    skipped = (*scan.skipped, *unreadable)
    if not kept:
        raise XmrError(f"none of the {len(scan.items) + len(scan.skipped)} images or folders of {scan.root} could "
                       f"be read; first: {skipped[0]['image']} ({skipped[0]['reason']})")
    write_manifest(kept, out)
    listed = write_skipped(skipped_beside(out), skipped) if skipped else None
    if not skipped:
        skipped_beside(out).unlink(missing_ok=True)  # a list from an earlier run would be stale
    return FolderManifest(out, kept, skipped, scan, listed)
