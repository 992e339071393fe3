"""Micro-batching: concurrent requests' inputs encoded in one encoder call.

A request thread hands its input to :class:`MicroBatcher` and waits; a worker thread takes
whatever has arrived — up to ``max_batch`` inputs, waiting at most ``max_wait`` seconds after the
first — runs the batch function once and hands each thread its own row. Under load the encoder
runs on batches (MiniLM costs a few ms per sentence alone, less per sentence in a batch); a
lone request waits only ``max_wait``. With ``workers > 1`` that many threads take batches from
one queue, for a batch function that may run in several threads at once (a one-thread ONNX
session per call: two calls use two cores with no thread pool to wake).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """``batcher(x)`` = ``fn([x, ...])[i]`` for the batch ``x`` joined (see the module docstring).

    ``fn`` takes a list of inputs and returns one result per input, in order. If it raises,
    every caller of that batch gets the exception.
    """

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], *, max_batch: int = 32, max_wait: float = 0.002,
                 workers: int = 1, on_batch: Callable[[int], None] | None = None) -> None:
        if max_batch < 1 or max_wait < 0 or workers < 1:
            raise ValueError("max_batch and workers must be >= 1 and max_wait >= 0")
        self.fn, self.max_batch, self.max_wait, self.workers = fn, max_batch, max_wait, workers
        self.on_batch = on_batch  # called with each batch's size (metrics)
        self._queue: queue.Queue[tuple[T, Future[R]]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.batches = 0  # how many calls of fn, for tests and metrics
        self.inputs = 0

    def __call__(self, x: T) -> R:
        if not self._threads:
            with self._start_lock:
                if not self._threads:
                    self._threads = [threading.Thread(target=self._run, name=f"xmr-microbatch-{i}", daemon=True)
                                     for i in range(self.workers)]
                    for t in self._threads:
                        t.start()
        fut: Future[R] = Future()
        self._queue.put((x, fut))
        return fut.result()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch:
                left = deadline - time.perf_counter()
                try:
                    batch.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            inputs = [x for x, _ in batch]
            try:
                results = self.fn(inputs)
                if len(results) != len(inputs):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(inputs)} inputs")
            except BaseException as e:  # noqa: BLE001  (handed to every waiting caller)
                for _, fut in batch:
                    fut.set_exception(e)
                continue
            with self._count_lock:
                self.batches += 1
                self.inputs += len(inputs)
            if self.on_batch is not None:
                self.on_batch(len(inputs))
            for (_, fut), r in zip(batch, results):
                fut.set_result(r)
