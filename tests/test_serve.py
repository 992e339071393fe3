"""`xmr serve`: the API against the in-process Searcher on a toy run, errors as JSON, limits and security."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from xmr.cli import main
from xmr.encoders.image_io import ImageBytes, UnreadableImage, load_rgb
from xmr.search import Searcher
from xmr.serve.app import create_app
from xmr.serve.config import ServeConfig
from xmr.serve.service import SearchService


@pytest.fixture(scope="module")
def served(toy_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run, index folder): the shapes test split indexed with diffusion structures for images."""
    run, cache = toy_run
    idx = tmp_path_factory.mktemp("serve") / "idx"
    assert main(["-q", "index", str(run), "--split", "test", "--out", str(idx), "--cache-dir", str(cache),
                 "--rerank", "diffusion", "--rerank-param", "k=5"]) == 0
    return run, idx


@pytest.fixture(scope="module")
def client(served: tuple[Path, Path]) -> TestClient:
    run, idx = served
    service = SearchService.load(run, idx)
    return TestClient(create_app(service, ServeConfig(max_upload_mb=0.05)), raise_server_exceptions=False)


def _png(colour: tuple[int, int, int] = (200, 30, 30), size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_an_image_in_memory_reads_like_the_file(tmp_path: Path) -> None:
    data = _png()
    (tmp_path / "a.png").write_bytes(data)
    assert np.array_equal(np.asarray(load_rgb(ImageBytes(data))), np.asarray(load_rgb(tmp_path / "a.png")))
    svg = b"<svg xmlns='http://www.w3.org/2000/svg'/>"
    for bad, why in ((b"", "empty"), (svg, "SVG"), (b"garbage", "not an image")):
        with pytest.raises(UnreadableImage, match=why):
            load_rgb(ImageBytes(bad, "q"))


def test_text_search_equals_the_searcher_and_pages(client: TestClient, served: tuple[Path, Path]) -> None:
    run, idx = served
    s = Searcher.from_run(run, idx)
    want = s.search_text("a purple circle", 10)
    r = client.post("/search", json={"text": "a purple circle", "k": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [h["id"] for h in body["results"]] == [h.id for h in want]
    assert [round(h["score"], 5) for h in body["results"]] == [round(h.score, 5) for h in want]
    assert body["model_id"] == s.model.model_id and body["query"] == "text" and body["total"] == len(s.items)
    page2 = client.post("/search", json={"text": "a purple circle", "k": 4, "offset": 4}).json()["results"]
    assert [h["id"] for h in page2] == [h.id for h in want[4:8]] and [h["rank"] for h in page2] == [5, 6, 7, 8]
    assert body["results"][0]["image_url"].startswith("/images/")
    texts = client.post("/search", json={"text": "a purple circle", "target": "texts", "k": 3}).json()["results"]
    assert [t["texts"][0] for t in texts] == [h.text for h in s.search_text("a purple circle", 3, target="texts")]
    assert all(t["fields"]["item"] for t in texts)


def test_image_queries_by_upload_base64_and_gallery_id(client: TestClient, served: tuple[Path, Path]) -> None:
    run, idx = served
    s = Searcher.from_run(run, idx)
    path = s.items[3].image
    want = [h.id for h in s.search_image(path, 5)]
    data = Path(path).read_bytes()
    multipart = client.post("/search/image", files={"file": ("q.png", data, "image/png")}, data={"k": "5"}).json()
    b64 = client.post("/search", json={"image": base64.b64encode(data).decode(), "k": 5}).json()
    by_id = client.post("/search", json={"image_id": s.items[3].id, "k": 5}).json()
    assert [h["id"] for h in multipart["results"]] == want == [h["id"] for h in b64["results"]]
    assert [h["id"] for h in by_id["results"]] == want and by_id["query"] == "image_id"
    composed = client.post("/search", json={"image_id": s.items[3].id, "text": "orange", "k": 3}).json()
    assert composed["query"] == "composed" and len(composed["results"]) == 3


def test_filters_keep_the_ranking_of_the_matching_entries(client: TestClient, served: tuple[Path, Path]) -> None:
    run, idx = served
    s = Searcher.from_run(run, idx)
    full = [h for h in s.search_text("a cyan square", len(s.items))]
    r = client.post("/search", json={"text": "a cyan square", "k": 5, "filters": {"style": "s1"}}).json()
    assert [h["id"] for h in r["results"]] == [h.id for h in full if h.style == "s1"][:5]
    assert r["total"] == sum(1 for it in s.items if it.style == "s1")
    both = client.post("/search", json={"text": "a cyan square", "k": 50,
                                        "filters": {"style": ["s0", "s1"], "label": "square"}}).json()
    assert [h["id"] for h in both["results"]] == [h.id for h in full if h.label == "square"]


def test_rerank_through_the_api_equals_the_searcher(client: TestClient, served: tuple[Path, Path]) -> None:
    run, idx = served
    s = Searcher.from_run(run, idx, rerank="diffusion")
    want = [h.id for h in s.search_text("a purple cross", 5)]
    r = client.post("/search", json={"text": "a purple cross", "k": 5, "rerank": "diffusion"}).json()
    assert [h["id"] for h in r["results"]] == want


@pytest.mark.parametrize("body, status, needle", [
    ({"text": "x", "image_id": "nope"}, 404, "no gallery item 'nope'"),
    ({}, 400, "exactly one of"),
    ({"text": "x", "vector": [0.1]}, 400, "exactly one of"),
    ({"vector": [0.1, 0.2]}, 400, "the run's space has 32"),
    ({"text": "   "}, 400, "text: empty"),
    ({"text": "x", "k": 0}, 422, "k:"),
    ({"text": "x", "k": 2000}, 400, "at most 1000"),
    ({"text": "x", "target": "sounds"}, 422, "target"),
    ({"text": "x", "rerank": "geodesic"}, 400, "xmr index"),
    ({"text": "x", "filters": {"colour": "red"}}, 400, "unknown field 'colour'"),
    ({"text": "x", "extra": 1}, 422, "extra"),
    ({"image": "not base64!!"}, 400, "not valid base64"),
    ({"image": base64.b64encode(b"hello").decode()}, 400, "image: not an image"),
])
def test_bad_queries_are_json_errors_with_their_status(client: TestClient, body: dict, status: int,
                                                       needle: str) -> None:
    r = client.post("/search", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]


def test_items_images_health_metrics_and_openapi(client: TestClient, served: tuple[Path, Path]) -> None:
    run, idx = served
    s = Searcher.from_run(run, idx)
    it = s.items[0]
    assert client.get(f"/items/{it.id}").json()["texts"] == list(it.texts)
    assert client.get("/items/no-such").status_code == 404
    img = client.get(f"/images/{it.id}")
    assert img.status_code == 200 and img.content == Path(it.image).read_bytes()
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["n_images"] == len(s.items)
    client.post("/search", json={"text": "a red circle"})
    metrics = client.get("/metrics").text
    assert 'xmr_requests_total{endpoint="/search",status="200"}' in metrics and "xmr_stage_seconds_bucket" in metrics
    assert 'stage="encode"' in metrics and 'stage="search"' in metrics
    assert 'xmr_batch_size_count{batcher="text"}' in metrics  # the micro-batches, by batcher
    schema = client.get("/openapi.json").json()
    assert {"/search", "/search/image", "/items/{item_id}", "/healthz"} <= set(schema["paths"])
    info = client.get("/info").json()
    assert info["rerankers"] == ["diffusion"] and info["fields"]["style"] == ["s0", "s1"]
    page = client.get("/")
    assert page.status_code == 200 and "xmr search" in page.text and client.get("/page.js").status_code == 200


def test_uploads_over_the_limit_and_bombs_are_refused(client: TestClient) -> None:
    big = b"\x89PNG" + bytes(80_000)  # over the fixture's 0.05 MB
    r = client.post("/search/image", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "upload limit" in r.json()["error"]
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")  # 20000 x 20000 declared, a few kB on disk
    r = client.post("/search/image", files={"file": ("bomb.png", bomb.getvalue(), "image/png")})
    assert r.status_code == 400 and "over the limit" in r.json()["error"]
    assert client.post("/search/image", files={"file": ("x.txt", b"hello", "text/plain")}).status_code == 400
    assert client.get("/healthz").status_code == 200  # still serving


def test_a_manifest_row_pointing_at_a_non_image_is_never_served(tmp_path: Path, toy_run: tuple[Path, Path]) -> None:
    run, cache = toy_run
    secret = tmp_path / "secret.png"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")  # an image name, not an image
    shutil.copy(run.parent / "data" / "img" / "red-circle-0.png", tmp_path / "ok.png")
    gallery = tmp_path / "g.jsonl"
    gallery.write_text(json.dumps({"id": "ok", "image": str(tmp_path / "ok.png"), "texts": ["a red circle"]}) + "\n")
    idx = tmp_path / "idx"
    assert main(["-q", "index", str(run), "--manifest", str(gallery), "--out", str(idx),
                 "--cache-dir", str(cache)]) == 0
    service = SearchService.load(run, idx)
    service.items[0] = type(service.items[0])(id="ok", image=str(secret), texts=("a red circle",))  # tampered metadata
    c = TestClient(create_app(service), raise_server_exceptions=False)
    r = c.get("/images/ok")
    assert r.status_code == 404 and "root:" not in r.text and "no readable image" in r.json()["error"]
    assert c.get("/images/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_an_api_key_guards_every_endpoint_but_health(served: tuple[Path, Path]) -> None:
    run, idx = served
    c = TestClient(create_app(SearchService.load(run, idx), ServeConfig(api_key="s3cret")))
    assert c.get("/healthz").status_code == 200
    assert c.post("/search", json={"text": "a"}).status_code == 401
    assert c.get("/metrics").status_code == 401
    assert c.post("/search", json={"text": "a"}, headers={"X-API-Key": "wrong"}).status_code == 401
    assert c.post("/search", json={"text": "a"}, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert c.post("/search", json={"text": "a"}, headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_texts_target_without_texts_names_the_command(tmp_path: Path, toy_run: tuple[Path, Path]) -> None:
    run, cache = toy_run
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(run.parent / "data" / "img" / "red-circle-0.png", folder / "a.png")
    idx = tmp_path / "idx"
    assert main(["-q", "index", str(run), "--images", str(folder), "--out", str(idx), "--cache-dir", str(cache)]) == 0
    c = TestClient(create_app(SearchService.load(run, idx)))
    r = c.post("/search", json={"text": "a red circle", "target": "texts"})
    assert r.status_code == 400 and "holds no texts" in r.json()["error"]
    assert "index_run(run_dir=" in r.json()["error"]  # the API names the job (the CLI its command, `xmr index`)
    assert c.post("/search", json={"text": "a red circle"}).json()["results"][0]["id"] == "a.png"


def _call_at_once(fn: Callable[[int], int], n: int) -> dict[int, int]:
    """``{i: fn(i)}`` for i < n, the n calls made from n threads released together."""
    import threading

    start = threading.Barrier(n)
    out: dict[int, int] = {}

    def call(i: int) -> None:
        start.wait()
        out[i] = fn(i)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_the_micro_batcher_joins_concurrent_calls_and_keeps_each_answer() -> None:

    from xmr.serve.batching import MicroBatcher

    sizes: list[int] = []

    def square(xs: list[int]) -> list[int]:
        sizes.append(len(xs))
        if -1 in xs:
            raise ValueError("bad input in the batch")
        return [x * x for x in xs]

    b = MicroBatcher(square, max_batch=8, max_wait=0.05)
    out = _call_at_once(b, 16)
    assert out == {i: i * i for i in range(16)}
    assert sum(sizes) == 16 and len(sizes) < 16 and max(sizes) <= 8  # joined, never past max_batch
    with pytest.raises(ValueError, match="bad input"):
        b(-1)
    assert b(3) == 9  # the worker survives a failed batch


def test_a_batcher_with_two_workers_runs_two_batches_at_once_and_counts_them() -> None:
    import threading
    import time

    from xmr.serve.batching import MicroBatcher

    running, most, sizes = 0, 0, []
    lock = threading.Lock()

    def slow_double(xs: list[int]) -> list[int]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return [2 * x for x in xs]

    b = MicroBatcher(slow_double, max_batch=2, max_wait=0.0, workers=2, on_batch=sizes.append)
    out = _call_at_once(b, 8)
    assert out == {i: 2 * i for i in range(8)} and most == 2  # two batches ran at the same time
    assert sum(sizes) == b.inputs == 8 and len(sizes) == b.batches and max(sizes) <= 2
    with pytest.raises(ValueError, match="workers"):
        MicroBatcher(slow_double, workers=0)


def test_concurrent_text_queries_are_encoded_together_and_answer_as_alone(served: tuple[Path, Path]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from xmr.serve.service import Query

    run, idx = served
    service = SearchService.load(run, idx, cache_size=0, max_wait=0.05)
    texts = [f"a {c} {s}" for c in ("purple", "orange", "cyan") for s in ("circle", "square", "cross")]
    alone = {t: [r["id"] for r in service.search(Query(text=t, k=5))[0]] for t in texts}
    before = service._texts.batches
    with ThreadPoolExecutor(9) as pool:
        together = dict(zip(texts, pool.map(lambda t: [r["id"] for r in service.search(Query(text=t, k=5))[0]],
                                            texts)))
    assert together == alone and service._texts.batches - before < len(texts)


def test_xmr_serve_starts_answers_and_stops_on_sigterm(served: tuple[Path, Path]) -> None:
    import signal
    import time

    import httpx

    from live_server import serve_process

    run, idx = served
    with serve_process(run, idx) as (proc, url):
        r = httpx.post(f"{url}/search", json={"text": "a purple circle", "k": 3}, timeout=10)
        assert r.status_code == 200 and len(r.json()["results"]) == 3
        # a slow request in flight when SIGTERM comes (a 9000 x 9000 PNG: small to send, long to decode)
        # is answered before the process exits
        import threading

        slow = io.BytesIO()
        Image.new("RGB", (9000, 9000), (90, 20, 160)).save(slow, format="PNG")
        answer: dict[str, object] = {}
        def send() -> None:
            answer["r"] = httpx.post(f"{url}/search/image", timeout=60,
                                     files={"file": ("big.png", slow.getvalue(), "image/png")})
            answer["done"] = time.monotonic()

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.4)
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        sender.join(timeout=60)
        assert proc.wait(timeout=30) == 0  # a graceful stop
        assert answer["r"].status_code == 200  # type: ignore[attr-defined]  # the in-flight request was finished
        assert answer["done"] > stopped  # type: ignore[operator]  # ... after SIGTERM came
    err = proc.stderr.read() if proc.stderr else ""
    assert "loaded" in err and "in " in err  # the start-up time is logged


def test_another_host_than_localhost_is_warned_about(monkeypatch: pytest.MonkeyPatch, served: tuple[Path, Path],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    import uvicorn

    from xmr.serve import serve

    run, idx = served
    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))  # never binds
    monkeypatch.delenv("XMR_API_KEY", raising=False)
    with caplog.at_level("WARNING"):
        serve(run, idx, ServeConfig(host="0.0.0.0", port=8123))
    assert seen["host"] == "0.0.0.0" and "reachable from other machines" in caplog.text and "XMR_API_KEY" in caplog.text
    caplog.clear()
    serve(run, idx, ServeConfig())
    assert seen["host"] == "127.0.0.1" and "reachable" not in caplog.text


def test_a_request_that_crashes_is_a_json_500_and_the_service_goes_on(served: tuple[Path, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    run, idx = served
    service = SearchService.load(run, idx)
    c = TestClient(create_app(service), raise_server_exceptions=False)

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(service, "search", boom)
    r = c.post("/search", json={"text": "a red circle"})
    assert r.status_code == 500 and r.json()["error"].startswith("internal error") and "a bug" not in r.text
    monkeypatch.undo()
    assert c.post("/search", json={"text": "a red circle"}).status_code == 200 and c.get("/healthz").status_code == 200


def test_serve_help_shows_the_config_defaults() -> None:
    from xmr.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "cmd").choices["serve"]  # type: ignore[attr-defined]
    text = " ".join(sub.format_help().split())
    c = ServeConfig()
    for shown in (c.host, c.port, f"{c.max_upload_mb:g}", c.workers):
        assert f"(default: {shown})" in text


def test_filters_on_texts_keep_the_texts_any_of_whose_items_passes(client: TestClient,
                                                                   served: tuple[Path, Path]) -> None:
    """Issue 25, 2.2: every shapes text is carried by an s0 item (its first) and an s1 item; a filter on
    s1 keeps them all (it kept none: a text was judged by its first item only), each shown with an s1 item."""
    run, idx = served
    s = Searcher.from_run(run, idx)
    full = s.search_text("a purple circle", len(s.texts), target="texts")
    carried_by = {t: {it.style for it in s.items if t in it.texts} for t in s.texts}
    want = [h.id for h in full if "s1" in carried_by[h.text]]
    assert len(want) == len(s.texts) == 15  # every text: the reference is not empty
    for k, offset in ((50, 0), (4, 3)):
        r = client.post("/search", json={"text": "a purple circle", "target": "texts", "k": k, "offset": offset,
                                         "filters": {"style": "s1"}}).json()
        assert [h["id"] for h in r["results"]] == want[offset:offset + k] and r["total"] == len(want)
        assert all(h["fields"]["style"] == "s1" and h["fields"]["item"].endswith("/1") for h in r["results"])
    both = client.post("/search", json={"text": "a purple circle", "target": "texts", "k": 50,
                                        "filters": {"style": "s1", "label": "circle"}}).json()
    want_circle = [h.id for h in full if any(it.style == "s1" and it.label == "circle" and h.text in it.texts
                                             for it in s.items)]
    assert [h["id"] for h in both["results"]] == want_circle and len(want_circle) == 6  # "a <c> circle", "<c>"
