"""The demo run behind the page, in a real browser: the page's first row for "zombie" is the library's
own ranking (:meth:`xmr.search.Searcher.search_text`), in order.

Needs the demo's InfoNCE run (``make demo`` or ``xmr demo``; ``$XMR_DEMO_RUN`` names another
folder) and chromium; skips without the run (a fresh checkout has none: the demo fetches its
data from npm, which a test may not), fails without chromium under ``make test``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from live_server import serving
from test_serve_browser import CHROMIUM, _need_browser

DEMO_RUN = Path(os.environ.get("XMR_DEMO_RUN", Path(__file__).resolve().parents[1] / "runs/demo/emoji-infonce"))


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    from xmr.serve.run import build_app

    if not (DEMO_RUN / "index" / "index_run.json").is_file():
        pytest.skip(f"no indexed demo run at {DEMO_RUN} (make demo)")
    _need_browser()
    with serving(build_app(DEMO_RUN)) as url:
        yield url


def test_the_pages_first_row_for_zombie_is_the_librarys_ranking(demo_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from xmr.search import Searcher

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(demo_url + "/")
        page.wait_for_selector("#run-info:not(:empty)")
        page.fill("#text", "zombie")
        page.press("#text", "Enter")
        page.wait_for_function("document.querySelector('#status').textContent.includes('showing')")
        first_row = page.evaluate("""() => {
            const hits = [...document.querySelectorAll('#results .hit')];
            const top = hits.length ? hits[0].getBoundingClientRect().top : 0;
            return hits.filter(h => Math.abs(h.getBoundingClientRect().top - top) < 5)
                       .map(h => h.querySelector('.texts').textContent);
        }""")
        shot = os.environ.get("XMR_SCREENSHOT")
        if shot:  # the README's picture: `XMR_SCREENSHOT=docs/serve_page.png pytest tests/test_serve_demo.py`
            page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete)")
            page.screenshot(path=shot, full_page=False)
        browser.close()
    assert first_row
    expected = Searcher.from_run(DEMO_RUN).search_text("zombie", k=len(first_row) + 5)
    shown = [t.split(" · ")[0] for t in first_row]
    # in order; the service encodes query texts with the int8 MiniLM (ServeConfig.fast_text: within 1e-3
    # cosine of the run's own encoder), so hits whose scores are that close may swap
    for i, text in enumerate(shown):
        tied = {h.text for h in expected if abs(h.score - expected[i].score) < 2e-3}
        assert text in tied, json.dumps([i, shown, [(h.text, h.score) for h in expected]])
