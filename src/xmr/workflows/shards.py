"""Encoded partitions of a manifest on disk: one ``.npz`` shard per partition, written atomically.

Layout of a shard folder::

    plan.json               what is encoded: encoders, partition bounds, the items' digest
    part-00000.npz          image_feats (n, d_img), text_feats (m, d_txt), item rows, texts,
    part-00001.npz          relevance (item -> its texts, CSR), skipped (unreadable images)
    ...

A shard exists only once its partition is complete (written to a temporary name, renamed), so
a re-run of the same plan skips every partition that has its shard, and the shards of a plan
are a :class:`~xmr.workflows.features.FeatureSet` cut into pieces: :func:`read_shard` gives one
back, and concatenating them in order gives what the single-process encode gives.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from xmr.data.manifest import Item
from xmr.errors import Param, XmrError
from xmr.utils.io import atomic_write, load_json, save_json
from xmr.workflows.features import FeatureSet

PLAN_FILE = "plan.json"


def shard_name(p: int) -> str:
    return f"part-{p:05d}.npz"


@dataclass(frozen=True)
class ShardPlan:
    """How a manifest is cut: ``bounds[p] = (start, stop)`` item rows of partition ``p``."""

    image_encoder: str
    text_encoder: str
    digest: str  # SHA-1 of the items' rows, in order
    bounds: tuple[tuple[int, int], ...]

    @classmethod
    def make(cls, items: Sequence[Item], *, image_encoder: str, text_encoder: str, partitions: int) -> ShardPlan:
        if not items:
            raise XmrError("nothing to encode: the manifest has no items")
        if partitions < 1:
            raise XmrError("{partitions} must be >= 1", partitions=Param("partitions", partitions))
        n, p = len(items), min(partitions, len(items))
        edges = np.linspace(0, n, p + 1).round().astype(int)
        digest = hashlib.sha1()
        for it in items:
            digest.update(json.dumps(it.to_row(), sort_keys=True).encode())
        return cls(image_encoder, text_encoder, digest.hexdigest(),
                   tuple((int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)))

    def to_dict(self) -> dict[str, object]:
        return {"format": "xmr.shards", "version": 1, "image_encoder": self.image_encoder,
                "text_encoder": self.text_encoder, "digest": self.digest, "bounds": [list(b) for b in self.bounds]}


def prepare(folder: Path, plan: ShardPlan) -> list[int]:
    """Write ``plan.json`` in ``folder`` (or check it is the plan there); the partitions still to encode.

    Raises:
        XmrError: the folder holds the shards of another manifest, cut or encoder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PLAN_FILE
    if path.exists():
        saved = load_json(path)
        if saved != plan.to_dict():
            what = ("other encoders" if isinstance(saved, dict) and (saved.get("image_encoder"), saved.get(
                "text_encoder")) != (plan.image_encoder, plan.text_encoder) else "another manifest or partition count")
            raise XmrError("{folder} holds the shards of {what}; give another {shards} folder or remove it",
                           folder=str(folder), what=what, shards=Param("shards"))
    else:
        save_json(path, plan.to_dict())
    return [p for p in range(len(plan.bounds)) if not (folder / shard_name(p)).is_file()]


def write_shard(folder: Path, p: int, fs: FeatureSet) -> Path:
    """Write partition ``p``'s features atomically (a crash leaves no shard, never half of one)."""
    rows = json.dumps([it.to_row() for it in fs.items], ensure_ascii=False)
    rel = fs.relevance.tocsr()
    path = folder / shard_name(p)
    with atomic_write(path) as fh:
        np.savez(fh, image_feats=fs.image_feats, text_feats=fs.text_feats, items=np.array(rows),
                 texts=np.array(json.dumps(fs.texts, ensure_ascii=False)), rel_indptr=rel.indptr,
                 rel_indices=rel.indices, skipped=np.array(json.dumps(list(fs.skipped))))
    return path


def read_shard(path: Path) -> FeatureSet:
    """The :class:`FeatureSet` of one shard (image paths as they were encoded: absolute)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            items = [Item(id=r["id"], image=r["image"], texts=tuple(r.get("texts") or ()), label=r.get("label"),
                          group=r.get("group"), style=r.get("style"), split=r.get("split"))
                     for r in json.loads(str(z["items"]))]
            texts = json.loads(str(z["texts"]))
            rel = sparse.csr_matrix((np.ones(z["rel_indices"].size, dtype=bool), z["rel_indices"], z["rel_indptr"]),
                                    shape=(len(items), len(texts)))
            return FeatureSet(items, z["image_feats"], texts, z["text_feats"], rel,
                              tuple(json.loads(str(z["skipped"]))))
    except (OSError, ValueError, KeyError) as e:
        raise XmrError(f"{path}: not a readable feature shard ({e}); remove it and encode again") from None


def read_plan(folder: Path) -> ShardPlan:
    saved = load_json(folder / PLAN_FILE)
    if not isinstance(saved, dict) or saved.get("format") != "xmr.shards":
        raise XmrError(f"{folder / PLAN_FILE}: not a shard plan")
    return ShardPlan(str(saved["image_encoder"]), str(saved["text_encoder"]), str(saved["digest"]),
                     tuple((int(a), int(b)) for a, b in saved["bounds"]))


def iter_shards(folder: Path) -> Iterator[FeatureSet]:
    """Every shard of a complete plan, in partition order.

    Raises:
        XmrError: a partition has no shard yet (naming it and the command that finishes them).
    """
    plan = read_plan(folder)
    missing = [p for p in range(len(plan.bounds)) if not (folder / shard_name(p)).is_file()]
    if missing:
        raise XmrError("{folder}: {n_missing} of {n} partitions are not encoded yet (first: {first}); run the same "
                       "encoding with {shards} again", folder=str(folder), n_missing=len(missing), n=len(plan.bounds),
                       first=shard_name(missing[0]), shards=Param("shards", str(folder)))
    for p in range(len(plan.bounds)):
        yield read_shard(folder / shard_name(p))


def shard_bytes(folder: Path) -> int:
    return sum(os.path.getsize(folder / shard_name(p)) for p in range(len(read_plan(folder).bounds))
               if (folder / shard_name(p)).is_file())
