"""Images read for the encoders in ``torch.utils.data.DataLoader`` worker processes.

On a GPU the decoder is the bottleneck, not the network: decoding, resizing and augmenting an image
(the encoder's ``load``) costs more than its forward pass, so :func:`loaded_by_workers` runs
``encoder.load`` in ``workers`` processes and hands the loaded inputs back **in input order**, one
encoder batch at a time, staged in pinned (page-locked) memory when the batches go to a CUDA device.
The encode pipeline (:mod:`xmr.encoders.pipeline`) then forms exactly the batches the in-process
reader forms, so the features are the same byte for byte.

* Errors stay per item: a worker returns an unreadable file's :class:`~xmr.errors.XmrError` (naming
  the file) as that item's value; the pipeline skips it or raises it, as in this process.
* Workers start by ``fork`` where the platform has it (nothing is pickled: the encoder, even one placed on a
  GPU, is inherited and only its ``load`` runs there), else by ``spawn`` (the encoder's ``load`` must then
  pickle); each runs torch at one thread, so N workers and the encoder do not oversubscribe the cores, and
  reads images with the parent's limits (:func:`~xmr.encoders.image_io.current_image_read`).
* A worker that sends nothing for ``timeout_s`` (a file on a stalled mount) or dies stops the encoding
  with one error instead of hanging it; files are checked with ``stat`` before they are opened
  (:func:`~xmr.encoders.image_io.check_image_file`), so a FIFO never blocks a worker.

:func:`place_encoder <xmr.encoders.placement.place_encoder>` gives an encoder its
:class:`LoaderConfig` from the command's runtime (``loader_workers``); :func:`loader_of` finds it,
through the wrappers that read with their base encoder's ``load`` (augmented views, trunks).
"""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from xmr.encoders.image_io import ImageReadConfig, current_image_read, set_image_read
from xmr.errors import XmrError


@dataclass(frozen=True)
class LoaderConfig:
    """How an encoder's inputs are read (the single source of these defaults).

    Attributes:
        workers: DataLoader worker processes (0: read in this process, two threads ahead).
        pin_memory: stage each batch in page-locked memory (a CUDA device: faster, asynchronous copies).
        timeout_s: the longest wait for one batch from the workers before the encoding stops.
        prefetch_batches: batches each worker reads ahead (bounds the memory of the loaded images).
    """

    workers: int = 0
    pin_memory: bool = False
    timeout_s: float = 300.0
    prefetch_batches: int = 2

    def __post_init__(self) -> None:
        if self.workers < 0 or self.timeout_s <= 0 or self.prefetch_batches < 1:
            raise XmrError(f"invalid loader settings: {self}")


def loader_of(encoder: object) -> LoaderConfig | None:
    """The :class:`LoaderConfig` given to ``encoder`` or to the base encoder it reads with (None: none)."""
    seen: set[int] = set()
    while encoder is not None and id(encoder) not in seen:
        seen.add(id(encoder))
        config = getattr(encoder, "loader", None)
        if isinstance(config, LoaderConfig):
            return config
        encoder = getattr(encoder, "base", None)
    return None


class _Loads(Dataset[object]):
    """``dataset[i]``: ``load(sources[i])``, or the :class:`XmrError` it raised (a value, never raised)."""

    def __init__(self, load: Callable[[object], object], sources: Sequence[object]) -> None:
        self.load, self.sources = load, sources

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> object:
        try:
            return self.load(self.sources[i])
        except XmrError as e:
            return e


def _collate(items: list[object]) -> object:
    """One batch for the trip to the main process: arrays of one shape and dtype as one stacked tensor (one
    shared-memory block, pinned on the way), anything else (an error among them) as the list itself."""
    first = items[0]
    if isinstance(first, np.ndarray) and all(
            isinstance(x, np.ndarray) and x.shape == first.shape and x.dtype == first.dtype for x in items):
        return torch.from_numpy(np.stack(items))  # type: ignore[arg-type]  # checked: every item is an array
    return items


def _unbatched(batch: object) -> Iterator[object]:
    """The loaded inputs of one collated batch, in order; a stacked tensor's rows as numpy arrays (views)."""
    if isinstance(batch, torch.Tensor):
        yield from (row.numpy() for row in batch)
    else:
        yield from batch  # type: ignore[misc]  # _collate made it a list


def _start_method() -> str:
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _worker_init(read: ImageReadConfig, worker_id: int) -> None:
    """Each worker: torch at one thread (N workers + the encoder: no oversubscription) and the parent's
    image-reading limits (which ``spawn`` would not inherit)."""
    torch.set_num_threads(1)
    set_image_read(read)


def loaded_by_workers(load: Callable[[object], object], sources: Sequence[object], *, batch_size: int,
                      config: LoaderConfig) -> Generator[object, None, None]:
    """``map(load, sources)`` in order, computed by ``config.workers`` DataLoader processes a batch at a time.

    Args:
        load: the encoder's ``load`` (decode + resize + augment); an :class:`XmrError` it raises is that
            item's value.
        sources: the inputs (image paths or bytes), in order.
        batch_size: inputs per batch a worker reads (the encoder's batch size).
        config: the workers, pinning, timeout and read-ahead.

    Yields:
        Each source's loaded input (a numpy array of a same-shape batch is a view of its batch) or its error.

    Raises:
        XmrError: the workers sent nothing for ``config.timeout_s`` or one of them died.
    """
    read = current_image_read()
    loader = DataLoader(_Loads(load, sources), batch_size=batch_size, shuffle=False,
                        num_workers=config.workers, collate_fn=_collate, pin_memory=config.pin_memory,
                        timeout=config.timeout_s, prefetch_factor=config.prefetch_batches,
                        worker_init_fn=functools.partial(_worker_init, read),
                        multiprocessing_context=_start_method())
    batches = iter(loader)
    finished = False
    try:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                finished = True
                return
            except RuntimeError as e:  # torch's words for a timeout or a dead worker
                raise XmrError("reading images in {workers} worker process(es) failed: {why}",
                               workers=config.workers, why=str(e).splitlines()[0]) from None
            yield from _unbatched(batch)
    finally:
        if not finished:  # stopped early (an error, a hung worker): the workers are stopped now, not after their files
            for worker in getattr(batches, "_workers", ()):
                worker.terminate()
