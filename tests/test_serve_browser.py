"""The search page in a real browser: Debian's chromium driven by Playwright, against a live service.

The service runs in a thread on 127.0.0.1 (a free port) over a toy run's indexed test split.
Without chromium the tests skip, except under ``make test`` (``XMR_BROWSER_REQUIRED=1``), which
installs it first: there a missing browser fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from xmr.cli import main
from xmr.search import Searcher
from xmr.serve.app import create_app
from xmr.serve.config import ServeConfig
from xmr.serve.service import SearchService

from live_server import serving

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _need_browser() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("XMR_BROWSER_REQUIRED"):
            pytest.fail(f"chromium not found at {CHROMIUM} (make test installs it: `make browser`)")
        pytest.skip("chromium not installed (`make browser`)")


@pytest.fixture(scope="module")
def indexed(toy_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run, index folder): the shapes test split, with diffusion structures."""
    _need_browser()
    run, cache = toy_run
    idx = tmp_path_factory.mktemp("page") / "idx"
    assert main(["-q", "index", str(run), "--split", "test", "--out", str(idx), "--cache-dir", str(cache),
                 "--rerank", "diffusion", "--rerank-param", "k=5"]) == 0
    return run, idx


@pytest.fixture(scope="module")
def live(indexed: tuple[Path, Path]) -> Iterator[tuple[str, Searcher]]:
    """(base URL, Searcher) of a service answering on 127.0.0.1 over the shapes test split."""
    run, idx = indexed
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


# issue 25: the page with an API key, /docs offline, and the page's rough edges (5.6)

KEY = "s3cret"
LONG = "holiday_photo_from_the_summer_at_the_seaside_with_the_whole_family_and_the_dog_number_"


@pytest.fixture(scope="module")
def keyed(indexed: tuple[Path, Path]) -> Iterator[str]:
    """The base URL of the same service with an API key."""
    with serving(create_app(SearchService.load(*indexed), ServeConfig(api_key=KEY))) as url:
        yield url


@pytest.fixture(scope="module")
def images_only(toy_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a service over a folder of images (no texts) whose names are long and have no spaces."""
    _need_browser()
    run, cache = toy_run
    root = tmp_path_factory.mktemp("long-ids")
    (root / "pictures").mkdir()
    for i, image in enumerate(sorted((run.parent / "data" / "img").glob("*.png"))[:12]):
        shutil.copy(image, root / "pictures" / f"{LONG}{i:02d}.png")
    assert main(["-q", "index", str(run), "--images", str(root / "pictures"), "--out", str(root / "idx"),
                 "--cache-dir", str(cache)]) == 0
    with serving(create_app(SearchService.load(run, root / "idx"))) as url:
        yield url


@contextlib.contextmanager
def _opened(browser: object, url: str, *, wait: str | None = "#run-info:not(:empty)") -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})  # type: ignore[attr-defined]
    try:
        pg = ctx.new_page()
        pg.goto(url)
        if wait:
            pg.wait_for_selector(wait)
        yield pg
    finally:
        ctx.close()


def _search_as(page: Any, text: str, kind: str) -> None:
    """Type ``text``, press Enter, and wait for the answer of a ``kind`` query (text, composed, ...)."""
    page.fill("#text", text)
    page.press("#text", "Enter")
    page.wait_for_function(f"document.querySelector('#status').textContent.includes('({kind} query')")


IMAGES_LOADED = ("() => { const i = [...document.querySelectorAll('#results .hit img')];"
                 " return i.length > 0 && i.every(e => e.complete && e.naturalWidth > 0); }")


def test_with_an_api_key_the_page_asks_for_it_once_per_session(browser: object, keyed: str,
                                                                live: tuple[str, Searcher]) -> None:
    _, s = live
    with _opened(browser, keyed + "/", wait="#key-form:not([hidden])") as pg:
        pg.fill("#api-key", "wrong")
        pg.press("#api-key", "Enter")
        pg.wait_for_function("document.querySelector('#key-note').textContent.includes('refused')")
        pg.fill("#api-key", f" {KEY} ")  # pasted with spaces around it
        pg.press("#api-key", "Enter")
        pg.wait_for_selector("#run-info:not(:empty)")
        assert pg.is_hidden("#key-form") and pg.is_hidden("#error")
        _search_as(pg, "a purple circle", "text")
        assert _ids(pg) == [h.id for h in s.search_text("a purple circle", 24)]
        pg.wait_for_function(IMAGES_LOADED, timeout=10_000)  # /images needs the key too: an <img src> cannot send it
        target = _ids(pg)[3]
        pg.locator(f'#results .hit[data-id="{target}"] button').click()
        pg.wait_for_function("document.querySelector('#status').textContent.includes('image_id query')")
        assert _ids(pg)[0] == target
        pg.wait_for_function("() => document.querySelector('#drop-preview').naturalWidth > 0", timeout=10_000)
        pg.reload()  # kept in the tab's session: not asked again
        pg.wait_for_selector("#run-info:not(:empty)")
        assert pg.is_hidden("#key-form")
        pg.goto(keyed + "/docs")  # /docs uses the same key
        pg.wait_for_selector("#ops .op")
        assert pg.is_hidden("#key-form")
    with _opened(browser, keyed + "/", wait="#key-form:not([hidden])") as pg:  # another session asks again
        assert pg.text_content("#run-info") == ""


def test_docs_work_offline_and_try_an_endpoint(browser: object, live: tuple[str, Searcher]) -> None:
    url, s = live
    n_ops = sum(len(methods) for methods in httpx.get(url + "/openapi.json").json()["paths"].values())
    remote: list[str] = []

    def offline(route: Any) -> None:  # the machine has no network: anything but the service fails
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            remote.append(route.request.url)
            route.abort()

    with _opened(browser, "about:blank", wait=None) as pg:
        pg.route("**/*", offline)
        pg.goto(url + "/docs")
        pg.wait_for_function("n => document.querySelectorAll('#ops .op').length === n", arg=n_ops, timeout=15_000)
        assert remote == []
        ops = pg.eval_on_selector_all("#ops .op", "els => els.map(e => e.dataset.op)")
        assert {"POST /search", "POST /search/image", "GET /healthz", "GET /images/{item_id}"} <= set(ops)
        assert pg.locator("#schema-SearchRequest").count() == 1
        search = pg.locator('#ops .op[data-op="POST /search"]')
        assert "filters" in search.text_content()  # the body's fields are listed
        search.locator("textarea").fill('{"text": "a red circle", "k": 3}')
        search.locator("button[type=submit]").click()
        pg.wait_for_function("e => e.textContent.startsWith('200')", arg=search.locator(".answer").element_handle())
        body = json.loads(search.locator(".answer").text_content().split("\n", 1)[1])
        assert [h["id"] for h in body["results"]] == [h.id for h in s.search_text("a red circle", 3)]


def test_search_by_this_shows_its_image_by_the_text_box_and_clears_in_one_click(
        page: Any, live: tuple[str, Searcher]) -> None:
    from playwright.sync_api import expect

    _, s = live
    _search_as(page, "a cyan cross", "text")
    target = _ids(page)[-1]
    page.locator(f'#results .hit[data-id="{target}"] button').click()  # scrolls down to it
    page.wait_for_function("document.querySelector('#status').textContent.includes('image_id query')")
    using = page.locator("#drop-using")  # the image in use is named where the next text is typed
    expect(using).to_be_in_viewport()
    assert target in using.text_content() and "image + text" in using.text_content()
    assert "image" in page.get_attribute("#text", "placeholder")
    expect(page.locator("#drop-clear")).to_be_in_viewport()
    page.click("#drop-clear")  # one click
    assert page.is_hidden("#drop-using") and page.is_hidden("#drop-preview") and page.is_hidden("#drop-clear")
    assert "image" not in page.get_attribute("#text", "placeholder")
    _search_as(page, "an orange square", "text")  # a text query again, not image + text
    assert _ids(page) == [h.id for h in s.search_text("an orange square", 24)]


def test_a_refused_upload_takes_the_old_results_and_its_image_away(page: Any, tmp_path: Path) -> None:
    _search_as(page, "a purple circle", "text")
    assert _ids(page)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image at all")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image" in page.text_content("#error")
    assert _ids(page) == []  # the results of the previous query are not shown as if they answered this one
    assert page.is_hidden("#drop-clear") and page.is_hidden("#drop-preview") and page.is_hidden("#drop-using")
    assert page.text_content("#page") == "" and page.is_disabled("#next")
    _search_as(page, "a purple circle", "text")  # the refused image is not sent again


def test_long_ids_wrap_inside_their_cards(browser: object, images_only: str) -> None:
    with _opened(browser, images_only + "/") as pg:
        _search_as(pg, "a red circle", "text")
        texts = pg.eval_on_selector_all("#results .hit .texts", "els => els.map(e => e.textContent)")
        assert len(texts) == 12 and all(t.startswith(LONG) for t in texts)  # no texts: the card shows its id
        outside = pg.evaluate("""() => [...document.querySelectorAll('#results .hit')].filter(card => {
            const box = card.getBoundingClientRect(), range = document.createRange();
            range.selectNodeContents(card);
            const ink = range.getBoundingClientRect();
            return ink.right > box.right + 1 || ink.left < box.left - 1 || card.scrollWidth > card.clientWidth + 1;
        }).map(card => card.dataset.id)""")
        assert outside == []


def test_texts_are_not_offered_when_the_index_holds_none(browser: object, images_only: str) -> None:
    with _opened(browser, images_only + "/") as pg:
        assert pg.eval_on_selector_all("#target option", "els => els.map(e => e.value)") == ["images"]
        assert pg.is_hidden("#target")
