"""Raw HTTP/1.1 over a socket, for the service's limit checks (tests and the hostile survey):
a chunked body sent piece by piece until the server answers, and the answer read as it comes."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator


def pieces(first: bytes, filler: bytes, total: int, last: bytes, size: int = 1 << 16) -> Iterator[bytes]:
    """``first``, then about ``total`` bytes of ``filler`` repeated, ``size`` at a time, then ``last``."""
    yield first
    for _ in range(total // size):
        yield filler * (size // len(filler))
    yield last


def read_response(sock: socket.socket, timeout: float = 30) -> bytes:
    """What the server sent until it closed, ``timeout`` passed, or a whole response (by its
    Content-Length) arrived."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            got = sock.recv(65536)
            if not got:
                break
            data += got
            head, _, body = data.partition(b"\r\n\r\n")
            length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")]
            if length and len(body) >= length[0]:
                break
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def post_chunked(port: int, path: str, content_type: str, chunks: Iterator[bytes], *,
                 timeout: float = 30) -> tuple[int, int, bytes]:
    """POST ``chunks`` to 127.0.0.1:``port`` as a chunked body over a raw socket, stopping as soon
    as the server answers (or closes the connection). Returns (body bytes sent, body bytes offered,
    the response: :func:`read_response` with ``timeout``)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    with sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        sent = offered = 0
        answered = False
        for piece in chunks:
            offered += len(piece)
            if answered or select.select([sock], [], [], 0)[0]:
                answered = True
                continue
            try:
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                sent += len(piece)
            except OSError:  # the server answered and closed the connection
                answered = True
        if not answered:
            sock.sendall(b"0\r\n\r\n")
        return sent, offered, read_response(sock, timeout)
