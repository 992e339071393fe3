"""One table of every issue-28 pipeline on openclipart and the emoji zero-shot split, from eval JSONs.

Each row is one pipeline; its figures are the mean over the seeds whose ``xmr eval --out`` JSON is
listed (the JSONs carry the command that made them, and the row's training command is in the
result file it links to). Nothing is re-measured here: the script only gathers, so the table can
always be rebuilt from the committed JSONs::

    python benchmarks/encoder_tables.py --out benchmarks/results/encoders/README.md

A row whose JSONs are missing is left out with a line saying so (a pipeline measured on one dataset
only).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")


def seeds(pattern: str, which: tuple[int, ...] = (0, 1, 2)) -> list[str]:
    """``pattern`` (with ``{s}``) for each seed in ``which``."""
    return [pattern.format(s=s) for s in which]


LITE0 = "image: `efficientnet-lite0` (+ minilm-l6, InfoNCE: the defaults before issue 28)"
FNE = "**`xmr train` defaults**: image `efficientnet-lite0-fne` (full-network embedding)"

#: (pipeline, dataset, where it is described, eval JSONs relative to results/)
ROWS: list[tuple[str, str, str, list[str]]] = [
    ("day-one pair, no training (`conse-imagenet-tags` + `minilm-l6-tags`)", "openclipart", "dayone/tags.md",
     ["dayone/eval-openclipart-dayone.json"]),
    (LITE0, "openclipart", "openclipart/README.md",
     seeds("openclipart/eval-defaults-seed{s}.json")),
    (FNE, "openclipart",
     "encoders/efficientnet-lite0-fne.md",
     seeds("encoders/efficientnet-lite0-fne/eval-oc-fne-s{s}.json")),
    ("image: `efficientnet-lite1`", "openclipart", "encoders/efficientnet-lite1-lite2.md",
     seeds("encoders/efficientnet-lite-evals/oc-lite1-s{s}.json")),
    ("image: `efficientnet-lite2`", "openclipart", "encoders/efficientnet-lite1-lite2.md",
     seeds("encoders/efficientnet-lite-evals/oc-lite2-s{s}.json")),
    ("image: 3x3 grid + `region-mean` head", "openclipart", "encoders/region-gpo.md",
     seeds("encoders/region-gpo/eval-oc-mean-s{s}.json")),
    ("image: 3x3 grid + `region-gpo` head (VSE∞ GPO)", "openclipart", "encoders/region-gpo.md",
     seeds("encoders/region-gpo/eval-oc-gpo-s{s}.json")),
    ("text: `all-mpnet`", "openclipart", "encoders/all-mpnet.md",
     seeds("encoders/all-mpnet/eval-openclipart-all-mpnet-seed{s}.json")),
    ("image `efficientnet-lite0-fne` + text `all-mpnet`", "openclipart", "encoders/fne-mpnet.md",
     seeds("encoders/fne-mpnet/eval-oc-fne-mpnet-s{s}.json")),
    ("day-one pair, no training (`conse-imagenet-tags` + `minilm-l6-tags`)", "emoji", "dayone/tags.md",
     ["dayone/eval-emoji-dayone.json"]),
    (LITE0, "emoji", "encoders/all-mpnet.md",
     ["encoders/all-mpnet/eval-emoji-minilm-l6-seed0.json",
      *seeds("encoders/emoji-seeds/eval-emoji-defaults-s{s}.json", (1, 2))]),
    (FNE, "emoji", "encoders/efficientnet-lite0-fne.md",
     ["encoders/efficientnet-lite0-fne/eval-emoji-fne-s0.json",
      *seeds("encoders/emoji-seeds/eval-emoji-fne-s{s}.json", (1, 2))]),
    ("image: `efficientnet-lite1`", "emoji", "encoders/efficientnet-lite1-lite2.md",
     ["encoders/efficientnet-lite-evals/emoji-lite1-s0.json"]),
    ("image: `efficientnet-lite2`", "emoji", "encoders/efficientnet-lite1-lite2.md",
     ["encoders/efficientnet-lite-evals/emoji-lite2-s0.json"]),
    ("image: 3x3 grid + `region-mean` head", "emoji", "encoders/region-gpo.md",
     ["encoders/region-gpo/eval-emoji-mean-s0.json"]),
    ("image: 3x3 grid + `region-gpo` head (VSE∞ GPO)", "emoji", "encoders/region-gpo.md",
     ["encoders/region-gpo/eval-emoji-gpo-s0.json"]),
    ("text: `all-mpnet`", "emoji", "encoders/all-mpnet.md",
     ["encoders/all-mpnet/eval-emoji-all-mpnet-seed0.json",
      *seeds("encoders/emoji-seeds/eval-emoji-mpnet-s{s}.json", (1, 2))]),
    ("image `efficientnet-lite0-fne` + text `all-mpnet`", "emoji", "encoders/fne-mpnet.md",
     ["encoders/fne-mpnet/eval-emoji-fne-mpnet-s0.json",
      *seeds("encoders/emoji-seeds/eval-emoji-fne-mpnet-s{s}.json", (1, 2))]),
]


def table(dataset: str) -> tuple[list[str], list[str]]:
    """The markdown rows of ``dataset`` and the lines naming rows left out."""
    group = "i2i_group_map" if dataset == "emoji" else "i2i_label_map"
    head = ["| pipeline | seeds | " + " | ".join(k.replace("_r", " R@") for k in KEYS) + " | rsum sd | "
            + ("i2i group mAP" if dataset == "emoji" else "i2i label mAP") + " | chance rsum | results |",
            "|---" * (len(KEYS) + 6) + "|"]
    rows, missing = [], []
    for name, ds, doc, files in ROWS:
        if ds != dataset:
            continue
        found = [RESULTS / f for f in files if (RESULTS / f).is_file()]
        if not found:
            missing.append(f"{name} on {dataset}: not measured ({', '.join(files)} absent)")
            continue
        evals = [json.loads(p.read_text()) for p in found]
        cells = [f"{statistics.fmean([e['metrics'][k] for e in evals]):.1f}" for k in KEYS]
        rsums = [e["metrics"]["rsum"] for e in evals]
        sd = f"{statistics.stdev(rsums):.1f}" if len(rsums) > 1 else "-"
        maps = [e["metrics"][group] for e in evals if group in e["metrics"]]
        mp = f"{statistics.fmean(maps):.1f}" if maps else "-"
        chance = f"{statistics.fmean([e['chance']['rsum'] for e in evals]):.1f}"
        link = Path("..") / doc if not doc.startswith("encoders/") else Path(doc).relative_to("encoders")
        rows.append(f"| {name} | {len(evals)} | " + " | ".join(cells)
                    + f" | {sd} | {mp} | {chance} | [{doc}]({link}) |")
    return head + rows, missing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=RESULTS / "encoders" / "README.md")
    a = ap.parse_args()
    lines = ["# Every pipeline of issue 28 on openclipart and the emoji zero-shot split (test, R@K in %)", "",
             "Made by `python benchmarks/encoder_tables.py` from the `xmr eval --out` JSONs linked in each row "
             "(each JSON holds its eval command; the training commands are in the linked result file). "
             "Figures are the mean over the seeds counted; settings were chosen on val, test read once per run. "
             "openclipart: 294 test drawings, every text a query; emoji: 1,526 test images of groups never seen "
             "in training, one text per image.", ""]
    for dataset in ("openclipart", "emoji"):
        rows, missing = table(dataset)
        lines += [f"## {dataset}", "", *rows, ""]
        lines += [f"- {m}" for m in missing] + ([""] if missing else [])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(a.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
