""""Search by this" after ``xmr index remove`` (issue 25, 2.1): a gallery item's query is its own vector,
read by id, over real HTTP and from the page in chromium.

A removal compacts a flat index, so from the removed item on an id is no longer a FAISS position:
reading position ``i`` for item ``i`` answered with the next item's neighbours.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from xmr.cli import main
from xmr.search import Searcher
from xmr.serve.app import create_app
from xmr.serve.service import SearchService

from live_server import serving
from test_serve_browser import CHROMIUM, _need_browser

K = 24  # the page's page size: with one of the 24 test items removed, every item is on the first page


@pytest.fixture(scope="module")
def removed(toy_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Searcher]]:
    """(base URL of a live service, Searcher) over the shapes test split with its first item removed."""
    run, cache = toy_run
    idx = tmp_path_factory.mktemp("removed") / "idx"
    assert main(["-q", "index", str(run), "--split", "test", "--out", str(idx), "--cache-dir", str(cache)]) == 0
    first = Searcher.from_run(run, idx).items[0]
    assert first is not None
    assert main(["-q", "index", "remove", str(run), first.id, "--index", str(idx)]) == 0
    with serving(create_app(SearchService.load(run, idx))) as url:
        yield url, Searcher.from_run(run, idx)


def _by_image(s: Searcher, item_id: str) -> dict[str, float]:
    """The reference: each hit's score when the item's image file is the query (encoded anew)."""
    item = next(it for it in s.items if it is not None and it.id == item_id)
    return {h.id: h.score for h in s.search_image(item.image, K)}


def _ranked_as(got: list[str], want: dict[str, float]) -> bool:
    """``got`` is ``want``'s ranking (the toy gallery's copies tie, so only their order may differ)."""
    scores = [want.get(i, -np.inf) for i in got]
    return len(got) == len(want) and np.allclose(scores, sorted(want.values(), reverse=True), atol=1e-5)


def _shifted(s: Searcher) -> list[str]:
    """Items whose next id holds another image: reading the wrong position gives another ranking."""
    items = [it for it in s.items if it is not None]
    vec = s.embed_images([it.image for it in items])
    return [a.id for a, va, vb in zip(items, vec, vec[1:]) if not np.allclose(va, vb, atol=1e-4)]


def test_search_by_image_id_after_a_remove_is_the_items_own_query(removed: tuple[str, Searcher]) -> None:
    url, s = removed
    targets = _shifted(s)
    assert len(targets) > 5
    for item_id in targets:
        r = httpx.post(f"{url}/search", json={"image_id": item_id, "k": K}, timeout=30)
        assert r.status_code == 200, r.text
        got = [h["id"] for h in r.json()["results"]]
        assert _ranked_as(got, _by_image(s, item_id)), item_id


def test_search_by_this_in_the_page_after_a_remove(removed: tuple[str, Searcher]) -> None:
    from playwright.sync_api import sync_playwright

    _need_browser()
    url, s = removed
    target = _shifted(s)[3]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url + "/")
        page.wait_for_selector("#run-info:not(:empty)")
        page.fill("#text", "a cyan cross")
        page.press("#text", "Enter")
        page.wait_for_function("document.querySelector('#status').textContent.includes('showing')")
        page.locator(f'#results .hit[data-id="{target}"] button').click()
        page.wait_for_function("document.querySelector('#status').textContent.includes('image_id query')")
        got = page.eval_on_selector_all("#results .hit", "els => els.map(e => e.dataset.id)")
        browser.close()
    assert _ranked_as(got, _by_image(s, target)), (target, got)
