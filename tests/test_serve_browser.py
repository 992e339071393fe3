"""The search page in a real browser: Debian's chromium driven by Playwright, against a live service.

The service runs in a thread on 127.0.0.1 (a free port) over a toy run's indexed test split.
Without chromium the tests skip, except under ``make test`` (``XMR_BROWSER_REQUIRED=1``), which
installs it first: there a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from xmr.cli import main
from xmr.search import Searcher
from xmr.serve.app import create_app
from xmr.serve.service import SearchService

from live_server import serving

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _need_browser() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("XMR_BROWSER_REQUIRED"):
            pytest.fail(f"chromium not found at {CHROMIUM} (make test installs it: `make browser`)")
        pytest.skip("chromium not installed (`make browser`)")


@pytest.fixture(scope="module")
def live(toy_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Searcher]]:
    """(base URL, Searcher) of a service answering on 127.0.0.1 over the shapes test split."""
    _need_browser()
    run, cache = toy_run
    idx = tmp_path_factory.mktemp("page") / "idx"
    assert main(["-q", "index", str(run), "--split", "test", "--out", str(idx), "--cache-dir", str(cache),
                 "--rerank", "diffusion", "--rerank-param", "k=5"]) == 0
    with serving(create_app(SearchService.load(run, idx))) as url:
        yield url, Searcher.from_run(run, idx)


@pytest.fixture(scope="module")
def browser(live: tuple[str, Searcher]) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: object, live: tuple[str, Searcher]) -> Iterator[object]:
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})  # type: ignore[attr-defined]
    pg = ctx.new_page()
    pg.goto(live[0] + "/")
    pg.wait_for_selector("#run-info:not(:empty)")
    yield pg
    ctx.close()


def _ids(page: object) -> list[str]:
    return page.eval_on_selector_all("#results .hit", "els => els.map(e => e.dataset.id)")  # type: ignore[attr-defined]


def _search(page: object, text: str) -> None:
    page.fill("#text", text)  # type: ignore[attr-defined]
    page.press("#text", "Enter")  # type: ignore[attr-defined]  # the keyboard submits
    page.wait_for_function("document.querySelector('#status').textContent.includes('showing')")  # type: ignore[attr-defined]


def test_typing_a_query_shows_the_service_ranking(page: object, live: tuple[str, Searcher]) -> None:
    _, s = live
    _search(page, "a purple circle")
    want = [h.id for h in s.search_text("a purple circle", 24)]
    assert _ids(page) == want
    page.wait_for_function("() => { const i = document.querySelector('#results .hit img');"  # type: ignore[attr-defined]
                           " return i !== null && i.complete && i.naturalWidth > 0; }", timeout=10_000)  # it loads


def test_paging_filters_and_rerank_switch(page: object, live: tuple[str, Searcher]) -> None:
    _, s = live
    page.select_option("#k", "12")  # type: ignore[attr-defined]
    _search(page, "an orange square")
    first = _ids(page)
    page.click("#next")  # type: ignore[attr-defined]
    page.wait_for_function("document.querySelector('#page').textContent === 'page 2'")  # type: ignore[attr-defined]
    want = [h.id for h in s.search_text("an orange square", 24)]
    assert first == want[:12] and _ids(page) == want[12:24]
    page.select_option("#filter-style", "s1")  # type: ignore[attr-defined]
    page.wait_for_function("document.querySelector('#page').textContent === 'page 1'")  # type: ignore[attr-defined]
    assert _ids(page) == [h.id for h in s.search_text("an orange square", 24) if h.style == "s1"][:12]
    import httpx

    want = [h["id"] for h in httpx.post(live[0] + "/search", json={
        "text": "an orange square", "k": 12, "filters": {"style": "s1"}, "rerank": "diffusion"}).json()["results"]]
    page.select_option("#rerank", "diffusion")  # type: ignore[attr-defined]
    page.wait_for_function("want => JSON.stringify([...document.querySelectorAll('#results .hit')]"  # type: ignore[attr-defined]
                           ".map(e => e.dataset.id)) === JSON.stringify(want)", arg=want, timeout=10_000)


def test_upload_search_by_result_and_composed(page: object, live: tuple[str, Searcher], tmp_path: Path) -> None:
    _, s = live
    item = s.items[5]
    page.set_input_files("#file", item.image)  # type: ignore[attr-defined]
    page.wait_for_function("document.querySelector('#status').textContent.includes('image query')")  # type: ignore[attr-defined]
    assert _ids(page) == [h.id for h in s.search_image(item.image, 24)]
    page.click("#drop-clear")  # type: ignore[attr-defined]
    _search(page, "a cyan cross")
    target = _ids(page)[2]
    page.locator(f'#results .hit[data-id="{target}"] button').click()  # type: ignore[attr-defined]
    page.wait_for_function("document.querySelector('#status').textContent.includes('image_id query')")  # type: ignore[attr-defined]
    assert _ids(page)[0] == target  # an item finds itself first
    page.fill("#text", "orange")  # type: ignore[attr-defined]
    page.press("#text", "Enter")  # type: ignore[attr-defined]
    page.wait_for_function("document.querySelector('#status').textContent.includes('composed query')")  # type: ignore[attr-defined]
    assert len(_ids(page)) == 24


def test_a_bad_upload_shows_an_error_in_the_page(page: object, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not an image at all")
    page.set_input_files("#file", str(bad))  # type: ignore[attr-defined]
    page.wait_for_selector("#error:not([hidden])")  # type: ignore[attr-defined]
    assert "not an image" in page.text_content("#error")  # type: ignore[attr-defined]


def test_text_results_for_an_image_query(page: object, live: tuple[str, Searcher]) -> None:
    _, s = live
    page.select_option("#target", "texts")  # type: ignore[attr-defined]
    _search(page, "a purple cross")
    texts = page.eval_on_selector_all("#results .hit .texts", "els => els.map(e => e.textContent)")  # type: ignore[attr-defined]
    assert texts[:3] == [h.text for h in s.search_text("a purple cross", 3, target="texts")]
