"""How many threads torch and FAISS use, and how their idle threads wait: xmr on a busy machine.

torch and FAISS parallelise with OpenMP, whose idle threads spin by default (busy-wait for work).
On a machine whose cores are also running other jobs, a spinning thread burns the slice the thread
it waits for needs, and every small parallel region waits a scheduler slice: a 120-step InfoNCE
loop of the demo's head sizes ran 80-96 s at torch's default 2 threads beside two CPU-bound
processes on 2 cores, 9-13 s at 1 thread, 9.0 s at 2 threads with ``OMP_WAIT_POLICY=PASSIVE``
(issue 25; ``benchmarks/bench_busy.py`` measures the whole commands).

So the ``xmr`` entry point, before torch or FAISS is imported, sets ``OMP_WAIT_POLICY=PASSIVE``
unless the environment already sets it (OpenMP reads it once, when its runtime loads; from Python,
call :func:`quiet_openmp` before ``import torch``), and runs each command at a thread count chosen
for its work (:class:`ThreadConfig`):

* heavy work -- encoders' forward and backward passes (encoding, fine-tuned tails), FAISS builds
  and batched searches -- on every core this process may run on;
* light work -- projection heads trained on cached features -- on ``light_threads`` (1): its
  parallel regions are too small to pay for a second thread's start and join, and one thread
  cannot wait for a descheduled other.

``--threads N`` / ``$XMR_THREADS`` set one count for both. ONNX Runtime (the int8 MiniLM) takes
its threads from the encoder (one, not spinning, by default).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from xmr.errors import XmrError
from xmr.utils.numbers import NumberRange

THREADS_ENV = "XMR_THREADS"
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
Work = Literal["heavy", "light"]
WORKS: tuple[Work, ...] = ("heavy", "light")
#: the thread counts ``--threads`` / ``$XMR_THREADS`` take
THREADS_RANGE = NumberRange(lo=1, hi=1024, whole=True)


@dataclass(frozen=True)
class ThreadConfig:
    """Thread counts of a command (the single source of these defaults).

    Attributes:
        threads: threads of every kind of work; None = chosen per work (``auto``).
        light_threads: threads of light work when ``threads`` is None.
        wait_policy: ``OMP_WAIT_POLICY`` set at start where the environment does not set it.
    """

    threads: int | None = None
    light_threads: int = 1
    wait_policy: str = "PASSIVE"

    def __post_init__(self) -> None:
        if self.threads is not None and not THREADS_RANGE.contains(self.threads):
            raise XmrError(f"threads must be {THREADS_RANGE.describe()} or None (auto), got {self.threads!r}")
        if self.light_threads < 1:
            raise XmrError(f"light_threads must be >= 1, got {self.light_threads}")
        if self.wait_policy.upper() not in ("PASSIVE", "ACTIVE"):
            raise XmrError(f"wait_policy must be PASSIVE or ACTIVE, got {self.wait_policy!r}")

    def for_work(self, work: Work) -> int:
        """Threads for ``work``: the explicit count, else every usable core (heavy) or
        ``light_threads`` (light, at most the cores)."""
        if work not in WORKS:
            raise XmrError(f"work must be one of {', '.join(WORKS)}, got {work!r}")
        if self.threads is not None:
            return int(self.threads)
        cores = usable_cores()
        return cores if work == "heavy" else min(self.light_threads, cores)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def parse_threads(text: str, *, source: str | None = None) -> int | None:
    """``"auto"`` -> None; ``"4"`` -> 4; anything else (``0``, ``1.5``, ``inf``, ``two``) -> a one-line
    error (naming ``source`` if given), checked by :data:`THREADS_RANGE` like every number xmr takes."""
    if text.strip().lower() in ("", "auto"):
        return None
    try:
        return int(THREADS_RANGE.parse(text, source))
    except XmrError as e:
        raise XmrError(f"{e} (or auto)") from None


def config_from_env(given: int | None = None) -> ThreadConfig:
    """The command's :class:`ThreadConfig`: ``given`` (``--threads``), else ``$XMR_THREADS``, else auto."""
    if given is not None:
        return ThreadConfig(threads=given)
    text = os.environ.get(THREADS_ENV)
    return ThreadConfig(threads=None if text is None else parse_threads(text, source=f"${THREADS_ENV}"))


def quiet_openmp(config: ThreadConfig | None = None) -> bool:
    """Set ``OMP_WAIT_POLICY`` (default PASSIVE) unless the environment sets it. Effective only
    before the OpenMP runtime loads (``import torch`` / ``import faiss``); returns whether it was
    in time (False once either is imported: the policy of this process is then fixed)."""
    os.environ.setdefault(WAIT_POLICY_ENV, (config or ThreadConfig()).wait_policy.upper())
    return not any(m in sys.modules for m in ("torch", "faiss"))


_current: ThreadConfig = ThreadConfig()


def current_config() -> ThreadConfig:
    """The thread config the running command was started with (:func:`using_config`)."""
    return _current


@contextlib.contextmanager
def using_config(config: ThreadConfig) -> Iterator[None]:
    """Run a command with ``config``: heavy-work threads in torch and FAISS (and, for libraries not
    yet imported, ``OMP_NUM_THREADS``); everything restored afterwards (``xmr.cli.main`` may run
    several times in one process, as the tests do)."""
    global _current
    previous, env_before = _current, os.environ.get("OMP_NUM_THREADS")
    _current = config
    n = config.for_work("heavy")
    os.environ["OMP_NUM_THREADS"] = str(n)
    saved = _set_loaded(n)
    try:
        yield
    finally:
        _current = previous
        if env_before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_before
        _restore(saved)


@contextlib.contextmanager
def work_threads(work: Work, config: ThreadConfig | None = None) -> Iterator[int]:
    """torch (and FAISS, if loaded) at the threads ``config`` (default: the command's) gives
    ``work``, for the block; yields the count."""
    n = (config or _current).for_work(work)
    saved = _set_loaded(n)
    try:
        yield n
    finally:
        _restore(saved)


def _set_loaded(n: int) -> dict[str, int]:
    """Set ``n`` threads in torch / FAISS where already imported; returns their previous counts."""
    saved: dict[str, int] = {}
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        saved["torch"] = torch.get_num_threads()
        if saved["torch"] != n:
            torch.set_num_threads(n)
    faiss = sys.modules.get("faiss")
    if faiss is not None and hasattr(faiss, "omp_set_num_threads"):
        saved["faiss"] = faiss.omp_get_max_threads()
        if saved["faiss"] != n:
            faiss.omp_set_num_threads(n)
    return saved


def _restore(saved: dict[str, int]) -> None:
    torch, faiss = sys.modules.get("torch"), sys.modules.get("faiss")
    if "torch" in saved and torch is not None and torch.get_num_threads() != saved["torch"]:
        torch.set_num_threads(saved["torch"])
    if "faiss" in saved and faiss is not None and faiss.omp_get_max_threads() != saved["faiss"]:
        faiss.omp_set_num_threads(saved["faiss"])
