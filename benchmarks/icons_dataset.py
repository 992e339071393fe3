"""What the icons dataset holds: per set, icons, texts per icon and a seeded sample of texts; the overlap with emoji.

Checks by eye what the tests check on fixtures (texts readable, aliases kept, no emoji sets),
on the real ``@iconify/json`` package, and counts how many emoji test names appear verbatim
(case-folded) among the icon texts, i.e. how much of a gain on the emoji test could come from
names seen in the extra data.

    python benchmarks/icons_dataset.py      # writes benchmarks/results/icons/icons_dataset.md
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections import defaultdict
from pathlib import Path

from xmr.bench.common import markdown, start_session
from xmr.data import fetch_dataset, read_manifest, select_split
from xmr.data.manifest import Item


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "icons")
    ap.add_argument("--sample", type=int, default=6, help="texts shown per set")
    args = ap.parse_args(argv)
    session = start_session(args)
    icons = read_manifest(fetch_dataset("icons", session.cache_dir))
    emoji = read_manifest(fetch_dataset("emoji", session.cache_dir))
    by_set: dict[str, list[Item]] = defaultdict(list)
    for it in icons:
        by_set[str(it.style)].append(it)
    rng = random.Random(0)
    rows = []
    for name, items in by_set.items():
        sample = rng.sample(items, min(args.sample, len(items)))
        rows.append([name, len(items), f"{statistics.fmean(len(it.texts) for it in items):.2f}",
                     sum(1 for it in items if it.label), "; ".join(" / ".join(it.texts) for it in sample)])
    table = markdown(["set", "icons", "texts per icon", "with a category", f"{args.sample} seeded samples (texts)"],
                     rows)
    icon_texts = {t.casefold() for it in icons for t in it.texts}
    test = [it for it in select_split(emoji, "test") if it.texts]
    names = {it.texts[0].casefold() for it in test}
    seen = {n for n in names if n in icon_texts}
    n_images = sum(1 for it in test if it.texts[0].casefold() in seen)
    overlap = (f"Emoji test names found verbatim (case-folded) among the icon texts: {len(seen)} of {len(names)} "
               f"names ({n_images} of {len(test)} test images), e.g. {', '.join(sorted(seen)[:12])}.")
    text = session.report("The icons dataset", f"{len(icons):,} icons from {len(by_set)} sets.", table, overlap)
    session.write(args.out, "icons_dataset", text, {"sets": {r[0]: r[1] for r in rows}, "overlap_names": len(seen),
                                                    "overlap_images": n_images, "test_names": len(names)})
    print(table)
    print(overlap)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
