"""The ``retrieval`` task: a joint image-text space (:mod:`xmr.workflows.train`, :class:`xmr.search.Searcher`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmr.errors import XmrError
from xmr.runs import RunConfig, load_run_config
from xmr.runs.config import TrainSource
from xmr.tasks.base import TASKS, EvalOutcome, Options, Task, TrainOutcome

if TYPE_CHECKING:
    from xmr.modality import Target
    from xmr.search import Query, QueryResult, Searcher

log = logging.getLogger(__name__)

#: option dest -> field of RunConfig / TrainConfig / TextEncoderConfig
RUN_FIELDS = {"image_encoder": "image_encoder", "text_encoder": "text_encoder", "train_split": "train_split",
              "val_split": "val_split", "eval_texts_per_item": "eval_texts_per_item", "embed_dim": "embed_dim",
              "head": "head", "hidden_dim": "hidden_dim", "similarity": "similarity", "two_branch": "two_branch",
              "image_head": "image_head", "sparse": "sparse", "pseudo_texts": "pseudo_texts",
              "finetune_image_blocks": "finetune_image_blocks", "finetune_text_layers": "finetune_text_layers",
              "finetune_text_length": "finetune_text_length"}
TRAIN_FIELDS = {"loss": "loss", "margin": "margin", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
                "patience": "patience", "vse0_warmup": "vse0_warmup_epochs", "seed": "seed", "then": "then",
                "stage1_epochs": "stage1_epochs", "rank_loss": "rank_loss", "adversarial": "adversarial",
                "steps_per_epoch": "steps_per_epoch", "grad_clip": "grad_clip", "finetune_lr": "finetune_lr",
                "ema": "ema_decay", "cross_style": "cross_style", "generative": "generative",
                "caption_xe_epochs": "caption_xe_epochs"}
TEXT_MODEL_FIELDS = {"text_length": "length", "word_vectors": "init", "text_pool": "pool"}
AUGMENT_FIELDS = {"augment_views": "views", "augment": "kinds"}


def _pick(given: Options, fields: Mapping[str, str]) -> dict[str, Any]:
    return {f: given[d] for d, f in fields.items() if given.get(d) is not None}


class RetrievalTask(Task):
    """Learn a joint space; index it; search by text or image; R@K / medr / rsum (+ mAP, CMC)."""

    name = "retrieval"
    train_options = frozenset({"image_root", "no_position_shift", "skip_bad", "extra_train", "train_bn_stats",
                               "caption_xe_only"})
    eval_options = frozenset({"split", "mode", "manifest", "texts_per_item", "rerank", "rerank_param", "skip_bad",
                              "out", "cache_dir", "captions"})
    search_options = frozenset({"text", "image", "queries", "json", "sheet", "k", "target", "index", "rerank",
                                "rerank_param", "exact_text"})

    @property
    def train_fields(self) -> Mapping[type, Mapping[str, str]]:
        from xmr.encoders.augment import AugmentConfig
        from xmr.text import TextEncoderConfig
        from xmr.training import TrainConfig

        return {RunConfig: RUN_FIELDS, TrainConfig: TRAIN_FIELDS, TextEncoderConfig: TEXT_MODEL_FIELDS,
                AugmentConfig: AUGMENT_FIELDS}

    def config_from_options(self, manifest: str, given: Options) -> RunConfig:
        from xmr.encoders.augment import AugmentConfig
        from xmr.text import TEXT_MODELS, TextEncoderConfig
        from xmr.training import TrainConfig

        run = _pick(given, RUN_FIELDS)
        text_options = _pick(given, TEXT_MODEL_FIELDS)
        if given.get("no_position_shift"):
            text_options["position_shift"] = False
        text_model = None
        if run.get("text_encoder") in TEXT_MODELS.names():
            seed = {"seed": given["seed"]} if given.get("seed") is not None else {}
            text_model = TextEncoderConfig(kind=run["text_encoder"], **text_options, **seed)
        elif text_options:
            names = [d for d in TEXT_MODEL_FIELDS if given.get(d) is not None]
            names += ["no_position_shift"] if given.get("no_position_shift") else []
            shown = ", ".join(sorted("--" + d.replace("_", "-") for d in names))
            raise XmrError(f"{shown} apply to a word-level --text-encoder ({', '.join(TEXT_MODELS.names())}) only")
        try:
            train_options = _pick(given, TRAIN_FIELDS)
            if given.get("caption_xe_only"):
                if "i2t" not in (train_options.get("generative") or ()):
                    raise XmrError("--caption-xe-only applies to --generative i2t only")
                train_options["caption_rl"] = False
            train = TrainConfig(**train_options)
            root = given.get("image_root")
            extra = tuple(TrainSource.parse(str(s)) for s in given.get("extra_train") or ())
            augment = _pick(given, AUGMENT_FIELDS)
            if "kinds" in augment:
                augment["kinds"] = tuple(k.strip() for k in str(augment["kinds"]).split(",") if k.strip())
            if "kinds" in augment and not augment.get("views"):
                raise XmrError("--augment needs --augment-views K (how many augmented views per image)")
            if given.get("train_bn_stats"):
                if not run.get("finetune_image_blocks"):
                    raise XmrError("--train-bn-stats applies to --finetune-image-blocks N only")
                run["finetune_freeze_bn"] = False
            return RunConfig(manifest=os.path.abspath(manifest),
                             image_root=os.path.abspath(str(root)) if root else None,
                             train=train, text_model=text_model, extra_train=extra,
                             augment=AugmentConfig(**augment), **run)
        except XmrError as e:  # the dataclasses' own validation: a bad option value
            raise XmrError(f"invalid training option: {e}") from None

    def train(self, config: object, out_dir: str | Path, *, cache_dir: str | Path | None = None,
              overwrite: bool = False, skip_bad: bool = False) -> TrainOutcome:
        from xmr.workflows.train import train_run

        assert isinstance(config, RunConfig)
        r = train_run(config, out_dir, cache_dir=cache_dir, overwrite=overwrite, skip_bad=skip_bad)
        return TrainOutcome(r.status, r.best_epoch, r.best_metrics, r.best_dir,
                            f"val rsum {r.best_metrics.get('rsum', float('nan')):.1f}")

    def evaluate(self, run_dir: str | Path, given: Options, *, command: str | None = None
                 ) -> EvalOutcome:
        from xmr.evaluation.protocol import SIDE_BY_SIDE_KEYS, format_table
        from xmr.rerank.registry import rerankers_from_options
        from xmr.workflows.evaluate import CHANCE, eval_output_path, evaluate_run

        split, mode = str(given["split"]), str(given.get("mode") or "full")
        rerank = rerankers_from_options(given.get("rerank"), given.get("rerank_param") or [])
        manifest, out = given.get("manifest"), given.get("out")
        m = evaluate_run(run_dir, split=split, mode=mode, manifest=manifest, rerank=rerank,
                         texts_per_item=given.get("texts_per_item"), cache_dir=given.get("cache_dir"),
                         command=command, skip_bad=bool(given.get("skip_bad")), out=out)
        name = os.path.basename(os.path.normpath(run_dir))
        lines = []
        chance = {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith(f"{CHANCE}/")}
        if rerank:
            columns = {"plain": m, **{rr.name: {k.split("/", 1)[1]: v for k, v in m.items()
                                                if k.startswith(f"{rr.name}/")} for rr in rerank},
                       "chance": chance}
            lines.append(f"{name}, split {split} ({mode}); re-ranked "
                         f"{', '.join(f'{rr.name}: shortlist {rr.params.shortlist}' for rr in rerank)}")
            lines.append(format_table(columns, SIDE_BY_SIDE_KEYS, name_header="metric", transpose=True))
            for rr in rerank:
                un = {d: int(columns[rr.name][f"{d}_unscored"]) for d in ("t2i", "i2t")}
                if any(un.values()):
                    lines.append(f"{rr.name}: {un['t2i']} t2i and {un['i2t']} i2t queries got no re-ranking score "
                                 "(cosine order kept)")
        else:
            lines.append(format_table({name: m, "chance": chance}))
        lines.append(f"chance: the expected scores of a random ranking of these {int(m['n_images'])} images and "
                     f"{int(m['n_texts'])} texts (exact, from which texts describe which images)")
        lines += [f"{k}: {v:.2f}" for k, v in m.items() if k.startswith("i2i_") and ("_map" in k or "_cmc" in k)]
        if "overlap_S" in m:
            lines.append(f"overlap S (dual-path Eq. 10; lower separates positives better): {m['overlap_S']:.3f}")
        written = eval_output_path(run_dir, load_run_config(run_dir, RunConfig).manifest, split=split, mode=mode,
                                   manifest=manifest, out=out)
        if given.get("captions"):
            lines.append(_caption_report(run_dir, split, given.get("cache_dir"), command))
        return EvalOutcome(m, "\n".join(lines), written)

    def search(self, run_dir: str | Path, given: Options) -> Iterator[str]:
        import time

        from xmr.modality import check_target
        from xmr.rerank.registry import rerankers_from_options
        from xmr.search import Query, Searcher, read_queries

        text, image, query_file = given.get("text"), given.get("image"), given.get("queries")
        if sum(x is not None for x in (text, image, query_file)) != 1:
            raise XmrError("give one of --text, --image or --queries FILE (text and image together: only for a "
                           "composed run)")
        queries = read_queries(str(query_file)) if query_file is not None else \
            [Query("text", str(text)) if text is not None else Query("image", str(image))]
        rerank = rerankers_from_options(given.get("rerank"), given.get("rerank_param") or [])
        if len(rerank) > 1:
            raise XmrError("search re-ranks with one method at a time; give one name to --rerank")
        # only query-time parameters may be given here; the rest were fixed by `xmr index --rerank`
        params = {k.strip().rpartition(".")[2]: v.strip()
                  for k, _, v in (str(p).partition("=") for p in given.get("rerank_param") or [])}
        k, target = int(given.get("k") or 10), check_target(given.get("target") or "images")
        t0 = time.perf_counter()
        s = Searcher.from_run(run_dir, given.get("index"), rerank=rerank[0].name if rerank else None,
                              rerank_params=params, fast_text=not given.get("exact_text"))
        s.check_searchable(target)  # before an encoder loads
        loaded = [f"the run and its index ({len(s.items)} images, {len(s.texts)} texts) in "
                  f"{time.perf_counter() - t0:.1f} s"]
        for kind in sorted({q.kind for q in queries if q.error is None}, reverse=True):  # text, then image
            t = time.perf_counter()
            s.load_encoder(kind)
            encoder = s.text_encoder if kind == "text" else s.image_encoder
            loaded.append(f"the {kind} encoder ({encoder.encoder_id}) in {time.perf_counter() - t:.1f} s")
        log.info("loaded %s", ", ".join(loaded))
        t1 = time.perf_counter()
        as_json, many, sheet = bool(given.get("json")), query_file is not None, given.get("sheet")
        kept: list[QueryResult] = []  # for the contact sheet only
        n_failed, first_failed = 0, None
        for r in self._answers(s, queries, k, target, many=many):
            yield from _result_lines(r, as_json=as_json, numbered=many)
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
            raise XmrError(f"{n_failed} of {len(queries)} queries could not be answered (the others were); "
                           f"first: {where}{first_failed.error}")

    @staticmethod
    def _answers(s: Searcher, queries: list[Query], k: int, target: Target, *, many: bool
                 ) -> Iterator[QueryResult]:
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
    """One query's output: a JSON object (``--json``), or a header (batch) and a line per hit."""
    import dataclasses
    import json

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


def _caption_report(run_dir: str | Path, split: str, cache_dir: object, command: str | None) -> str:
    """``xmr eval --captions``: BLEU / CIDEr of the retrieved (GXN Table 2) and generated captions, as
    lines, with ``captions-<split>.json`` written beside the run's other results."""
    from xmr.utils.io import save_json
    from xmr.workflows.imagine import caption_quality

    q = caption_quality(run_dir, split=split, cache_dir=None if cache_dir is None else str(cache_dir))
    path = Path(run_dir) / f"captions-{split}.json"
    save_json(path, {**q, "command": command})
    names = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr")
    rows = [(f"retrieved #{r}", v) for r, v in q["retrieved"].items()]  # type: ignore[attr-defined]
    rows += [(f"generated, {b}", v) for b, v in q.get("generated", {}).items()]  # type: ignore[attr-defined]
    lines = [f"captions of {q['n_images']} {split} images (pycocoevalcap, x 100): " + "  ".join(names)]
    lines += [f"  {name:<22}" + "  ".join(f"{v[k]:6.1f}" for k in names) for name, v in rows]
    return "\n".join([*lines, f"written: {path}"])


TASKS.add(RetrievalTask.name, RetrievalTask())
