"""Load on `xmr serve`: text queries/s, p50/p95/p99, errors, against the in-process search in the same run.

Each gallery is synthetic at the size and index type asked (``--galleries 100000:hnsw
1000000:flat``): unit vectors drawn from the run's own image embeddings plus noise, so the index,
its metadata and the ranking work are those of a real gallery of that size (latency depends on
the size, not the pictures); each item points at one of the run's real images so ``/images`` and
uploads work. The run gives the model and the text encoder (MiniLM; the service and the
baselines all encode query texts with its int8 ONNX stand-in). Every query is a distinct
sentence, so the text-embedding cache never answers one.

Per gallery, in one invocation (the machine is noisy, so ratios are against baselines measured
in the same run, one phase after another):

1. sequential: ``Searcher.search_text`` on each query, one after another (what a script gets);
2. in-process service: ``SearchService.search`` from ``--concurrency`` threads: the service's
   micro-batching and encoders without HTTP (the baseline of the HTTP overhead);
3. HTTP: ``xmr serve`` in its own process on 127.0.0.1, driven by a small asyncio-streams client
   with ``--concurrency`` requests in flight on keep-alive connections, a fixed query count and a
   time cap (both bounded); the CPU the service and the client used is read from ``/proc``;
4. at the first gallery: other concurrencies (``--sweep``) and image uploads (multipart PNG).

Example::

    python benchmarks/bench_serve.py --run /work/xmr-runs/newcomer/run --work /work/xmr-runs/bench-serve \\
        --galleries 100000:hnsw 100000:flat 10000:flat 1000000:flat 1000000:hnsw
"""

from __future__ import annotations

import os

# as `xmr serve` does: idle OpenMP threads sleep (read when the runtime loads, so before numpy / faiss / torch)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import asyncio
import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from xmr.bench.common import command_line, load_note, markdown
from xmr.data.manifest import Item, write_manifest
from xmr.index import create_index
from xmr.index.run_record import INDEX_RUN_FILE, IndexRun, load_index_run, save_index_run
from xmr.runs.config import load_run
from xmr.search import Searcher
from xmr.serve.config import ServeConfig
from xmr.utils.arrays import l2_normalize
from xmr.utils.io import atomic_write_text, save_json

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


def synthetic_index(run: Path, size: int, out: Path, index_type: str = "flat", ef_search: int = 64) -> Path:
    """An index folder of ``size`` items for ``run`` (see the module docstring), of ``index_type``
    (``flat``: exact; ``hnsw``: HNSW32 searched with ``ef_search``, as ``xmr index --factory HNSW32
    --ef-search N``); built once."""
    done = load_index_run(out) if (out / INDEX_RUN_FILE).is_file() else IndexRun(n_images=-1)
    params = {"ef_search": ef_search} if index_type == "hnsw" else {}
    if done.n_images == size and done.extra.get("index_type", "flat") == index_type and done.search_params == params:
        return out
    cfg, model = load_run(run)
    real = Searcher.from_run(run)  # the run's own index: its image vectors and items
    gallery = real.indexes["images"]
    base = gallery.reconstruct(gallery.ids())
    rng = np.random.default_rng(size)
    pick = rng.integers(0, len(base), size)
    vecs = l2_normalize((base[pick] + 0.05 * rng.standard_normal((size, base.shape[1]))).astype(np.float32))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    images = create_index(index_type, dim=model.config.embed_dim, model_id=model.model_id, **params)
    images.add(vecs)
    log.info("built the %s index of %d items in %.0f s", index_type, size, time.perf_counter() - t0)
    images.save(out / "images")
    texts = create_index("flat", dim=model.config.embed_dim, model_id=model.model_id)
    texts.save(out / "texts")
    items = [Item(id=f"item-{i}", image=real.items[int(j)].image, texts=(),
                  style=real.items[int(j)].style) for i, j in enumerate(pick)]
    write_manifest(items, out / "gallery.jsonl")
    save_json(out / "texts.json", [])
    save_index_run(out, IndexRun(run=str(run.resolve()), model_id=model.model_id, n_images=size, search_params=params,
                                 command=command_line(), extra={"synthetic": True, "index_type": index_type,
                                                                "build_seconds": time.perf_counter() - t0}))
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sequential_searcher(run: Path, index: Path, texts: list[str], max_seconds: float) -> dict[str, float]:
    """``Searcher.search_text`` one query after another (the floor a script gets)."""
    s = Searcher.from_run(run, index, fast_text=True)
    s.search_text("warm up", 10)
    lat: list[float] = []
    t0 = time.perf_counter()
    for t in texts:
        t1 = time.perf_counter()
        s.search_text(t, 10)
        lat.append(time.perf_counter() - t1)
        if t1 - t0 > max_seconds:
            break
    wall = time.perf_counter() - t0
    return {"qps": len(lat) / wall, "p50": pct(lat, 50), "p99": pct(lat, 99)}


def inprocess_service(run: Path, index: Path, texts: list[str], concurrency: int, max_seconds: float
                      ) -> dict[str, float]:
    """The service's own search (micro-batching, the same encoders) from ``concurrency`` threads, no HTTP."""
    from concurrent.futures import ThreadPoolExecutor

    from xmr.serve.service import Query, SearchService

    svc = SearchService.load(run, index, fast_text=True, cache_size=0)
    svc.warm_up()
    for t in texts[:20]:
        svc.search(Query(text=t + " (warm-up)"))
    deadline = time.perf_counter() + max_seconds

    def one(t: str) -> float:
        if time.perf_counter() > deadline:
            return float("nan")
        t1 = time.perf_counter()
        svc.search(Query(text=t, k=10))
        return time.perf_counter() - t1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        lat = [x for x in pool.map(one, texts) if x == x]
    wall = time.perf_counter() - t0
    return {"qps": len(lat) / wall, "p50": pct(lat, 50), "p99": pct(lat, 99),
            "text_batch": svc._texts.inputs / max(svc._texts.batches, 1)}


def http_load(port: int, pid: int, texts: list[str], concurrency: int, max_seconds: float) -> dict[str, float]:
    """Distinct text queries over HTTP; q/s, percentiles, errors, and the CPU the service and client used."""
    requests = [http_request("/search", json.dumps({"text": t, "k": 10}).encode(), "application/json") for t in texts]
    server0, client0 = cpu_seconds(pid), time.process_time()
    lat, errors, wall = asyncio.run(drive(port, requests, concurrency, max_seconds, k=10))
    return {"n": len(lat), "qps": len(lat) / wall, "p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99),
            "errors": errors, "server_cores": (cpu_seconds(pid) - server0) / wall,
            "client_cores": (time.process_time() - client0) / wall}


def upload_load(port: int, index: Path, n: int, concurrency: int, max_seconds: float) -> dict[str, float]:
    """``POST /search/image`` (multipart PNG uploads of the gallery's own pictures)."""
    import io

    from PIL import Image

    rows = [json.loads(line) for line in (index / "gallery.jsonl").read_text().splitlines()[:n]]
    requests = []
    for row in rows:
        buf = io.BytesIO()
        Image.open(row["image"]).convert("RGB").save(buf, format="PNG")
        body, content_type = multipart(buf.getvalue())
        requests.append(http_request("/search/image", body, content_type))
    lat, errors, wall = asyncio.run(drive(port, requests, concurrency, max_seconds, k=10))
    return {"n": len(lat), "qps": len(lat) / wall, "p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99),
            "errors": errors}


def recall_against_flat(run: Path, work: Path, specs: list[str], texts: list[str], ef_search: int) -> str:
    """Recall@10 of each non-flat gallery's index against the flat index of the same size, on the
    query texts' embeddings (both folders are built by :func:`synthetic_index` from the same seed)."""
    s = Searcher.from_run(run, fast_text=True)
    queries_emb = s.embed_texts(texts)
    rows = []
    for spec in specs:
        size_text, _, kind = spec.partition(":")
        size = int(size_text)
        if kind in ("", "flat"):
            continue
        approx = Searcher.from_run(run, synthetic_index(run, size, work / f"{kind}-{size}", kind, ef_search),
                                   fast_text=True)
        exact = Searcher.from_run(run, synthetic_index(run, size, work / f"flat-{size}", "flat"), fast_text=True)
        _, a = approx.search_vectors(queries_emb, 10)
        _, e = exact.search_vectors(queries_emb, 10)
        recall = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, e)])
        rows.append([f"{size:,}", kind, f"{recall:.3f}"])
    return markdown(["gallery", "index", f"recall@10 vs flat ({len(texts)} query texts)"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--run", type=Path, required=True, help="an indexed retrieval run (its model and encoders)")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-serve"), help="synthetic index folders")
    ap.add_argument("--galleries", nargs="+", default=["100000:hnsw", "100000:flat"], metavar="SIZE:TYPE",
                    help="gallery sizes and index types (flat: exact; hnsw: HNSW32)")
    ap.add_argument("--queries", type=int, default=2000, help="text queries per gallery (bounded count)")
    ap.add_argument("--images", type=int, default=200, help="image uploads at the first gallery")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    ap.add_argument("--sweep", type=int, nargs="*", default=[4, 16],
                    help="other concurrencies tried over HTTP at the first gallery")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="time cap of each load phase")
    ap.add_argument("--ef-search", type=int, default=256,
                    help="HNSW beam width of the hnsw galleries (recall@10 vs flat at 100k: 64 -> 0.79, 256 -> 0.97)")
    ap.add_argument("--recall", action="store_true",
                    help="only the recall@10 of each gallery's approximate index against flat (no load)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "serve")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.recall:
        text = "\n\n".join(["# Recall of the approximate galleries of bench_serve.py", f"Command: `{command_line()}`",
                             recall_against_flat(args.run, args.work, args.galleries, queries(args.queries),
                                                 args.ef_search)])
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "bench_serve_recall.md", text + "\n")
        print(text)
        return 0
    import torch

    torch.set_num_threads(ServeConfig().torch_threads)  # the in-process baselines run as the service does
    load_before = load_note()
    texts = queries(args.queries)
    rows, sweep, image_row = [], [], None
    for g, spec in enumerate(args.galleries):
        size_text, _, kind = spec.partition(":")
        size, kind = int(size_text), kind or "flat"
        index = synthetic_index(args.run, size, args.work / f"{kind}-{size}", kind, args.ef_search)
        seq = sequential_searcher(args.run, index, texts, args.max_seconds)
        inproc = inprocess_service(args.run, index, texts, args.concurrency, args.max_seconds)
        port = _free_port()
        proc, startup = start_service(args.run, index, port)
        try:
            asyncio.run(drive(port, [http_request("/search", b'{"text": "warm up"}', "application/json")] * 20, 2, 30))
            http = http_load(port, proc.pid, [t + " (http)" for t in texts], args.concurrency, args.max_seconds)
            if g == 0:
                for c in args.sweep:
                    sweep.append({"concurrency": c, **http_load(port, proc.pid, [t + f" (c{c})" for t in texts], c,
                                                                args.max_seconds)})
                if args.images:
                    image_row = {"gallery": spec, **upload_load(port, index, args.images, args.concurrency,
                                                                args.max_seconds)}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        rows.append({"size": size, "index": kind, "startup_s": startup, "seq": seq, "inproc": inproc, "http": http,
                     "overhead": inproc["qps"] / http["qps"] - 1})
        log.info("%d items, %s: %.0f q/s over HTTP (in-process service %.0f, sequential %.0f), p99 %.1f ms, "
                 "%d errors", size, kind, http["qps"], inproc["qps"], seq["qps"], http["p99"], http["errors"])
    table = markdown(
        ["gallery", "index", "sequential Searcher q/s (p50 ms)", f"in-process service, {args.concurrency} threads: "
         "q/s (p50 / p99 ms)", f"HTTP, {args.concurrency} in flight: q/s", "HTTP p50 / p95 / p99 ms", "errors",
         "HTTP overhead (in-process ÷ HTTP q/s − 1)", "service / client CPU (cores)", "start-up s"],
        [[f"{r['size']:,}", r["index"], f"{r['seq']['qps']:.0f} ({r['seq']['p50']:.1f})",
          f"{r['inproc']['qps']:.0f} ({r['inproc']['p50']:.1f} / {r['inproc']['p99']:.1f})", f"{r['http']['qps']:.0f}",
          f"{r['http']['p50']:.1f} / {r['http']['p95']:.1f} / {r['http']['p99']:.1f}",
          f"{r['http']['errors']} / {r['http']['n']}", f"{100 * r['overhead']:+.0f} %",
          f"{r['http']['server_cores']:.2f} / {r['http']['client_cores']:.2f}", f"{r['startup_s']:.1f}"]
         for r in rows])
    sweep_table = "" if not sweep else markdown(
        [f"in flight ({args.galleries[0]})", "q/s", "p50 / p95 / p99 ms", "errors", "service CPU (cores)"],
        [[str(r["concurrency"]), f"{r['qps']:.0f}", f"{r['p50']:.1f} / {r['p95']:.1f} / {r['p99']:.1f}",
          f"{r['errors']} / {r['n']}", f"{r['server_cores']:.2f}"] for r in sweep])
    img = "" if image_row is None else markdown(
        ["image uploads (multipart PNG)", "q/s", "p50 / p95 / p99 ms", "errors"],
        [[f"{image_row['n']} at {image_row['gallery']}", f"{image_row['qps']:.1f}",
          f"{image_row['p50']:.1f} / {image_row['p95']:.1f} / {image_row['p99']:.1f}",
          f"{image_row['errors']} / {image_row['n']}"]])
    text = "\n\n".join([
        "# xmr serve under load (distinct text queries: the embedding cache never answers)",
        f"Command: `{command_line()}`",
        f"k 10, {args.queries} text queries per gallery (each phase capped at {args.max_seconds:g} s); the "
        "service (`xmr serve`, its defaults: int8 ONNX MiniLM for query texts), the load client (asyncio streams) and "
        "the in-process baselines share the same 2 cores, one after another.", table, sweep_table, img,
        f"{load_before} at start."])
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "bench_serve.md", text + "\n")
    save_json(args.out / "bench_serve.json", {"command": command_line(), "rows": rows, "sweep": sweep,
                                             "image": image_row})
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
