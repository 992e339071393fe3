"""On-disk feature cache keyed by (encoder id, content hash).

Layout (one folder per encoder id)::

    <root>/<encoder_id>/encoder.json      what produced the vectors (id, modality, dim[, dtype])
    <root>/<encoder_id>/shard-<time>-<pid>-<rand>.npz   keys (n,) str + feats (n, dim) of the dtype
    <root>/<encoder_id>/shard-...npz                    ...

The dtype is the encoder's ``describe()["dtype"]``: ``"float32"`` when absent (every frozen
encoder, and every cache written before dtypes existed) or ``"float16"`` (trunk activations,
:mod:`xmr.encoders.trunk`: half the bytes). Vectors are stored and returned in that dtype (a
float16 cache is never widened to float32 in memory).

Shards are append-only and each is written atomically under a name no other writer can pick
(time, process id and a random part), so an interrupted encode keeps every finished shard, a
re-run encodes only what is missing, and two processes encoding into one cache never overwrite
or delete each other's shards (a merge removes only the shards it read). Keys are SHA-1 hex digests of the
image file bytes or of the UTF-8 text, so renaming a file does not re-encode it and changing
its content does.

The folder is the encoder id, not the device that computed the vectors: a GPU's features differ
from the CPU's by rounding only, so a cache filled on one device serves every other. Features
computed at a reduced precision (``--precision bf16`` / ``fp16``) go to a folder of their own,
``<encoder id>@<precision>`` (:mod:`xmr.encoders.placement`): bf16 features are within a cosine of
0.999 of fp32's (measured: >= 0.99998 for MiniLM and the toy and tiny CLIP encoders, >= 0.9996 for
EfficientNet-Lite0 on noise images), close, but not the fp32 features an fp32 run expects.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xmr.errors import XmrError
from xmr.utils.io import atomic_write, ensure_folder, load_json, save_json

log = logging.getLogger(__name__)

#: the dtypes a cache can hold (``describe()["dtype"]``); the first is the default
CACHE_DTYPES = ("float32", "float16")
_MERGE_AT = 64  # shards; past this, open() merges them into one
_RELIST_TRIES = 5  # listings of the shard folder while other processes merge it
_MERGE_LOCK = ".merge.lock"


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", name)


def cache_dtype(describe: dict[str, object]) -> np.dtype:
    """The dtype an encoder's vectors are cached in: ``describe["dtype"]``, float32 when absent."""
    name = describe.get("dtype", CACHE_DTYPES[0])
    if name not in CACHE_DTYPES:
        raise XmrError(f"encoder {describe.get('encoder_id')!r} describes a feature dtype of {name!r}; "
                       f"a feature cache holds {' or '.join(CACHE_DTYPES)}")
    return np.dtype(str(name))


class FeatureCache:
    """Vectors of one encoder, addressable by content key.

    Args:
        root: the cache root folder (shared by all encoders).
        describe: the encoder's :meth:`~xmr.encoders.base.Encoder.describe` dict; a folder
            written by a different encoder (other dim, modality or dtype) is refused. Its
            ``"dtype"`` (default float32) is :attr:`dtype`.
    """

    def __init__(self, root: str | Path, describe: dict[str, object]) -> None:
        self.describe = describe
        dim = describe["dim"]
        if not isinstance(dim, int) or dim < 1:
            raise XmrError(f"encoder {describe.get('encoder_id')!r} describes a feature size of {dim!r}")
        self.dim = dim
        self.dtype = cache_dtype(describe)
        self.dir = Path(root) / _safe(str(describe["encoder_id"]))
        ensure_folder(self.dir, "feature cache")
        meta = self.dir / "encoder.json"
        if meta.exists():
            saved = load_json(meta)
            if saved != describe:
                raise XmrError(f"feature cache {self.dir} was written by {saved}, not {describe}; "
                               "use another cache folder or delete it")
        else:
            save_json(meta, describe)
        self._keys: dict[str, int] = {}
        self._feats = np.zeros((0, self.dim), dtype=self.dtype)
        self._load()

    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.npz"))

    def _load(self) -> None:
        """Read every shard. A shard that vanishes meanwhile was merged by another process:
        the merged shard is written before the old ones are removed, so listing again finds it."""
        read: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
        for _ in range(_RELIST_TRIES):
            vanished = False
            for shard in self._shards():
                if shard in read:
                    continue
                try:
                    with np.load(shard, allow_pickle=False) as z:
                        k, f = z["keys"], z["feats"]
                except FileNotFoundError:
                    vanished = True
                    continue
                except Exception as e:  # a shard we cannot read is dropped, not fatal
                    log.warning("ignoring unreadable cache shard %s (%s)", shard, e)
                    continue
                if f.ndim != 2 or f.shape[1] != self.dim or len(k) != len(f):
                    log.warning("ignoring cache shard %s with shape %s (expected dim %d)", shard, f.shape, self.dim)
                    continue
                read[shard] = (k, f)
            if not vanished:
                break
        # shards read before and after another process merged them may repeat keys: keep one row each
        self._read = list(read)
        if read:
            self._feats = np.concatenate([f for _, f in read.values()]).astype(self.dtype, copy=False)
            all_keys = np.concatenate([k for k, _ in read.values()])
            self._keys = {str(k): i for i, k in enumerate(all_keys)}
        if len(read) > _MERGE_AT:
            self._merge()

    def _merge(self) -> None:
        """Rewrite the shards this process read as one; shards written since by others stay.

        One process merges at a time (an advisory lock); the others skip it and keep reading
        the many small shards, which is correct, only slower.
        """
        try:
            lock = open(self.dir / _MERGE_LOCK, "a")
        except OSError:
            return  # a read-only cache is still a cache
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return
            keys = sorted(self._keys, key=lambda k: self._keys[k])
            rows = np.fromiter((self._keys[k] for k in keys), dtype=np.int64, count=len(keys))
            # a key cached twice (two writers encoded it) keeps one row: keys and rows stay aligned
            self._feats = self._feats[rows]
            self._keys = {k: i for i, k in enumerate(keys)}
            try:
                self._write_shard(np.array(keys), self._feats)
            except XmrError as e:  # a full disk: keep the shards as they are
                log.warning("feature cache %s not merged: %s", self.dir, e)
                return
            for p in self._read:
                p.unlink(missing_ok=True)  # another process may have merged them already
            self._read = []

    def _write_shard(self, keys: np.ndarray, feats: np.ndarray) -> None:
        # sortable by time, unique across processes: concurrent writers never pick the same name
        name = f"shard-{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.npz"
        with atomic_write(self.dir / name, "wb") as fh:
            np.savez(fh, keys=keys.astype(str), feats=feats.astype(self.dtype, copy=False))

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def missing(self, keys: Sequence[str]) -> list[str]:
        """The distinct keys of ``keys`` not yet cached, in first-seen order."""
        seen: set[str] = set()
        out = []
        for k in keys:
            if k not in self._keys and k not in seen:
                seen.add(k)
                out.append(k)
        return out

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """Vectors for ``keys``, of :attr:`dtype`. Shape: (len(keys), dim). Every key must be cached."""
        try:
            rows = np.fromiter((self._keys[k] for k in keys), dtype=np.int64, count=len(keys))
        except KeyError as e:
            raise XmrError(f"feature for key {e.args[0]} is not in the cache {self.dir}") from None
        return self._feats[rows]

    def put(self, keys: Sequence[str], feats: np.ndarray) -> None:
        """Append vectors (one new shard, written atomically), stored as :attr:`dtype`.
        Shape: (len(keys), dim). A NaN / inf, or a value past the dtype's range, is refused."""
        given = np.asarray(feats)
        if given.shape != (len(keys), self.dim):
            raise XmrError(f"expected feats of shape ({len(keys)}, {self.dim}), got {given.shape}")
        if not np.isfinite(given).all():
            raise XmrError(f"encoder {self.describe['encoder_id']} produced NaN/inf features")
        with np.errstate(over="ignore"):
            feats = given.astype(self.dtype, copy=False)
        if not np.isfinite(feats).all():
            raise XmrError(f"encoder {self.describe['encoder_id']} produced features beyond the {self.dtype} "
                           f"range (|x| > {np.finfo(self.dtype).max:g})")
        if not len(keys):
            return
        self._write_shard(np.asarray(keys), feats)
        base = len(self._feats)
        self._feats = np.concatenate([self._feats, feats])
        for i, k in enumerate(keys):
            self._keys[str(k)] = base + i
