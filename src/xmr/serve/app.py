"""The FastAPI application of ``xmr serve`` (see :mod:`xmr.serve.service` for the search itself).

Endpoints: ``POST /search`` (JSON), ``POST /search/image`` (multipart upload), ``GET /items/{id}``,
``GET /images/{id}``, ``GET /info``, ``GET /healthz``, ``GET /metrics`` (Prometheus text),
``GET /openapi.json``, ``GET /docs`` (the API, rendered from ``/openapi.json`` by the service's own
page: nothing fetched from elsewhere), and the page at ``/`` (with ``/favicon.ico``). Every error
is a JSON body ``{"error": ...}`` with its status: 400 a query the run cannot answer (naming the
``xmr index`` command that would build what is missing), 401 a wrong or missing API key, 404 an
unknown id, 413 an upload over the limit, 422 a malformed body (naming the field); an unexpected
failure of one request is a logged 500 and the service goes on. Before any endpoint,
:class:`xmr.serve.limits.Limits` answers 400 a ``Host`` naming another site, 413 a body over the
limit however it is framed, 408 a body too slow to arrive, and 503 what shutdown cancels.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import Callable
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xmr.errors import Call, Param, XmrError
from xmr.serve.config import ServeConfig
from xmr.serve.limits import Limits
from xmr.serve.query import Query, ServiceError, Stages, TooLarge, decode_base64_image
from xmr.serve.schemas import ErrorBody, Health, Info, Item, SearchRequest, SearchResponse
from xmr.serve.service import GalleryService

log = logging.getLogger(__name__)

#: answered without the API key: the page and /docs ask for the key themselves (the API they call needs it)
OPEN_PATHS = frozenset({"/healthz", "/", "/page.js", "/page.css", "/api.js", "/favicon.ico", "/docs", "/docs.js"})
#: the page's and /docs' files (``serve/page/``), with their media types; read once, no file I/O per request
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/page.js": ("page.js", "text/javascript"),
              "/page.css": ("page.css", "text/css"), "/api.js": ("api.js", "text/javascript"),
              "/docs": ("docs.html", "text/html; charset=utf-8"), "/docs.js": ("docs.js", "text/javascript"),
              "/favicon.ico": ("favicon.svg", "image/svg+xml")}
ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (400, 401, 404, 413, 422)}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The Prometheus series of one app (its own registry: two apps in one process never mix)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("xmr_requests_total", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("xmr_request_seconds", "request latency", ["endpoint"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.stages = Histogram("xmr_stage_seconds", "time per query stage", ["stage"], buckets=LATENCY_BUCKETS,
                                registry=self.registry)
        self.batches = Histogram("xmr_batch_size", "requests joined in one encoder or FAISS call", ["batcher"],
                                 buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)


def _error(status: int, message: str, detail: list[dict[str, object]] | None = None) -> JSONResponse:
    body: dict[str, object] = {"error": message}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


def http_wording(p: Param) -> str:
    """How the API names a parameter an error carries: by its field name (a job by its Python call)."""
    return p.python() if isinstance(p, Call) else p.name


def _xmr_error(status: int, exc: XmrError) -> JSONResponse:
    """An error's JSON body: its text with the parameters it names worded as fields, and those
    fields (with the value, where it is a plain JSON value) in ``detail``."""
    def plain(v: object) -> bool:
        return isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v))

    detail: list[dict[str, object]] = [{"field": p.name, **({"value": p.value} if plain(p.value) else {})}
                                       for p in exc.params() if not isinstance(p, Call)]
    return _error(status, exc.worded(http_wording), detail)


class Guard:
    """The ASGI middleware in front of every endpoint (a plain ASGI class: no extra task and
    stream per request, as a ``BaseHTTPMiddleware`` has): the API key, one request's crash turned
    into a logged JSON 500, the request metrics. The host, body size and body time limits come
    next, in :class:`xmr.serve.limits.Limits`."""

    def __init__(self, app: ASGIApp, config: ServeConfig, metrics: Metrics) -> None:
        self.app, self.config, self.metrics = app, config, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        route = scope.get("path", "")
        endpoint = endpoint_label(scope)
        headers = Headers(scope=scope)
        key = self.config.key()
        refused: Response | None = None
        if key is not None and route not in OPEN_PATHS:
            given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), key.encode()):
                refused = _error(401, "missing or wrong API key (X-API-Key header)")
        if refused is not None:
            await refused(scope, receive, send)
            self.metrics.requests.labels(endpoint, str(refused.status_code)).inc()
            return
        status = 500
        started = False

        async def watch(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = int(message["status"]), True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:  # one request's failure must not take the service down
            log.exception("request %s failed", route)
            status = 500  # counted as failed even if a response had begun
            if not started:
                await _error(500, "internal error (logged by the service)")(scope, receive, send)
        self.metrics.requests.labels(endpoint, str(status)).inc()
        self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)


def endpoint_label(scope: Scope) -> str:
    """The ``endpoint`` label of a request's metrics: the path of the route serving it, up to its
    first parameter (``/items``), or ``other`` for a path no route serves — one series per route,
    however many paths clients make up."""
    for route in getattr(scope.get("app"), "routes", ()):
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return str(getattr(route, "path", "")).split("{", 1)[0].rstrip("/") or "/"
    return "other"


def create_app(service: GalleryService, config: ServeConfig | None = None, *, startup_seconds: float = 0.0) -> FastAPI:
    """The service's application around a loaded :class:`SearchService`."""
    config = config or ServeConfig()
    config.key()  # an API key no client could send is refused here, not at the first request
    metrics = Metrics()
    # /docs is the service's own page (serve/page/docs.html), not swagger-ui or ReDoc from a CDN: it works offline
    app = FastAPI(title="xmr search", version="1", description=f"Cross-modal search over {service.run_dir}",
                  docs_url=None, redoc_url=None)
    app.state.service, app.state.config, app.state.metrics = service, config, metrics
    service.observe_batches(lambda batcher, size: metrics.batches.labels(batcher).observe(size))
    app.add_middleware(Limits, config=config)  # added first, so innermost: after the key check
    app.add_middleware(Guard, config=config, metrics=metrics)
    if config.cors_origins:  # added last, so outermost: preflights (which carry no key) are answered before
        # the key check, and a refusal (401, 413) carries the CORS headers the browser needs to read it
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"])

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _xmr_error(exc.status, exc)

    @app.exception_handler(XmrError)
    async def xmr_error(request: Request, exc: XmrError) -> JSONResponse:
        return _xmr_error(400, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "problem": e.get("msg", "")}
                  for e in exc.errors()]
        first = detail[0] if detail else {"field": "body", "problem": "invalid"}
        return _error(422, f"{first['field'] or 'body'}: {first['problem']}", detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    def run_query(q: Query, kind_hint: str | None = None) -> dict[str, Any]:
        if q.k > config.k_max or q.offset + q.k > config.k_max:
            raise ServiceError(f"k + offset must be at most {config.k_max}, got {q.offset + q.k}")
        n_values = sum(1 if isinstance(v, str) else len(v) for v in q.filters.values())
        if n_values > config.max_filter_values:
            raise ServiceError(f"filters: {n_values} values, at most {config.max_filter_values} in one query")
        t0 = time.perf_counter()
        stages = Stages()
        results, total = service.search(q, stages)
        for stage, seconds in stages.seconds.items():
            metrics.stages.labels(stage).observe(seconds)
        return {"results": results, "took_ms": 1000 * (time.perf_counter() - t0), "model_id": service.model_id,
                "query": kind_hint or q.kind, "target": q.target, "total": total}

    @app.post("/search", response_model=SearchResponse, responses=ERRORS)
    def search(body: SearchRequest) -> dict[str, Any]:
        """Search by text, image (base64), gallery item, vector, or image + text (composed)."""
        image = decode_base64_image(body.image, config.max_upload_bytes) if body.image is not None else None
        return run_query(Query(text=body.text, image=image, image_id=body.image_id, vector=body.vector,
                               target=body.target, k=body.k, offset=body.offset, rerank=body.rerank,
                               filters=body.filters))

    @app.post("/search/image", response_model=SearchResponse, responses=ERRORS)
    async def search_image(file: Annotated[UploadFile, File(description="the query image")],
                           text: Annotated[str | None, Form(max_length=2000)] = None,
                           target: Annotated[str, Form(pattern="^(images|texts)$")] = "images",
                           k: Annotated[int, Form(ge=1)] = 10, offset: Annotated[int, Form(ge=0)] = 0,
                           rerank: Annotated[str | None, Form()] = None) -> dict[str, Any]:
        """Search by an uploaded image (multipart), optionally with a modification text (composed)."""
        data = await file.read(config.max_upload_bytes + 1)
        if len(data) > config.max_upload_bytes:
            raise TooLarge(f"the image is larger than the upload limit ({config.max_upload_mb:g} MB)")
        query = Query(text=text, image=data, target=target, k=k, offset=offset,  # type: ignore[arg-type]
                      rerank=rerank or None)
        return await run_in_threadpool(run_query, query)  # decoded and encoded off the event loop

    @app.get("/items/{item_id:path}", response_model=Item, responses=ERRORS)
    def item(item_id: str) -> dict[str, object]:
        """A gallery item's texts and fields."""
        return service.item(item_id)

    @app.get("/images/{item_id:path}", responses={**ERRORS, 200: {"content": {"image/*": {}}}})
    def image(item_id: str) -> StreamingResponse:
        """A gallery item's image (only files that decode as images are served; checked on the file sent)."""
        chunks, media_type = service.open_image(item_id)
        return StreamingResponse(chunks, media_type=media_type)

    @app.get("/info", response_model=Info)
    def info() -> dict[str, object]:
        """What the page needs: filterable fields and their values, built re-rankers, sizes."""
        return {"run": str(service.run_dir), "task": service.task, "model_id": service.model_id,
                "n_images": len(service.items), "n_texts": service.n_texts, "fields": service.fields,
                "rerankers": service.rerankers, "text_encoder": service.text_encoder_id, "composed": service.composed,
                "k_max": config.k_max}

    @app.get("/healthz", response_model=Health)
    def healthz() -> dict[str, object]:
        return {"model_id": service.model_id, "task": service.task, "n_images": len(service.items),
                "n_texts": service.n_texts, "startup_seconds": startup_seconds}

    @app.get("/metrics", response_class=Response)
    def prometheus() -> Response:
        """Request counts, the latency histogram and per-stage times, Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    folder = resources.files("xmr.serve") / "page"
    for path, (name, media_type) in PAGE_FILES.items():
        app.add_api_route(path, _static((folder / name).read_bytes(), media_type), methods=["GET"],
                          include_in_schema=False)
    return app


def _static(content: bytes, media_type: str) -> Callable[[], Response]:
    """An endpoint answering ``content`` (one of the page's files, held in memory)."""
    def endpoint() -> Response:
        return Response(content, media_type=media_type)
    return endpoint
