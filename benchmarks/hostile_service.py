"""The service probes of the hostile-input survey (issue 25, section 3): copied into each case folder
as ``svc.py`` by ``hostile_inputs.py``, run there as ``python svc.py PROBE [xmr serve options]``.

Each probe starts ``xmr serve run`` on a free 127.0.0.1 port (its log in ``serve.log``), does one
hostile thing over HTTP, prints one line saying what happened, and stops the server it started, by
its PID. Standard library, httpx and Pillow only; it never imports xmr (it must run against any
checkout's code).
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import httpx

from xmr.bench.http import pieces, post_chunked

PORT: int = 0
PROC: subprocess.Popen[bytes] | None = None


def start(*args: str) -> str:
    """Start ``xmr serve run ARGS`` on a free port; its base URL once /healthz answers."""
    global PORT, PROC
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        PORT = s.getsockname()[1]
    log = open("serve.log", "wb")  # noqa: SIM115 (the server's, for as long as it runs)
    PROC = subprocess.Popen(["xmr", "serve", "run", "--port", str(PORT), *args], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{PORT}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and PROC.poll() is None:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"the service did not start: {open('serve.log').read()[-500:]}")


def stop(sig: int = signal.SIGTERM, wait: float = 30) -> int | None:
    """Signal the server started here (by its PID) and wait for it; SIGKILL if it does not exit."""
    if PROC is None or PROC.poll() is not None:
        return PROC.returncode if PROC else None
    PROC.send_signal(sig)
    try:
        return PROC.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        PROC.kill()
        PROC.wait()
        return None


def rss_mb(field: str = "VmRSS") -> float:
    with open(f"/proc/{PROC.pid if PROC else 0}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def log_says() -> str:
    text = open("serve.log", errors="replace").read()
    return (f"server log: {text.count('Traceback')} traceback(s), {text.count('CancelledError')} CancelledError, "
            f"{text.count('dropped at shutdown')} 'dropped at shutdown'")


def chunked(path: str, content_type: str, chunks: Iterator[bytes]) -> str:
    """POST a chunked body piece by piece until the server answers; what was sent, and the answer."""
    sent, offered, response = post_chunked(PORT, path, content_type, chunks, timeout=120)
    answer = response.decode(errors="replace")
    status = answer.split("\r\n", 1)[0] or "no answer"
    body = answer.partition("\r\n\r\n")[2][:90]
    return f"{status} {body} -- body sent: {sent / 2**20:.1f} of {offered / 2**20:.0f} MB"


def chunked_json() -> str:
    start()
    return chunked("/search", "application/json", pieces(b'{"text": "a purple circle",', b" ", 15 << 20, b'"k": 3}'))


def chunked_upload() -> str:
    start()
    head = (b'--xb\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
            b"Content-Type: image/png\r\n\r\n\x89PNG")
    return chunked("/search/image", "multipart/form-data; boundary=xb",
                   pieces(head, b"\0", 100 << 20, b"\r\n--xb--\r\n"))


def many_filter_values() -> str:
    url = start()
    before = rss_mb()
    body = {"text": "a purple circle", "filters": {"group": [f"g{i}" for i in range(300_000)]}}
    t0 = time.monotonic()
    r = httpx.post(url + "/search", json=body, timeout=300)
    took = time.monotonic() - t0
    time.sleep(0.5)
    return (f"{r.status_code} {r.text[:90]} -- {took:.1f} s; server RSS {before:.0f} -> {rss_mb():.0f} MB, "
            f"kept after the request")


def made_up_paths() -> str:
    url = start()
    with httpx.Client(base_url=url, timeout=30) as c:
        before = len(c.get("/metrics").text)
        for i in range(3000):
            c.get(f"/no-such-{i}")
        after = len(c.get("/metrics").text)
    return f"/metrics {before / 1000:.0f} kB -> {after / 1000:.0f} kB after 3,000 requests to made-up paths"


def _gallery_with_a_symlink() -> str:
    """Index one item whose image is the symlink item.png (-> data/img/red-circle-0.png) into idx2."""
    os.symlink(os.path.abspath("data/img/red-circle-0.png"), "item.png")
    with open("g.jsonl", "w") as f:
        f.write(json.dumps({"id": "one", "image": os.path.abspath("item.png"), "texts": ["a red circle"]}) + "\n")
    subprocess.run(["xmr", "-q", "index", "run", "--manifest", "g.jsonl", "--out", "idx2"], check=True)
    return start("--index", "idx2")


def image_swapped() -> str:
    url = _gallery_with_a_symlink()
    first = httpx.get(url + "/images/one", timeout=30).status_code
    with open("secret.txt", "w") as f:
        f.write("root:x:0:0:root:/root:/bin/bash\n")
    os.symlink(os.path.abspath("secret.txt"), "swap")
    os.replace("swap", "item.png")
    r = httpx.get(url + "/images/one", timeout=30)
    return (f"first view {first}; after the symlink is re-pointed at secret.txt: {r.status_code} "
            f"{r.headers.get('content-type')} {r.text[:60]!r}")


def image_deleted() -> str:
    url = _gallery_with_a_symlink()
    first = httpx.get(url + "/images/one", timeout=30).status_code
    os.remove("data/img/red-circle-0.png")
    r = httpx.get(url + "/images/one", timeout=30)
    return f"first view {first}; after the file is deleted: {r.status_code} {r.text[:60]!r}; {log_says()}"


def rebinding() -> str:
    url = start()
    r = httpx.get(url + "/info", headers={"host": "evil.example:8000"}, timeout=30)
    return f"Host: evil.example:8000 -> {r.status_code} {r.text[:110]}"


def slow_body() -> str:
    start()
    sock = socket.create_connection(("127.0.0.1", PORT), timeout=60)
    sock.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"text\": ")
    t0 = time.monotonic()
    sock.settimeout(45)
    try:
        answer = sock.recv(4096).decode(errors="replace")
        got = f"{answer.splitlines()[0]} {answer.partition(chr(13) + chr(10) + chr(13) + chr(10))[2][:80]}"
    except TimeoutError:
        got = "no answer"
    return f"10 of 1000 bytes sent, then nothing: {got} after {time.monotonic() - t0:.0f} s"


def big_decodes() -> str:
    from PIL import Image

    url = start()
    buf = io.BytesIO()
    Image.new("L", (12000, 12000), 200).save(buf, format="PNG")  # 140 kB, 144 megapixels
    body = {"image": base64.b64encode(buf.getvalue()).decode(), "k": 1}
    before = rss_mb()
    statuses: list[int] = []

    def upload() -> None:
        statuses.append(httpx.post(url + "/search", json=body, timeout=300).status_code)

    threads = [threading.Thread(target=upload) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (f"8 uploads of a 12000 x 12000 PNG at once: {statuses.count(200)}/8 answered; server peak RSS "
            f"{before:.0f} -> {rss_mb('VmHWM'):.0f} MB")


def sigterm_slow_clients() -> str:
    start()
    socks = []
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", PORT), timeout=60)
        s.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"text\": ")
        socks.append(s)
    time.sleep(0.5)
    t0 = time.monotonic()
    code = stop(wait=60)
    answers = []
    for s in socks:
        s.settimeout(5)
        try:
            answers.append(s.recv(4096).decode(errors="replace").split("\r\n", 1)[0] or "closed")
        except OSError:
            answers.append("reset")
    return f"exit {code} after {time.monotonic() - t0:.0f} s; the slow clients got {answers}; {log_says()}"


def texts_filtered() -> str:
    url = start()
    r = httpx.post(url + "/search", json={"text": "purple", "target": "texts", "k": 50,
                                          "filters": {"style": "s1"}}, timeout=30).json()
    return f"target texts, style s1: {len(r['results'])} results, total {r['total']} (the index holds 15 texts)"


PROBES: dict[str, Callable[[], str]] = {
    "chunked-json": chunked_json, "chunked-upload": chunked_upload, "many-filter-values": many_filter_values,
    "made-up-paths": made_up_paths, "image-swapped": image_swapped, "image-deleted": image_deleted,
    "rebinding": rebinding, "slow-body": slow_body, "big-decodes": big_decodes,
    "sigterm-slow-clients": sigterm_slow_clients, "texts-filtered": texts_filtered,
}

if __name__ == "__main__":
    try:
        print(PROBES[sys.argv[1]]())
    finally:
        stop()
