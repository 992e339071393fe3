"""What a request may cost before an endpoint sees it: :class:`Limits`, a plain ASGI middleware.

- The ``Host`` it names must be this service's (:func:`host_allowed`): a page on another site
  whose name was re-pointed at this machine (DNS rebinding) is refused with a 400.
- Its body is read here, whole, however it is framed (``Content-Length``, chunked, multipart),
  and refused with a 413 as soon as it passes :attr:`ServeConfig.max_body_bytes` — the rest is
  never read — or with a 408 when it takes longer than :attr:`ServeConfig.body_timeout` to
  arrive (a slow client). The endpoint then reads the body from memory.
- A request still running when uvicorn's graceful shutdown ends (SIGTERM) is cancelled by
  uvicorn: it is answered 503 if nothing was sent yet, and dropped with one log line, not a
  ``CancelledError`` traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xmr.serve.config import ServeConfig

log = logging.getLogger(__name__)

#: bound to every interface: any name may reach the service (unless ``allowed_hosts`` says which)
EVERY_INTERFACE = frozenset({"0.0.0.0", "::", ""})


def host_name(header: str) -> str:
    """The name in a ``Host`` header, without its port, lower case: ``[::1]:8000`` -> ``::1``."""
    name = header.strip().lower()
    if name.startswith("["):
        return name[1:].partition("]")[0]
    if name.count(":") == 1:  # name:port (an IPv6 address has more colons, and brackets)
        name = name.partition(":")[0]
    return name.rstrip(".")


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_allowed(config: ServeConfig, name: str, server: str | None) -> bool:
    """Whether a request naming host ``name`` (see :func:`host_name`) is for this service.

    ``server``: the address the request came in on (the ASGI scope's ``server``). Allowed: the
    bound address and the one the request came in on (and any loopback name when either is a
    loopback address), the names of ``config.allowed_hosts`` (``*``: any); bound to every
    interface without ``allowed_hosts``, any name.
    """
    if "*" in config.allowed_hosts or name in {host_name(h) for h in config.allowed_hosts}:
        return True
    bound = host_name(config.host)
    own = {bound, (server or "").lower()}
    if name in own or (_is_loopback(name) and any(_is_loopback(a) for a in own)):
        return True
    return bound in EVERY_INTERFACE and not config.allowed_hosts


def _refusal(status: int, message: str) -> JSONResponse:
    # the connection is closed after it: a body left unread is never read
    return JSONResponse({"error": message}, status_code=status, headers={"connection": "close"})


class Limits:
    """The ASGI middleware enforcing the host check, the body limits and a quiet shutdown (see the module docstring)."""

    def __init__(self, app: ASGIApp, config: ServeConfig) -> None:
        self.app, self.config = app, config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            refused = self._refused_host(scope)
            body = b""
            if refused is None:
                body, refused = await self._read_body(scope, receive)
            if refused is not None:
                await refused(scope, receive, watch)
                return
            await self.app(scope, _replay(body, receive), watch)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when its graceful shutdown ends: finish it here, quietly
            log.info("%s %s: dropped at shutdown (still running when the graceful shutdown ended)",
                     scope.get("method", ""), scope.get("path", ""))
            if not started:
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await _refusal(503, "the service is shutting down")(scope, receive, watch)

    def _refused_host(self, scope: Scope) -> JSONResponse | None:
        header = Headers(scope=scope).get("host")
        if header is None:  # HTTP/1.0 without a Host: not a browser, nothing to rebind
            return None
        server = scope.get("server")
        name = host_name(header)
        if host_allowed(self.config, name, str(server[0]) if server else None):
            return None
        return _refusal(400, f"host {name!r} is not this service's (a DNS rebinding guard); serve with "
                             f"--allow-host {name} to accept it")

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes, JSONResponse | None]:
        """(the whole body, None), or (b"", the refusal): too large (declared or as it arrives), too slow."""
        limit = self.config.max_body_bytes
        too_large = _refusal(413, f"request body over the limit of {limit / 2 ** 20:.3g} MB (an upload of "
                                  f"{self.config.max_upload_mb:g} MB in base64, and its framing)")
        length = Headers(scope=scope).get("content-length", "").strip()
        if length.isdigit() and int(length) > limit:
            return b"", too_large
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.config.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return b"", _refusal(400, "the client closed the connection before its body arrived")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        return b"", too_large
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks), None
        except TimeoutError:
            return b"", _refusal(408, f"the request body did not arrive within {self.config.body_timeout:g} s")


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` giving ``body`` as one message, then what the connection says (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
