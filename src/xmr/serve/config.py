"""The service's settings: one frozen dataclass, the single source of every ``xmr serve`` default."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from xmr.errors import XmrError
from xmr.runtime.config import RuntimeConfig
from xmr.utils.numbers import check_finite_fields

API_KEY_ENV = "XMR_API_KEY"
LOCALHOST = "127.0.0.1"


@dataclass(frozen=True)
class ServeConfig:
    """How ``xmr serve`` runs.

    Attributes:
        host: the address to bind; anything but 127.0.0.1 / localhost is logged as a warning.
        port: the TCP port.
        workers: uvicorn worker processes (each loads the run once).
        max_upload_mb: the largest image upload (multipart file or base64 JSON, decoded), in MB.
        k_max: the largest ``k`` a query may ask for; ``offset + k`` is bounded by it too.
        cache_size: text queries whose embeddings are kept (LRU).
        cors_origins: origins allowed by CORS (empty: CORS off).
        api_key: required on every endpoint but ``/healthz``, the page and ``/docs`` (``X-API-Key``
            header or ``Authorization: Bearer``); None reads ``$XMR_API_KEY`` (unset or empty: no
            key). A key must be printable ASCII without surrounding spaces (what a header carries
            unchanged): another is refused at start, never silently unusable.
        fast_text: encode query texts with the run's text encoder's faster stand-in (int8 ONNX
            MiniLM for ``minilm-l6``: the same features within 1e-3 cosine) when it has one;
            False: the run's own encoder (``--exact-text``).
        torch_threads: torch's intra-op threads in the service (the projection heads, the image
            encoder). 1: a query's tiny head matmuls never wake a thread pool to spin beside the
            text encoder and FAISS (next to a spinning encoder, encoder + head took 11.7 ms at 2
            threads, 3.4 ms at 1; with the int8 encoder's spinning off, 4.4 vs 4.2 ms:
            ``docs/results.md``); image uploads then encode on one core.
        text_workers: encoder calls on query texts that may run at once, for a text encoder that
            allows it (the int8 MiniLM: one thread each; 2 = this project's cores).
        allowed_hosts: names a request's ``Host`` header may carry besides the bound address (and,
            bound to a loopback address, ``localhost`` / ``127.0.0.1`` / ``::1``); ``*``: any. Bound
            to every interface (``0.0.0.0``, ``::``) with none given: any name. A page on another
            site whose name was re-pointed at this machine (DNS rebinding) is refused.
        body_timeout: seconds a request's body may take to arrive, however it is framed
            (``Content-Length``, chunked, multipart); a slower client gets a 408 and is dropped.
        max_decodes: image decodes at once (uploads, and the check of a served gallery image);
            the others wait: each decode of a large image holds its pixels in memory.
        max_filter_values: filter values one query may name, over all its fields.
        runtime: the device and precision the encoders and the model run at, resolved by each worker
            (the query embeddings and the index stay float32 on the CPU).
        graceful_timeout: seconds the requests in flight at SIGTERM may take to finish; those
            still running then are answered 503 and dropped (one log line each, no traceback).
    """

    host: str = LOCALHOST
    port: int = 8000
    workers: int = 1
    max_upload_mb: float = 10.0
    k_max: int = 1000
    cache_size: int = 1024
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    api_key: str | None = None
    fast_text: bool = True
    torch_threads: int = 1
    text_workers: int = 2
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)
    body_timeout: float = 30.0
    max_decodes: int = 2
    max_filter_values: int = 256
    graceful_timeout: float = 10.0
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        check_finite_fields(self)
        if not 0 < self.port < 65536:
            raise XmrError(f"--port must be in 1..65535, got {self.port}")
        if self.workers < 1:
            raise XmrError(f"--workers must be >= 1, got {self.workers}")
        if not self.max_upload_mb > 0:
            raise XmrError(f"--max-upload-mb must be > 0, got {self.max_upload_mb}")
        if self.torch_threads < 1 or self.text_workers < 1:
            raise XmrError(f"torch_threads and text_workers must be >= 1, got {self.torch_threads} and "
                           f"{self.text_workers}")
        if self.k_max < 1 or self.cache_size < 0:
            raise XmrError("k_max must be >= 1 and cache_size >= 0")
        if self.api_key is not None:
            _check_key(self.api_key, "the API key")
        for name, seconds in (("--body-timeout", self.body_timeout), ("--graceful-timeout", self.graceful_timeout)):
            if not (math.isfinite(seconds) and seconds > 0):
                raise XmrError(f"{name} must be a finite number of seconds > 0, got {seconds}")
        if self.max_decodes < 1 or self.max_filter_values < 1:
            raise XmrError(f"--max-decodes and --max-filter-values must be >= 1, got {self.max_decodes} and "
                           f"{self.max_filter_values}")
        if any(not h or h != h.strip() or " " in h for h in self.allowed_hosts):
            raise XmrError(f"--allow-host: a host name without spaces, got {list(self.allowed_hosts)}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_body_bytes(self) -> int:
        """The largest request body: an upload in base64 (4/3) plus the JSON or multipart framing."""
        return self.max_upload_bytes * 4 // 3 + 64 * 1024

    @property
    def is_local(self) -> bool:
        return self.host in (LOCALHOST, "localhost", "::1")

    def key(self) -> str | None:
        """The API key in force: the configured one, else ``$XMR_API_KEY``, else None.

        Raises:
            XmrError: ``$XMR_API_KEY`` is not a key a header can carry (see :func:`_check_key`).
        """
        if self.api_key is not None:
            return self.api_key
        key = os.environ.get(API_KEY_ENV) or None
        return None if key is None else _check_key(key, f"${API_KEY_ENV}")


def _check_key(key: str, name: str) -> str:
    """``key`` if a client can send it in a header as it is: printable ASCII, no surrounding spaces
    (an HTTP header's value loses them, and a browser refuses other characters), else XmrError
    (the key itself is never printed)."""
    if not key or key != key.strip() or not all(" " <= c <= "~" for c in key):
        raise XmrError(f"{name} must be printable ASCII without leading or trailing spaces (an HTTP header "
                       f"cannot carry it unchanged); got {len(key)} characters: set it again without them")
    return key
