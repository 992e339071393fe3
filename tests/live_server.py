"""A live xmr service for tests: uvicorn in a thread on 127.0.0.1, a free port, stopped on exit; or
``xmr serve`` as a real process (:func:`serve_process`)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping

from fastapi import FastAPI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(app: FastAPI, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 while the block runs; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise RuntimeError("the service did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def serve_process(run: str | os.PathLike[str], index: str | os.PathLike[str], *args: str,
                  env: Mapping[str, str] | None = None, timeout: float = 60.0
                  ) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m xmr serve RUN --index INDEX --port <free> ARGS`` as a real process, waited for
    until ``/healthz`` answers (at most ``timeout`` s); yields (the process, its base URL). On exit a
    process still running is killed; its stdout and stderr stay readable."""
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "xmr", "serve", str(run), "--index", str(index), "--port", str(port),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(env) if env is not None else None)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
