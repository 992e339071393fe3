"""`xmr serve` bounded and safe by default (issue 25, section 3), over real HTTP: body limits however
the body is framed, a body read timeout, the Host check, bounded filters and metrics, the gallery image
check on the file served, a cap on image decodes, a quiet SIGTERM with slow clients."""

from __future__ import annotations

import base64
import gc
import io
import json
import os
import signal
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from xmr.bench.http import pieces, post_chunked, read_response
from xmr.cli import main
from xmr.serve.app import create_app
from xmr.serve.config import ServeConfig
from xmr.serve.service import SearchService

from hostile import SRC
from live_server import serve_process, serving

SMALL = ServeConfig(max_upload_mb=0.05, body_timeout=1.0)  # a body over ~134 kB is refused; 1 s to send it


@pytest.fixture(scope="module")
def indexed(toy_index: tuple[Path, Path]) -> tuple[Path, Path]:
    """(run, index folder): the shapes test split."""
    return toy_index


@pytest.fixture(scope="module")
def service(indexed: tuple[Path, Path]) -> SearchService:
    run, idx = indexed
    return SearchService.load(run, idx)


@pytest.fixture(scope="module")
def small(service: SearchService) -> Iterator[str]:
    """The base URL of a live service with a small upload limit and a 1 s body timeout."""
    with serving(create_app(service, SMALL)) as url:
        yield url


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def test_a_chunked_json_body_over_the_limit_is_refused_before_it_is_read(small: str) -> None:
    """A 32 MB JSON body (valid: a query padded with spaces), chunked: no Content-Length to refuse it by.
    It was read whole and answered 200; now a 413 comes once ~134 kB arrived, and the rest is never read."""
    total = 32 << 20
    sent, offered, response = post_chunked(_port(small), "/search", "application/json",
                                            pieces(b'{"text": "a purple circle",', b" ", total, b'"k": 3}'))
    assert _status(response) == 413, response[:300]
    assert b"over the limit" in response and offered > total
    assert sent < total // 2  # stopped early: only the socket buffers' worth past the limit was sent
    ok = httpx.post(small + "/search", json={"text": "a purple circle", "k": 3}, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["results"]) == 3  # a body within the limit is answered


def test_a_chunked_upload_over_the_limit_is_refused_before_it_is_read(small: str) -> None:
    """A 32 MB multipart upload, chunked: it was read whole before the 413."""
    total, boundary = 32 << 20, "xmrboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + b"\x89PNG"
    sent, _, response = post_chunked(_port(small), "/search/image", f"multipart/form-data; boundary={boundary}",
                                      pieces(head, b"\0", total, f"\r\n--{boundary}--\r\n".encode()))
    assert _status(response) == 413 and sent < total // 2, (sent, response[:300])


def test_a_declared_length_over_the_limit_is_refused_unread(small: str) -> None:
    r = httpx.post(small + "/search", content=b" " * 200_000, headers={"content-type": "application/json"},
                   timeout=30)
    assert r.status_code == 413 and "over the limit" in r.json()["error"]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_slow_body_gets_a_408_and_is_dropped(small: str, framing: str) -> None:
    """A client that sends part of its body and stalls held a server task forever; now 408 after 1 s."""
    with socket.create_connection(("127.0.0.1", _port(small)), timeout=30) as sock:
        length = "Content-Length: 1000" if framing == "content-length" else "Transfer-Encoding: chunked"
        sock.sendall(f"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{length}"
                     "\r\n\r\n".encode() + (b'{"text": ' if framing == "content-length" else b'9\r\n{"text": \r\n'))
        t0 = time.monotonic()
        response = read_response(sock, timeout=20)
    assert _status(response) == 408 and b"did not arrive within 1 s" in response, response[:300]
    assert time.monotonic() - t0 < 15


def test_a_host_header_naming_another_site_is_refused(service: SearchService, small: str) -> None:
    """DNS rebinding: a page on evil.example, its name re-pointed at 127.0.0.1, calls the service."""
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example"):
        r = httpx.get(small + "/healthz", headers={"host": host}, timeout=10)
        assert r.status_code == 400 and "DNS rebinding" in r.json()["error"] and "--allow-host" in r.json()["error"]
        r = httpx.post(small + "/search", json={"text": "a red circle"}, headers={"host": host}, timeout=10)
        assert r.status_code == 400
    for host in (f"127.0.0.1:{_port(small)}", f"localhost:{_port(small)}", "localhost", "[::1]:80"):
        assert httpx.get(small + "/healthz", headers={"host": host}, timeout=10).status_code == 200, host
    with serving(create_app(service, ServeConfig(allowed_hosts=("search.example",)))) as url:
        for host, status in (("search.example:443", 200), ("localhost", 200), ("evil.example", 400)):
            assert httpx.get(url + "/healthz", headers={"host": host}, timeout=10).status_code == status, host
    with serving(create_app(service, ServeConfig(host="0.0.0.0"))) as url:  # every interface: any name reaches it
        assert httpx.get(url + "/healthz", headers={"host": "my-machine.lan"}, timeout=10).status_code == 200
    with serving(create_app(service, ServeConfig(host="0.0.0.0", allowed_hosts=("my-machine.lan",)))) as url:
        for host, status in (("my-machine.lan", 200), ("127.0.0.1", 200), ("evil.example", 400)):
            assert httpx.get(url + "/healthz", headers={"host": host}, timeout=10).status_code == status, host
    with serving(create_app(service, ServeConfig(allowed_hosts=("*",)))) as url:
        assert httpx.get(url + "/healthz", headers={"host": "evil.example"}, timeout=10).status_code == 200


def test_metrics_keep_one_series_per_route_whatever_paths_are_asked(small: str) -> None:
    """3,000 refused requests to made-up paths grew /metrics from 13 kB to 1.6 MB (one series each)."""
    with httpx.Client(base_url=small, timeout=10) as c:
        def ask(i: int) -> None:
            c.get(f"/no-such-{i}/x")
            c.post(f"/made/up/{i}")
            c.get(f"/items/no-such-{i}")

        ask(-1)  # each kind of request once: its series made
        before = len(c.get("/metrics").text)
        for i in range(300):
            ask(i)
        text = c.get("/metrics").text
    endpoints = {line.split('endpoint="', 1)[1].split('"', 1)[0] for line in text.splitlines()
                 if line.startswith("xmr_requests_total{")}
    assert "no-such" not in text and "made" not in text and "other" in endpoints
    assert "/items" in endpoints and len(endpoints) <= 8, endpoints  # routes' paths up to their parameter
    assert len(text) - before < 2000


def test_filter_values_are_bounded_and_leave_nothing_behind(service: SearchService, small: str) -> None:
    """A query naming many distinct filter values kept a mask per value forever (+390 MB for 1M)."""
    with httpx.Client(base_url=small, timeout=30) as c:
        many = [f"g{i}" for i in range(SMALL.max_filter_values + 1)]
        r = c.post("/search", json={"text": "a purple circle", "filters": {"group": many}})
        assert r.status_code == 400 and f"at most {SMALL.max_filter_values}" in r.json()["error"]

        def ask(round_: int) -> None:
            values = [f"unknown-{round_}-{i}" for i in range(SMALL.max_filter_values - 1)] + ["purple-circle"]
            r = c.post("/search", json={"text": "a purple circle", "k": 5, "filters": {"group": values}})
            assert r.status_code == 200 and [h["fields"]["group"] for h in r.json()["results"]] == ["purple-circle"] * 2

        ask(-1)  # the field's codes, the metrics series: made once
        tracemalloc.start()
        try:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for round_ in range(20):  # 5,100 distinct values named
                ask(round_)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert grown < 400_000, grown  # a mask per value: ~1.5 MB


def _gallery(tmp_path: Path, toy_run: tuple[Path, Path]) -> tuple[Path, Path, Path]:
    """(index, the symlink the item's image is, the real image): one item whose image is a symlink."""
    run, cache = toy_run
    real = tmp_path / "real.png"
    real.write_bytes((run.parent / "data" / "img" / "red-circle-0.png").read_bytes())
    link = tmp_path / "item.png"
    link.symlink_to(real)
    gallery = tmp_path / "g.jsonl"
    gallery.write_text(json.dumps({"id": "one", "image": str(link), "texts": ["a red circle"]}) + "\n")
    idx = tmp_path / "idx"
    assert main(["-q", "index", str(run), "--manifest", str(gallery), "--out", str(idx),
                 "--cache-dir", str(cache)]) == 0
    return idx, link, real


def test_a_gallery_image_is_checked_on_the_file_served(tmp_path: Path, toy_run: tuple[Path, Path]) -> None:
    """The "decodes as an image" check was cached per item: a symlink re-pointed at a secret afterwards
    served the secret as image/png; a file deleted after the check was a 500 with a traceback."""
    idx, link, real = _gallery(tmp_path, toy_run)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with serving(create_app(SearchService.load(toy_run[0], idx))) as url:
        first = httpx.get(url + "/images/one", timeout=10)
        assert first.status_code == 200 and first.content == real.read_bytes()
        assert first.headers["content-type"] == "image/png"
        swapped = tmp_path / "swap"
        swapped.symlink_to(secret)
        os.replace(swapped, link)  # the item's image now points at the secret
        r = httpx.get(url + "/images/one", timeout=10)
        assert r.status_code == 404 and b"root:" not in r.content and "no readable image" in r.json()["error"]
        swapped.symlink_to(real)
        os.replace(swapped, link)  # and back at the image
        assert httpx.get(url + "/images/one", timeout=10).content == real.read_bytes()
        real.unlink()  # deleted while the service runs
        r = httpx.get(url + "/images/one", timeout=10)
        assert r.status_code == 404 and "no readable image" in r.json()["error"]
        os.mkfifo(real)  # a FIFO is refused without blocking
        assert httpx.get(url + "/images/one", timeout=10).status_code == 404


def _png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (90, 20, 160)).save(buf, format="PNG")
    return buf.getvalue()


def test_image_decodes_at_once_are_capped(service: SearchService, monkeypatch: pytest.MonkeyPatch) -> None:
    """8 uploads of a 12000 x 12000 PNG decoded at once cost +1 GB: now max_decodes (2) at a time."""
    enc = service.searcher.image_encoder
    real_load = enc.load
    running, most = 0, 0
    lock = threading.Lock()

    def slow_load(*a: object, **k: object) -> object:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.5)  # long enough for the uploads to overlap, even on a busy machine
            return real_load(*a, **k)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(enc, "load", slow_load)
    data = _png(64)
    with serving(create_app(service, ServeConfig())) as url:
        statuses: list[int] = []

        def upload(i: int) -> None:  # multipart, or base64 in JSON
            r = httpx.post(url + "/search/image", files={"file": ("q.png", data, "image/png")}, timeout=60) if i % 2 \
                else httpx.post(url + "/search", json={"image": base64.b64encode(data).decode()}, timeout=60)
            statuses.append(r.status_code)

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert statuses == [200] * 6 and most == ServeConfig().max_decodes, most


def test_sigterm_with_slow_clients_drops_them_quietly(indexed: tuple[Path, Path]) -> None:
    """Clients still sending their bodies when the graceful shutdown ends were cancelled with a
    CancelledError traceback each; now each gets a 503 and the log one line."""
    run, idx = indexed
    env = {**os.environ, "PYTHONPATH": SRC, "XMR_NO_PROGRESS": "1"}
    slow: list[socket.socket] = []
    with serve_process(run, idx, "--graceful-timeout", "1", env=env) as (proc, url):
        try:
            for _ in range(2):  # each sends part of its body, then nothing
                sock = socket.create_connection(("127.0.0.1", _port(url)), timeout=30)
                sock.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 1000\r\n\r\n{\"text\": ")
                slow.append(sock)
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            answers = [read_response(sock, timeout=30) for sock in slow]
            assert proc.wait(timeout=30) == 0
        finally:
            for sock in slow:
                sock.close()
    err = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in err and "CancelledError" not in err, err[-3000:]
    assert [_status(a) for a in answers] == [503, 503] and all(b"shutting down" in a for a in answers)
    assert err.count("dropped at shutdown") == 2


def test_the_limits_are_settings_shown_in_help_and_checked(capsys: pytest.CaptureFixture[str]) -> None:
    from xmr.cli import build_parser
    from xmr.errors import XmrError

    from hostile import cli_error

    sub = next(a for a in build_parser()._actions if a.dest == "cmd").choices["serve"]  # type: ignore[attr-defined]
    text = " ".join(sub.format_help().split())
    c = ServeConfig()
    for option, shown in (("--body-timeout", f"{c.body_timeout:g}"), ("--max-decodes", c.max_decodes),
                          ("--max-filter-values", c.max_filter_values),
                          ("--graceful-timeout", f"{c.graceful_timeout:g}")):
        assert option in text and f"(default: {shown})" in text.split(option, 2)[-1], option
    assert "--allow-host" in text
    for args in (["--body-timeout", "inf"], ["--body-timeout", "0"], ["--max-decodes", "0"],
                 ["--graceful-timeout", "nan"], ["--max-filter-values", "-1"]):
        assert "xmr: error:" in cli_error(["serve", "no-run", *args], capsys)
    for bad in ({"body_timeout": float("inf")}, {"graceful_timeout": 0.0}, {"max_decodes": 0},
                {"allowed_hosts": ("a b",)}):
        with pytest.raises(XmrError):
            ServeConfig(**bad)  # type: ignore[arg-type]


def test_freed_image_blocks_go_back_after_the_encoders_tuned_the_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    """EfficientNet's loader raises glibc's mmap threshold for batch encoding (once per process);
    the service fixes it low again only after its warm-up has loaded the encoders, or the decoded
    images' blocks stay in the heap (8 uploads of a 12000 x 12000 PNG on an EfficientNet run:
    peak RSS +1,120 MB with the threshold set before the warm-up, +400 MB after)."""
    import xmr.serve.run as run_module

    calls: list[str] = []

    class FakeService:
        items: list[object] = []
        n_texts = 0
        rerankers: list[str] = []
        text_encoder_id = "fake"

        def warm_up(self) -> None:
            calls.append("warm-up (the encoders load and tune the allocator)")

    monkeypatch.setattr(run_module, "load_service", lambda *a, **k: FakeService())
    monkeypatch.setattr(run_module, "return_large_blocks", lambda: calls.append("large blocks returned"))
    monkeypatch.setattr(run_module, "create_app", lambda service, config, startup_seconds: None)
    monkeypatch.setattr(run_module.gc, "freeze", lambda: None)  # not this test process's objects
    run_module.build_app("run")
    assert calls == ["warm-up (the encoders load and tune the allocator)", "large blocks returned"]
