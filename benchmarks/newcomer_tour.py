"""A newcomer's first hour, measured: the README tour on a folder of drawings xmr never saw.

The collection: Google's Material Symbols (npm ``@iconify-json/material-symbols``, Apache-2.0),
its base icons only (the ``-outline`` / ``-rounded`` / ``-sharp`` / ``-off`` / numbered variants
are dropped), drawn black on white at 224 px into a folder, each with a ``.txt`` sidecar holding
its title (the icon's name, dashes as spaces: ``directions-bike`` -> "directions bike"). None of
xmr's training sets holds this set.

The tour, each step a real ``xmr`` process (timed from start to exit, model loading included):

1. ``xmr data manifest FOLDER --out M --split 80/10/10``
2. ``xmr train M --out RUN`` (defaults: InfoNCE, MLP heads, 30 epochs, early stopping)
3. ``xmr eval RUN`` (test split, chance beside)
4. ``xmr index RUN --images FOLDER`` (the whole folder, no manifest)
5. ``xmr search RUN --queries Q --json --sheet S`` (texts and image paths in one file)
6. per re-ranker: ``xmr eval RUN --rerank NAME`` with its defaults, ``xmr index RUN --split test
   --rerank NAME --tune val`` (parameters chosen on val), then ``xmr eval RUN --rerank NAME
   --rerank-param ...`` with the tuned ones: test text->image R@1+5+10, plain vs default vs tuned.

Example::

    python benchmarks/newcomer_tour.py --work /work/xmr-runs/newcomer
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from xmr.bench.common import command_line, load_note, markdown
from xmr.data.emoji import npm_pack, rasterise_svgs, safe_extract
from xmr.data.icons import svg_of
from xmr.utils.io import atomic_write_text, load_json, save_json

log = logging.getLogger("newcomer_tour")

PACKAGE = ("@iconify-json/material-symbols", "1.2.98")
VARIANT = re.compile(r"-(outline|rounded|sharp|off|fill|filled|\d+)$")
QUERIES = ["a bicycle", "shopping cart", "a house with a garden", "an airplane taking off", "music note",
           "a dog", "sunny weather", "battery charging", "a padlock", "someone swimming"]
RERANKERS = ("diffusion", "bidirectional", "geodesic")
KS = (1, 5, 10)


def build_folder(work: Path, limit: int | None) -> Path:
    """The collection as a user would have it: ``<work>/material-symbols/<name>.png`` + ``<name>.txt``."""
    folder = work / "material-symbols"
    pkg = work / "package"
    if not (pkg / "package" / "icons.json").is_file():
        safe_extract(npm_pack(*PACKAGE, work / "npm"), pkg)
    data = load_json(pkg / "package" / "icons.json")
    size = float(data.get("width", 24)), float(data.get("height", 24))
    names = sorted(n for n in data["icons"] if not VARIANT.search(n))[:limit]
    svgs, jobs = work / "svg", []
    svgs.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        icon = data["icons"][name]
        w, h = float(icon.get("width", size[0])), float(icon.get("height", size[1]))
        svg = svgs / f"{name}.svg"
        if not svg.is_file():
            atomic_write_text(svg, svg_of(icon["body"], float(icon.get("left", 0)), float(icon.get("top", 0)), w, h))
        jobs.append((svg, folder / f"{name}.png"))
        sidecar = folder / f"{name}.txt"
        if not sidecar.is_file():
            atomic_write_text(sidecar, name.replace("-", " ") + "\n")
    rasterise_svgs(jobs, 224, what="icons")
    return folder


def xmr(*args: str, cwd: Path) -> tuple[float, str]:
    """Run ``xmr args`` as a user would (a new process); (seconds, stdout). A failure stops the tour."""
    cmd = [sys.executable, "-m", "xmr", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "XMR_NO_PROGRESS": "1"})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"step failed ({proc.returncode}): xmr {' '.join(args)}\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def t2i_sum(metrics: dict[str, float], prefix: str = "") -> float:
    return sum(metrics[f"{prefix}t2i_r{k}"] for k in KS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--work", type=Path, default=Path("runs/newcomer"), help="folder for the collection and runs")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "newcomer")
    ap.add_argument("--limit", type=int, default=None, help="only the first N icons (a quick check)")
    ap.add_argument("--rerankers", nargs="+", default=list(RERANKERS), choices=RERANKERS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    load_before = load_note()
    work = args.work.resolve()
    t0 = time.perf_counter()
    folder = build_folder(work, args.limit)
    prepare = time.perf_counter() - t0
    cache, run, manifest = work / "cache", work / "run", work / "material-symbols.jsonl"
    cached = ["--cache-dir", str(cache)]
    steps: list[tuple[str, str, float]] = []

    def step(label: str, *a: str) -> str:
        seconds, out = xmr(*a, cwd=work)
        steps.append((label, "xmr " + " ".join(shlex.quote(x) for x in a), seconds))
        log.info("%s: %.1f s", label, seconds)
        return out

    step("1. manifest from the folder", "data", "manifest", str(folder), "--out", str(manifest), "--split",
         "80/10/10", "--overwrite")
    step("2. train (defaults; encodes the images and titles first)", "train", str(manifest), "--out", str(run),
         "--overwrite", *cached)
    step("3. evaluate on test (chance beside)", "eval", str(run), *cached)
    test = load_json(run / "eval-test-full.json")
    step("4. index the whole folder", "index", str(run), "--images", str(folder), *cached)
    queries = work / "queries.txt"
    test_items = [json.loads(line) for line in manifest.read_text().splitlines()]
    pictures = [it["image"] for it in test_items if it.get("split") == "test"][:: 97][:2]  # relative to work
    atomic_write_text(queries, "\n".join(QUERIES + [str(work / p) for p in pictures]) + "\n")
    sheet = args.out / "newcomer_sheet.png"
    sheet.parent.mkdir(parents=True, exist_ok=True)
    found = step("5. batch search, JSON + contact sheet", "search", str(run), "--queries", str(queries), "-k", "5",
                 "--json", "--sheet", str(sheet))
    answers = [json.loads(line) for line in found.splitlines()]

    rerank_rows = []
    for name in args.rerankers:
        step(f"6. eval --rerank {name} (defaults)", "eval", str(run), "--rerank", name, "--out",
             str(work / f"eval-{name}-default.json"), *cached)
        default = load_json(work / f"eval-{name}-default.json")
        tuned_index = work / f"index-test-{name}-tuned"
        step(f"6. index --split test --rerank {name} --tune val", "index", str(run), "--split", "test", "--rerank",
             name, "--tune", "val", "--out", str(tuned_index), *cached)
        tuning = load_json(tuned_index / "rerank" / name / "images" / "tuning.json")
        chosen = {k: tuning["chosen"][k] for k in tuning["grid"]}
        params = [x for k, v in chosen.items() for x in ("--rerank-param", f"{k}={v}")]
        step(f"6. eval --rerank {name} (tuned on val)", "eval", str(run), "--rerank", name, *params, "--out",
             str(work / f"eval-{name}-tuned.json"), *cached)
        tuned = load_json(work / f"eval-{name}-tuned.json")
        rerank_rows.append({"method": name, "chosen": chosen, "val_plain": tuning["plain"]["score"],
                            "val_tuned": tuning["chosen_score"], "helps_on_val": tuning["helps"],
                            "test_plain": t2i_sum(test["metrics"]),
                            "test_default": t2i_sum(default["rerank"][name]["metrics"]),
                            "test_tuned": t2i_sum(tuned["rerank"][name]["metrics"])})

    m, chance = test["metrics"], test["chance"]
    keys = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"]
    table = markdown(["", *[k.replace("_r", " R@") for k in keys], "i2t medr", "t2i medr"],
                     [["trained run (test)", *[f"{m[k]:.1f}" for k in keys], f"{m['i2t_medr']:.0f}",
                       f"{m['t2i_medr']:.0f}"],
                      ["chance (exact)", *[f"{chance[k]:.1f}" for k in keys], "–", "–"]])
    timing = markdown(["step", "command", "seconds"], [[s, f"`{c}`", f"{t:.1f}"] for s, c, t in steps])
    rr = markdown(["re-ranker", "chosen on val", "val plain", "val tuned", "test plain", "test defaults",
                   "test tuned"],
                  [[r["method"], ", ".join(f"{k}={v}" for k, v in r["chosen"].items()), f"{r['val_plain']:.1f}",
                    f"{r['val_tuned']:.1f}", f"{r['test_plain']:.1f}", f"{r['test_default']:.1f}",
                    f"{r['test_tuned']:.1f}"] for r in rerank_rows])
    examples = [f"- {a['query'] if a['kind'] == 'text' else Path(a['query']).name!r} ({a['kind']}) -> "
                + ", ".join(f"{h.get('text')} ({h['score']:.2f})" for h in a.get("hits", [])[:3]) for a in answers]
    n = {s: sum(1 for it in test_items if it.get("split") == s) for s in ("train", "val", "test")}
    text = "\n\n".join([
        "# A newcomer's tour on a collection xmr never saw: Material Symbols",
        f"Command: `{command_line()}`",
        f"{len(test_items)} icons (`{PACKAGE[0]}@{PACKAGE[1]}`, base icons, 224 px, titles from the names), split "
        f"80/10/10 by `xmr data manifest` (train {n['train']}, val {n['val']}, test {n['test']}); preparing the "
        f"folder (npm pack + drawing) took {prepare:.0f} s.",
        "## Test retrieval of the trained run, chance beside (`xmr eval`)", table,
        "## Time of each step (a new process each: start-up and model loading included)", timing,
        "## Re-ranking on new data: test text->image R@1+5+10, plain vs the defaults vs parameters tuned on val "
        "(target images)", rr,
        "## Batch search answers (top 3; the contact sheet is `newcomer_sheet.png`)", "\n".join(examples),
        f"{load_before} at start; total {time.perf_counter() - t0:.0f} s."])
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "newcomer_tour.md", text + "\n")
    save_json(args.out / "newcomer_tour.json", {"command": command_line(), "n": n, "test": m, "chance": chance,
                                                "steps": steps, "rerank": rerank_rows, "answers": answers,
                                                "prepare_seconds": prepare})
    print(table)
    print(timing)
    print(rr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
