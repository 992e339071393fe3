"""Encode images and texts through the feature cache, with progress bars and resumability.

``encode_images`` / ``encode_texts`` look every input up in the cache by content hash, encode
only the missing ones in chunks (each chunk saved as a cache shard as soon as it is done, so an
interrupted run resumes where it stopped) and return the features in input order.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from xmr.encoders.base import Encoder, ImageEncoder, TextEncoder
from xmr.encoders.cache import FeatureCache, text_key
from xmr.encoders.image_io import UnreadableImage, check_image_file
from xmr.encoders.loading import loaded_by_workers, loader_of
from xmr.errors import XmrError
from xmr.utils.io import sha1_file
from xmr.utils.progress import progress

log = logging.getLogger(__name__)

CHUNK = 512  # inputs per saved cache shard
_END = object()
T = TypeVar("T")
U = TypeVar("U")


@dataclass
class EncodeResult:
    """Features in input order; rows of inputs that could not be read are NaN and ``ok`` False."""

    feats: np.ndarray
    ok: np.ndarray
    n_encoded: int = 0
    n_cached: int = 0
    errors: list[XmrError | None] = field(default_factory=list)  # per input: why its row is NaN (or None)

    @property
    def bad(self) -> list[XmrError]:
        """The errors of the unreadable inputs, in input order."""
        return [e for e in self.errors if e is not None]

    @property
    def n_bad(self) -> int:
        return len(self.bad)


def _image_keys(paths: Sequence[str | Path], skip_bad: bool) -> tuple[list[str | None], list[UnreadableImage]]:
    """Content keys of the image files; a file that is not a readable regular file has key None.

    Files are checked with ``stat`` before they are opened, so a FIFO or a device never blocks.
    """
    keys: list[str | None] = []
    bad: list[UnreadableImage] = []
    for p in paths:
        try:
            check_image_file(p)
            keys.append(sha1_file(p))
        except UnreadableImage as e:
            if not skip_bad:
                raise
            keys.append(None)
            bad.append(e)
        except OSError as e:
            err = UnreadableImage(p, f"cannot read image ({(e.strerror or str(e)).lower()})")
            if not skip_bad:
                raise err from None
            keys.append(None)
            bad.append(err)
    return keys, bad


def _prefetched(pool: ThreadPoolExecutor, fn: Callable[[T], U], items: Sequence[T], ahead: int) -> Iterator[U]:
    """``map(fn, items)`` in order, computed by ``pool`` at most ``ahead`` items in advance.

    Loading runs in the pool's threads while the caller encodes what is already loaded, and
    the bound keeps memory flat however long the list is.
    """
    pending: deque[Future[U]] = deque()
    it = iter(items)
    for x in itertools.islice(it, ahead):
        pending.append(pool.submit(fn, x))
    while pending:
        done = pending.popleft().result()
        for nxt in itertools.islice(it, 1):
            pending.append(pool.submit(fn, nxt))
        yield done


def _run(encoder: Encoder, cache: FeatureCache, todo: list[tuple[str, object]], batch_size: int,
         skip_bad: bool, desc: str, show: bool | None) -> tuple[int, dict[str, XmrError]]:
    """Encode ``todo`` [(key, source)] into the cache. Returns (n encoded, {bad key: its error}).

    Batches are encoded as soon as their inputs are loaded (by this process's two reading threads, or by
    DataLoader workers: :mod:`xmr.encoders.loading`; the same batches either way); every ``CHUNK`` inputs
    the features so far are written as one cache shard (what an interruption can lose).
    """
    bad: dict[str, XmrError] = {}
    loaded_keys: list[str] = []   # loaded, not yet encoded
    loaded_inputs: list[object] = []
    done_keys: list[str] = []     # encoded, not yet in the cache
    done_feats: list[np.ndarray] = []
    n_done = 0
    bar = progress(total=len(todo), desc=desc, disable=None if show is None else not show,
                   unit=encoder.modality)
    with _loaded(encoder, todo, batch_size, skip_bad) as loaded:
        for i, ((key, _), item) in enumerate(zip(todo, loaded), start=1):
            if isinstance(item, XmrError):
                if not skip_bad:
                    raise item
                bad[key] = item
            else:
                loaded_keys.append(key)
                loaded_inputs.append(item)
            flush = i % CHUNK == 0 or i == len(todo)
            if loaded_inputs and (len(loaded_inputs) == batch_size or flush):
                done_feats.append(encoder.encode_batch(loaded_inputs))
                done_keys += loaded_keys
                loaded_keys, loaded_inputs = [], []
            if flush and done_keys:
                cache.put(done_keys, np.concatenate(done_feats))
                n_done += len(done_keys)
                done_keys, done_feats = [], []
            bar.update(1)
    bar.close()
    return n_done, bad


@contextlib.contextmanager
def _loaded(encoder: Encoder, todo: list[tuple[str, object]], batch_size: int,
            skip_bad: bool) -> Iterator[Iterator[object]]:
    """``encoder.load`` of each source of ``todo``, in order (an unreadable one: its XmrError): by the
    DataLoader workers of the encoder's :class:`~xmr.encoders.loading.LoaderConfig` (images), else by two
    threads of this process, ahead of the encoder."""
    load: Callable[[object], object] = encoder.load  # type: ignore[attr-defined]  # image and text encoders both have load()
    config = loader_of(encoder)
    if config is not None and config.workers > 0 and encoder.modality == "image" and todo:
        loaded = loaded_by_workers(load, [src for _, src in todo], batch_size=batch_size, config=config)
        try:
            yield loaded
        finally:
            loaded.close()  # stopped early (an unreadable file raised): the workers stop now
        return
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield _prefetched(pool, lambda kv: _load_one(load, kv[1], skip_bad), todo, ahead=2 * batch_size)


def _load_one(load: Callable[[object], object], source: object, skip_bad: bool) -> object:
    try:
        return load(source)
    except XmrError as e:
        if not skip_bad:
            raise
        return e


def _gather(cache: FeatureCache, keys: Sequence[str | None], bad_keys: set[str]) -> tuple[np.ndarray, np.ndarray]:
    ok = np.array([k is not None and k not in bad_keys for k in keys], dtype=bool)
    feats = np.full((len(keys), cache.dim), np.nan, dtype=cache.dtype)
    if ok.any():
        feats[ok] = cache.get([k for k, good in zip(keys, ok) if good])  # type: ignore[misc]  # good keys are never None
    return feats, ok


def encode_images(encoder: ImageEncoder, paths: Sequence[str | Path], *, cache_dir: str | Path,
                  batch_size: int | None = None, skip_bad: bool = False,
                  show_progress: bool | None = None) -> EncodeResult:
    """Features of the images at ``paths``, through the cache. Shape: (len(paths), encoder.dim),
    of the encoder's cache dtype (float32, or float16 when ``describe()["dtype"]`` says so).

    With ``skip_bad`` a missing, corrupt or truncated image is counted, logged once
    with the first offender, and its row left NaN with ``ok`` False (``bad`` holds one
    :class:`~xmr.encoders.image_io.UnreadableImage` per such file); by default the first raises.
    Every image with the same content (same key) as a bad one is bad too.
    """
    cache = FeatureCache(cache_dir, encoder.describe())
    keys, bad_files = _image_keys(paths, skip_bad)
    first: dict[str, str | Path] = {}
    for k, p in zip(keys, paths):
        if k is not None and k not in cache and k not in first:
            first[k] = p
    n_new, bad_keys = _run(encoder, cache, list(first.items()), batch_size or encoder.default_batch_size,
                           skip_bad, f"encode images ({encoder.encoder_id})", show_progress)
    feats, ok = _gather(cache, keys, set(bad_keys))
    by_path = {e.path: e for e in bad_files}
    errors: list[XmrError | None] = [None if good else by_path.get(str(p)) if k is None else bad_keys[k]
                                     for p, k, good in zip(paths, keys, ok)]
    res = EncodeResult(feats, ok, n_encoded=n_new, n_cached=int(ok.sum()) - n_new, errors=errors)
    if res.bad:
        log.warning("%d of %d image(s) unreadable; first: %s", res.n_bad, len(paths), res.bad[0])
    return res


def encode_texts(encoder: TextEncoder, texts: Sequence[str], *, cache_dir: str | Path,
                 batch_size: int | None = None, show_progress: bool | None = None) -> EncodeResult:
    """Features of ``texts``, through the cache. Shape: (len(texts), encoder.dim).

    An empty (or whitespace-only) text raises :class:`XmrError` naming its position.
    """
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise XmrError(f"text #{i} is empty")
    cache = FeatureCache(cache_dir, encoder.describe())
    keys = [text_key(t) for t in texts]
    first: dict[str, str] = {}
    for k, t in zip(keys, texts):
        if k not in cache and k not in first:
            first[k] = t
    n_new, _ = _run(encoder, cache, list(first.items()), batch_size or encoder.default_batch_size,
                       False, f"encode texts ({encoder.encoder_id})", show_progress)
    feats, ok = _gather(cache, keys, set())
    return EncodeResult(feats, ok, n_encoded=n_new, n_cached=len(texts) - n_new)
