"""Load on `xmr serve`: text queries/s, p50/p95/p99, errors, against the in-process Searcher in the same run.

The gallery is synthetic at the size asked (``--sizes``, default 100,000): unit vectors drawn from
the run's own image embeddings plus noise, so the index, its metadata and the ranking work are
those of a real gallery of that size (latency depends on the size, not the pictures); each item
points at one of the run's real images so ``/images`` works. The run gives the model and the
text encoder (MiniLM here): every query is a distinct sentence, so the text-embedding cache
never answers one (``--repeat-queries`` measures the cached path instead).

Per gallery size, in one invocation (the machine is noisy, so ratios are against a baseline
measured in the same run):

1. in-process: ``Searcher.search_text`` on each query, one after another (the floor);
2. HTTP: ``xmr serve`` in its own process on 127.0.0.1, driven by an asyncio httpx client with
   ``--concurrency`` requests in flight, a fixed query count and a time cap (both bounded);
3. image uploads (``POST /search/image``, multipart) at the first size.

Example::

    python benchmarks/bench_serve.py --run /work/xmr-runs/newcomer/run --sizes 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from xmr.bench.common import command_line, load_note, markdown
from xmr.data.manifest import Item, write_manifest
from xmr.index import create_index
from xmr.runs.config import load_run
from xmr.search import Searcher
from xmr.utils.arrays import l2_normalize
from xmr.utils.io import atomic_write_text, load_json, save_json

log = logging.getLogger("bench_serve")

SUBJECTS = ["a cat", "a dog", "a bicycle", "a red car", "a house", "a tree", "a phone", "a battery", "a lock",
            "a music note", "a cloud", "the sun", "a plane", "a ship", "a train", "a clock", "a camera", "a book",
            "a heart", "a star", "a key", "a cup of coffee", "a pizza", "a rocket", "a flower", "a fish"]
MODIFIERS = ["", "small", "big", "happy", "broken", "blue", "green", "old", "new", "flying", "sleeping", "fast",
             "dark", "bright", "tiny", "giant", "striped", "spotted", "wooden", "golden"]
PLACES = ["", "on a table", "in the rain", "at night", "in a box", "on the beach", "in space", "with a hat",
          "under a bridge", "in a garden", "near a window", "on a hill"]


def queries(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct short sentences."""
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        words = [str(rng.choice(MODIFIERS)), str(rng.choice(SUBJECTS)), str(rng.choice(PLACES))]
        out[" ".join(w for w in words if w) + f" {len(out)}" * (len(out) >= 5000)] = None
    return list(out)


def synthetic_index(run: Path, size: int, out: Path, index_type: str = "flat") -> Path:
    """An index folder of ``size`` items for ``run`` (see the module docstring), of ``index_type``
    (``flat``: exact; ``hnsw``: HNSW32, ef_search 128); built once."""
    done = load_json(out / "index_run.json") if (out / "index_run.json").is_file() else {}
    if done.get("n_images") == size and done.get("index_type", "flat") == index_type:
        return out
    cfg, model = load_run(run)
    real = Searcher.from_run(run)  # the run's own index: its image vectors and items
    base = real.indexes["images"].faiss_index.reconstruct_n(0, len(real.indexes["images"]))
    rng = np.random.default_rng(size)
    pick = rng.integers(0, len(base), size)
    vecs = l2_normalize((base[pick] + 0.05 * rng.standard_normal((size, base.shape[1]))).astype(np.float32))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    images = create_index(index_type, dim=model.config.embed_dim, model_id=model.model_id)
    images.add(vecs)
    log.info("built the %s index of %d items in %.0f s", index_type, size, time.perf_counter() - t0)
    images.save(out / "images")
    texts = create_index("flat", dim=model.config.embed_dim, model_id=model.model_id)
    texts.save(out / "texts")
    items = [Item(id=f"item-{i}", image=real.items[int(j)].image, texts=(),
                  style=real.items[int(j)].style) for i, j in enumerate(pick)]
    write_manifest(items, out / "gallery.jsonl")
    save_json(out / "texts.json", [])
    save_json(out / "index_run.json", {"run": str(run.resolve()), "model_id": model.model_id, "n_images": size,
                                       "n_texts": 0, "synthetic": True, "index_type": index_type,
                                       "build_seconds": time.perf_counter() - t0, "command": command_line()})
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(run: Path, index: Path, port: int, timeout: float = 180.0) -> tuple[subprocess.Popen[bytes], float]:
    """``xmr serve`` in its own process; (process, seconds until /healthz answered)."""
    import httpx

    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "xmr", "-q", "serve", str(run), "--index", str(index), "--port",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"xmr serve exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return proc, time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("xmr serve did not answer /healthz in time")


def http_request(path: str, body: bytes, content_type: str) -> bytes:
    """One HTTP/1.1 keep-alive POST, serialised once before the load starts."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def multipart(data: bytes, boundary: str = "xmrbenchboundary") -> tuple[bytes, str]:
    """A multipart/form-data body holding ``data`` as the field ``file``; (body, content type)."""
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    """Send one request on an open connection; (status, body). Responses carry Content-Length."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def drive(port: int, requests: list[bytes], concurrency: int, max_seconds: float, k: int | None = None
                ) -> tuple[list[float], int, float]:
    """Send every request (at most ``max_seconds``), ``concurrency`` in flight on keep-alive connections.

    The client is a few lines on asyncio streams (no HTTP library): it costs the shared 2 cores
    little, so the service gets most of them. A response counts as an error unless it is a 200
    whose JSON holds ``k`` results (when ``k`` is given). Returns (latencies s, errors, wall s).
    """
    latencies: list[float] = []
    errors = 0
    nxt = 0
    deadline = time.perf_counter() + max_seconds

    async def worker() -> None:
        nonlocal nxt, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while nxt < len(requests) and time.perf_counter() < deadline:
                i = nxt
                nxt += 1
                t = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(_exchange(reader, writer, requests[i]), 30.0)
                    ok = status == 200 and (k is None or len(json.loads(body)["results"]) == k)
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, KeyError):
                    ok = False
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                latencies.append(time.perf_counter() - t)
                errors += not ok
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - t0


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q)) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--run", type=Path, required=True, help="an indexed retrieval run (its model and encoders)")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-serve"), help="synthetic index folders")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--queries", type=int, default=2000, help="text queries per size (bounded count)")
    ap.add_argument("--images", type=int, default=200, help="image uploads at the first size")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-seconds", type=float, default=120.0, help="time cap of each load phase")
    ap.add_argument("--repeat-queries", action="store_true", help="send the same few queries (the cache answers)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "serve")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    load_before = load_note()
    texts = queries(args.queries)
    if args.repeat_queries:
        texts = [texts[i % 20] for i in range(len(texts))]
    rows, image_row = [], None
    for size in args.sizes:
        index = synthetic_index(args.run, size, args.work / f"gallery-{size}")
        s = Searcher.from_run(args.run, index)
        s.search_text(texts[0], 10)  # warm-up: encoder weights, BLAS
        lat = []
        t0 = time.perf_counter()
        for t in texts:  # bounded by count and by time
            t1 = time.perf_counter()
            s.search_text(t, 10)
            lat.append(time.perf_counter() - t1)
            if t1 - t0 > args.max_seconds:
                break
        inproc_wall = time.perf_counter() - t0
        del s
        port = _free_port()
        proc, startup = start_service(args.run, index, port)
        try:
            asyncio.run(drive(f"http://127.0.0.1:{port}/search", [{"text": "warm up"}] * 20, None, 2, 30))
            http_lat, errors, wall = asyncio.run(drive(f"http://127.0.0.1:{port}/search",
                                                       [{"text": t, "k": 10} for t in texts], None,
                                                       args.concurrency, args.max_seconds))
            if image_row is None and args.images:
                import io

                from PIL import Image

                items = [json.loads(line) for line in (index / "gallery.jsonl").read_text().splitlines()[:args.images]]
                uploads = []
                for it in items:
                    buf = io.BytesIO()
                    Image.open(index / it["image"] if not os.path.isabs(it["image"]) else it["image"]) \
                        .convert("RGB").save(buf, format="PNG")
                    uploads.append(buf.getvalue())
                img_lat, img_err, img_wall = asyncio.run(drive(f"http://127.0.0.1:{port}/search/image", None,
                                                               uploads, args.concurrency, args.max_seconds))
                image_row = {"size": size, "n": len(img_lat), "qps": len(img_lat) / img_wall, "p50": pct(img_lat, 50),
                             "p95": pct(img_lat, 95), "p99": pct(img_lat, 99), "errors": img_err}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        inproc_qps = len(lat) / inproc_wall
        http_qps = len(http_lat) / wall
        rows.append({"size": size, "startup_s": startup, "inproc_qps": inproc_qps, "inproc_p50": pct(lat, 50),
                     "inproc_p99": pct(lat, 99), "n": len(http_lat), "http_qps": http_qps, "p50": pct(http_lat, 50),
                     "p95": pct(http_lat, 95), "p99": pct(http_lat, 99), "errors": errors,
                     "overhead": inproc_qps / http_qps - 1})
        log.info("%d items: %.0f q/s over HTTP (in-process %.0f), p99 %.1f ms, %d errors", size, http_qps,
                 inproc_qps, rows[-1]["p99"], errors)
    table = markdown(["gallery", "in-process q/s", "in-process p50 / p99 ms", "HTTP q/s", "HTTP p50 / p95 / p99 ms",
                      "errors", "requests", "HTTP overhead (in-process q/s ÷ HTTP q/s − 1)", "start-up s"],
                     [[f"{r['size']:,}", f"{r['inproc_qps']:.0f}", f"{r['inproc_p50']:.1f} / {r['inproc_p99']:.1f}",
                       f"{r['http_qps']:.0f}", f"{r['p50']:.1f} / {r['p95']:.1f} / {r['p99']:.1f}", r["errors"], r["n"],
                       f"{100 * r['overhead']:+.0f} %", f"{r['startup_s']:.1f}"] for r in rows])
    img = "" if image_row is None else markdown(
        ["image uploads", "q/s", "p50 / p95 / p99 ms", "errors"],
        [[f"{image_row['n']} at {image_row['size']:,} items", f"{image_row['qps']:.1f}",
          f"{image_row['p50']:.1f} / {image_row['p95']:.1f} / {image_row['p99']:.1f}", image_row["errors"]]])
    text = "\n\n".join([f"# xmr serve under load ({'repeated' if args.repeat_queries else 'distinct'} text queries)",
                        f"Command: `{command_line()}`",
                        f"Concurrency {args.concurrency}, k 10, {args.queries} text queries per size, client, "
                        "service and in-process baseline on the same 2 cores.", table, img,
                        f"{load_before} at start."])
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "bench_serve_repeat" if args.repeat_queries else "bench_serve"
    atomic_write_text(args.out / f"{stem}.md", text + "\n")
    save_json(args.out / f"{stem}.json", {"command": command_line(), "rows": rows, "image": image_row})
    print(table)
    print(img)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
