"""`xmr serve` over real HTTP: the API key (what it may be, CORS preflights before it), `/docs`
needing nothing remote, the favicon. The page itself with a key is in test_serve_browser.py."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

import xmr
from xmr.errors import XmrError
from xmr.serve.app import create_app
from xmr.serve.config import ServeConfig
from xmr.serve.service import SearchService

from hostile import one_error_line, run_process
from live_server import free_port, serving

ORIGIN = "http://app.example"


@pytest.fixture(scope="module")
def served(toy_index: tuple[Path, Path]) -> tuple[Path, Path]:
    """(run, index folder) over the shapes test split."""
    return toy_index


def test_a_cors_preflight_is_answered_before_the_key_check(served: tuple[Path, Path]) -> None:
    # a browser's preflight never carries the key: refusing it with 401 made every keyed call from
    # the allowed origin fail before it was sent
    app = create_app(SearchService.load(*served), ServeConfig(api_key="s3cret", cors_origins=(ORIGIN,)))
    with serving(app) as url:
        pre = httpx.options(url + "/search", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "content-type, x-api-key"})
        assert pre.status_code == 200, pre.text
        assert pre.headers["access-control-allow-origin"] == ORIGIN
        assert "x-api-key" in pre.headers["access-control-allow-headers"].lower()
        ok = httpx.post(url + "/search", json={"text": "a red circle"},
                        headers={"Origin": ORIGIN, "X-API-Key": "s3cret"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
        # the refusal itself is readable by the page that asked (it carries the CORS header)
        refused = httpx.post(url + "/search", json={"text": "a red circle"}, headers={"Origin": ORIGIN})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
        other = httpx.options(url + "/search", headers={"Origin": "http://evil.example",
                                                        "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("key", [" s3cret", "s3cret ", "s3cret\n", "\t", "clé-s3cret"],
                         ids=["leading-space", "trailing-space", "newline", "blank", "non-ascii"])
def test_a_key_a_header_cannot_carry_is_refused_at_start(served: tuple[Path, Path], key: str) -> None:
    run, idx = served
    # a real `xmr serve`: before the fix it started and refused every request, whatever key was sent
    proc = run_process(["serve", run, "--index", idx, "--port", free_port()], timeout=90,
                       env={"XMR_API_KEY": key, "PYTHONPATH": str(Path(xmr.__file__).resolve().parents[1])})
    line = one_error_line(proc)
    assert "$XMR_API_KEY must be printable ASCII without leading or trailing spaces" in line
    assert "s3cret" not in line  # the key is never printed
    with pytest.raises(XmrError, match="the API key must be printable ASCII"):
        ServeConfig(api_key=key)


def test_an_unset_or_empty_key_means_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMR_API_KEY", "")
    assert ServeConfig().key() is None
    monkeypatch.setenv("XMR_API_KEY", "a key with inner spaces is fine")
    assert ServeConfig().key() == "a key with inner spaces is fine"


def _local_refs(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', html)


def test_docs_need_nothing_remote_and_open_without_the_key(served: tuple[Path, Path]) -> None:
    app = create_app(SearchService.load(*served), ServeConfig(api_key="s3cret"))
    with serving(app) as url:
        docs = httpx.get(url + "/docs")
        assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
        refs = _local_refs(docs.text)
        assert "/docs.js" in refs and all(r.startswith("/") and not r.startswith("//") for r in refs), refs
        for ref in refs:  # what /docs loads answers without the key (the page asks for it), and is local
            r = httpx.get(url + ref, headers={} if ref != "/openapi.json" else {"X-API-Key": "s3cret"})
            assert r.status_code == 200, (ref, r.status_code)
            assert "://" not in r.text.replace('xmlns="http://www.w3.org/2000/svg"', ""), ref
        assert httpx.get(url + "/openapi.json").status_code == 401  # the API's description names the run
        assert httpx.get(url + "/redoc", headers={"X-API-Key": "s3cret"}).status_code == 404  # no CDN page left


def test_the_favicon_is_served(served: tuple[Path, Path]) -> None:
    app = create_app(SearchService.load(*served), ServeConfig(api_key="s3cret"))
    with serving(app) as url:
        r = httpx.get(url + "/favicon.ico")  # browsers ask for it with no key, on every page load
        assert r.status_code == 200 and r.headers["content-type"] == "image/svg+xml" and b"<svg" in r.content
        page = httpx.get(url + "/").text
        assert '<link rel="icon" href="/favicon.ico"' in page
