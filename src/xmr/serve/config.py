"""The service's settings: one frozen dataclass, the single source of every ``xmr serve`` default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from xmr.errors import XmrError

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
        api_key: required on every endpoint but ``/healthz`` and the page (``X-API-Key`` header or
            ``Authorization: Bearer``); None reads ``$XMR_API_KEY`` (unset: no key).
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

    def __post_init__(self) -> None:
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

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def is_local(self) -> bool:
        return self.host in (LOCALHOST, "localhost", "::1")

    def key(self) -> str | None:
        """The API key in force: the configured one, else ``$XMR_API_KEY``, else None."""
        return self.api_key if self.api_key is not None else (os.environ.get(API_KEY_ENV) or None)
