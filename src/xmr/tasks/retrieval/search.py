"""``xmr search`` of a retrieval run: one text or image query, or a file of them, against the run's
index (:class:`xmr.search.Searcher`), as printable lines (one per hit, or one JSON object per query)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from xmr.errors import Param, XmrError
from xmr.tasks.base import Options
from xmr.tasks.options import SearchOptions
from xmr.utils.terminal import terminal_safe

if TYPE_CHECKING:
    from xmr.modality import Target
    from xmr.runtime.device import Runtime
    from xmr.search import Query, QueryResult, Searcher

log = logging.getLogger(__name__)


def search_lines(run_dir: str | Path, given: Options, runtime: Runtime | None = None) -> Iterator[str]:
    """The answers to the query (``text``, ``image``) or queries (``queries``: a file) in ``given``,
    terminal-safe lines yielded as they are ready; a query that failed raises at the end. ``runtime``: the
    device and precision the encoders and the model run at (None: the CPU at fp32)."""
    from xmr.modality import check_target
    from xmr.rerank.registry import rerankers_from_options
    from xmr.search import Query, Searcher, read_queries

    text, image, query_file = given.get("text"), given.get("image"), given.get("queries")
    if sum(x is not None for x in (text, image, query_file)) != 1:
        raise XmrError("give one of {text}, {image} or {queries} FILE (text and image together: only for a "
                       "composed run)", text=Param("text"), image=Param("image"), queries=Param("queries"))
    queries = read_queries(str(query_file)) if query_file is not None else \
        [Query("text", str(text)) if text is not None else Query("image", str(image))]
    rerank = rerankers_from_options(given.get("rerank"), given.get("rerank_param") or [])
    if len(rerank) > 1:
        raise XmrError("search re-ranks with one method at a time; give one name to {rerank}", rerank=Param("rerank"))
    # only query-time parameters may be given here; the rest were fixed when the index was built
    params = {k.strip().rpartition(".")[2]: v.strip()
              for k, _, v in (str(p).partition("=") for p in given.get("rerank_param") or [])}
    k = int(given.get("k") or SearchOptions.k)
    target = check_target(given.get("target") or SearchOptions.target)
    t0 = time.perf_counter()
    s = Searcher.from_run(run_dir, given.get("index"), rerank=rerank[0].name if rerank else None,
                          rerank_params=params, fast_text=not given.get("exact_text"), runtime=runtime)
    s.check_searchable(target)  # before an encoder loads
    _load_encoders(s, queries, since=t0)
    t1 = time.perf_counter()
    as_json, many, sheet = bool(given.get("json")), query_file is not None, given.get("sheet")
    kept: list[QueryResult] = []  # for the contact sheet only
    n_failed, first_failed = 0, None
    for r in _answers(s, queries, k, target, many=many):
        for line in _result_lines(r, as_json=as_json, numbered=many):
            yield terminal_safe(line, as_json=as_json)  # file names and texts may hold escape sequences
        if sheet:
            kept.append(r)
        if r.error is not None:
            n_failed, first_failed = n_failed + 1, first_failed or r
    log.info("answered %d quer%s in %.2f s", len(queries), "y" if len(queries) == 1 else "ies",
             time.perf_counter() - t1)
    if sheet:
        from xmr.search.sheet import search_sheet

        layout = search_sheet(kept, str(sheet), title=f"{Path(run_dir).name}: top {k} {target}")
        log.info("contact sheet of %d queries x %d results: %s", layout.n_rows, layout.n_cols - 1, sheet)
    if first_failed is not None:
        where = f"line {first_failed.query.line}: " if first_failed.query.line else ""
        raise XmrError("{failed} of {total} queries could not be answered (the others were); first: {where}{error}",
                       failed=n_failed, total=len(queries), where=where, error=first_failed.error)


def _load_encoders(s: Searcher, queries: list[Query], *, since: float) -> None:
    """Load the encoders the queries need (text, then image), logging what each load took."""
    loaded = [f"the run and its index ({len(s.items)} images, {len(s.texts)} texts) in "
              f"{time.perf_counter() - since:.1f} s"]
    for kind in sorted({q.kind for q in queries if q.error is None}, reverse=True):  # text, then image
        t = time.perf_counter()
        s.load_encoder(kind)
        encoder = s.text_encoder if kind == "text" else s.image_encoder
        loaded.append(f"the {kind} encoder ({encoder.encoder_id}) in {time.perf_counter() - t:.1f} s")
    log.info("loaded %s", ", ".join(loaded))


def _answers(s: Searcher, queries: list[Query], k: int, target: Target, *, many: bool) -> Iterator[QueryResult]:
    """Each query's result as it is answered: a batch streamed (memory bounded by one encoder
    batch), or one query whose error is raised as it is."""
    from xmr.search import QueryResult

    if many:
        yield from s.iter_search_batch(queries, k, target=target)
        return
    q = queries[0]
    yield QueryResult(q, s.search_text(q.value, k, target=target) if q.kind == "text" else
                      s.search_image(q.value, k, target=target))


def _result_lines(r: QueryResult, *, as_json: bool, numbered: bool) -> Iterator[str]:
    """One query's output: a JSON object (``json``), or a header (batch) and a line per hit."""
    if as_json:
        row: dict[str, object] = {"query": r.query.value, "kind": r.query.kind}
        if r.query.line:
            row["line"] = r.query.line
        row.update({"error": r.error} if r.error is not None else
                   {"hits": [{k: v for k, v in dataclasses.asdict(h).items() if v is not None} for h in r.hits]})
        yield json.dumps(row, ensure_ascii=False)
        return
    if numbered:
        yield f"# {r.query.kind} query (line {r.query.line}): {r.query.value}"
    if r.error is not None:
        yield f"  error: {r.error}"
        return
    for hit in r.hits:  # a bare image has no text and no style: nothing printed for them, never "None"
        if hit.item is not None:  # a text hit: the item it came from
            parts = [f"from {hit.item}", hit.image]
        else:
            parts = [hit.id, f"[{hit.style}]" if hit.style is not None else None, hit.image]
        text = hit.text if hit.text is not None else "(no text)"
        yield f"{hit.rank:>3}  {hit.score:.3f}  {text}" + "".join(f"  {x}" for x in parts if x is not None)
