"""``xmr serve RUN``: the search service and its page (:func:`xmr.serve.serve`), configured by a
:class:`~xmr.serve.config.ServeConfig` built from the options given."""

from __future__ import annotations

import argparse

from xmr.cli.options import Number, add_runtime, given_values, positive, positive_int, runtime_from_args


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="a search service and web page for an indexed run (FastAPI + uvicorn)")
    p.add_argument("run")
    p.add_argument("--index", default=None, help="index folder (default: RUN/index)")
    p.add_argument("--host", default=None, help="address to bind (any but 127.0.0.1 / localhost is warned about)")
    p.add_argument("--port", type=Number(1, 65535), default=None, help="TCP port")
    p.add_argument("--workers", type=positive_int, default=None, help="worker processes (each loads the run)")
    p.add_argument("--max-upload-mb", type=positive, default=None, help="largest image upload in MB")
    p.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                   help="allow this origin by CORS (repeatable; default: CORS off)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="accept requests naming this host in their Host header (repeatable; '*': any), besides "
                        "the bound address (and localhost when it is a loopback one); with --host 0.0.0.0 and no "
                        "--allow-host, any name. Other names are refused (DNS rebinding)")
    p.add_argument("--body-timeout", type=positive, default=None, metavar="SECONDS",
                   help="a request body slower to arrive is refused (408) and its client dropped")
    p.add_argument("--max-decodes", type=positive_int, default=None, metavar="N",
                   help="image decodes at once (uploads, gallery images checked); the others wait")
    p.add_argument("--max-filter-values", type=positive_int, default=None, metavar="N",
                   help="filter values one query may name")
    p.add_argument("--graceful-timeout", type=positive, default=None, metavar="SECONDS",
                   help="after SIGTERM, what requests in flight may take to finish; then they get a 503")
    p.add_argument("--exact-text", action="store_true",
                   help="encode query texts with the run's own text encoder, not its faster stand-in (int8 ONNX "
                        "MiniLM for minilm-l6, the same features within 1e-3 cosine)")
    add_runtime(p)
    p.defaults_fn = _serve_defaults  # type: ignore[attr-defined]  # read by _Parser.format_help
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    # idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE, set by main before torch or FAISS load)
    from xmr.runtime import RuntimeConfig
    from xmr.serve import ServeConfig, serve
    from xmr.tasks import load_service

    runtime_from_args(a)  # a device this machine lacks fails now, in one line; each worker resolves it again

    given = {k: v for k, v in (("host", a.host), ("port", a.port), ("workers", a.workers),
                               ("max_upload_mb", a.max_upload_mb), ("body_timeout", a.body_timeout),
                               ("max_decodes", a.max_decodes), ("max_filter_values", a.max_filter_values),
                               ("graceful_timeout", a.graceful_timeout)) if v is not None}
    if a.cors:
        given["cors_origins"] = tuple(a.cors)
    if a.allow_host:
        given["allowed_hosts"] = tuple(a.allow_host)
    if a.exact_text:
        given["fast_text"] = False
    given["runtime"] = RuntimeConfig(**given_values(a, {"device": "device", "precision": "precision"}))
    serve(a.run, a.index, ServeConfig(**given), load=load_service)  # the run's task's service, if it can serve


def _serve_defaults() -> dict[str, str]:
    """``xmr serve``'s option defaults for ``--help``, from :class:`~xmr.serve.config.ServeConfig`."""
    from xmr.serve.config import ServeConfig

    c = ServeConfig()
    return {"host": c.host, "port": str(c.port), "workers": str(c.workers), "max_upload_mb": f"{c.max_upload_mb:g}",
            "body_timeout": f"{c.body_timeout:g}", "max_decodes": str(c.max_decodes),
            "max_filter_values": str(c.max_filter_values), "graceful_timeout": f"{c.graceful_timeout:g}"}
