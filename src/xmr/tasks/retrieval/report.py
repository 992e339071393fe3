"""``xmr eval`` of a retrieval run: R@K / medr / rsum (+ mAP, CMC) against the exact chance level,
side by side with each re-ranker's, and GXN's caption scores, as the printed report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from xmr.tasks.base import EvalOutcome, Options
from xmr.tasks.options import param_default

if TYPE_CHECKING:
    from xmr.runtime.device import Runtime


def evaluate_report(run_dir: str | Path, given: Options, *, split: str, cache_dir: str | Path | None,
                    command: str | None, runtime: Runtime | None = None) -> EvalOutcome:
    """Evaluate the run (:func:`xmr.workflows.evaluate.evaluate_run`) with the options given; the report."""
    from xmr.evaluation.protocol import SIDE_BY_SIDE_KEYS, format_table
    from xmr.rerank.registry import rerankers_from_options
    from xmr.runs import RunConfig, load_run_config
    from xmr.workflows.evaluate import CHANCE, eval_output_path, evaluate_run

    mode = str(given.get("mode") or param_default("xmr.workflows.evaluate", "evaluate_run", "mode"))
    rerank = rerankers_from_options(given.get("rerank"), given.get("rerank_param") or [])
    manifest, out = given.get("manifest"), given.get("out")
    m = evaluate_run(run_dir, split=split, mode=mode, manifest=manifest, rerank=rerank,
                     texts_per_item=given.get("texts_per_item"), cache_dir=cache_dir,
                     command=command, skip_bad=bool(given.get("skip_bad")), out=out,
                     runtime=runtime)
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
        lines.append(_caption_report(run_dir, split, cache_dir, command))
    return EvalOutcome(m, "\n".join(lines), written)


def _caption_report(run_dir: str | Path, split: str, cache_dir: str | Path | None, command: str | None) -> str:
    """``captions``: BLEU / CIDEr of the retrieved (GXN Table 2) and generated captions, as lines, with
    ``captions-<split>.json`` written beside the run's other results."""
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
