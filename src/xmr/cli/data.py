"""``xmr data fetch NAME`` (:func:`xmr.data.fetch_dataset`) and ``xmr data manifest FOLDER``
(:func:`xmr.workflows.folder.write_folder_manifest`)."""

from __future__ import annotations

import argparse

from xmr.cli.options import add_cache, add_recursive, defaults_from, given_values, seed

#: the function ``xmr data manifest`` calls, and its options that default to its parameters' defaults
MANIFEST_JOB = "xmr.workflows.folder:write_folder_manifest"
_MANIFEST_OPTIONS = {"seed": "seed"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("data", help="built-in datasets")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="ACTION")
    f = dsub.add_parser("fetch", help="fetch and prepare a built-in dataset (e.g. emoji)")
    f.add_argument("name")
    f.add_argument("--seed", type=seed, default=None,
                   help="draw the split with this seed (datasets whose split is seeded: openclipart); a seed other "
                        "than the default (0) builds beside the default's dataset, which stays as it is")
    add_cache(f)
    f.set_defaults(func=run_fetch)
    f = dsub.add_parser("manifest", help="write a manifest from a folder of images (texts from optional sidecar "
                                         ".txt/.json files or a captions CSV)")
    f.add_argument("folder")
    f.add_argument("--out", required=True, help="the manifest to write (.jsonl, or .csv)")
    add_recursive(f)
    f.add_argument("--captions", default=None, metavar="CSV",
                   help="a CSV with a header naming the file column (file/image/path, relative to the folder) and "
                        "the text column (caption/text/title); several rows give a file several texts")
    f.add_argument("--split", default=None, metavar="TRAIN/VAL/TEST",
                   help="assign splits, e.g. 80/10/10, by a seeded hash of each file's path (adding images later "
                        "moves none); default: no split field")
    f.add_argument("--seed", type=seed, default=None, help="seeds the split draw")
    f.add_argument("--overwrite", action="store_true", help="replace an existing manifest at --out")
    f.defaults_fn = defaults_from(MANIFEST_JOB, _MANIFEST_OPTIONS)  # type: ignore[attr-defined]  # _Parser.format_help
    f.set_defaults(func=run_manifest)


def run_fetch(a: argparse.Namespace) -> None:
    from xmr.data import fetch_dataset
    from xmr.data.manifest import read_manifest

    path = fetch_dataset(a.name, a.cache_dir, seed=a.seed)
    items = read_manifest(path)
    print(f"{a.name}: {len(items)} items; manifest: {path}")
    splits = sorted({str(it.split) for it in items})
    for split in splits:
        sub = [it for it in items if str(it.split) == split]
        print(f"  {split:>5}: {len(sub):>6} items, {len({it.group or it.id for it in sub}):>5} groups, "
              f"{len({it.label for it in sub}):>3} labels")


def run_manifest(a: argparse.Namespace) -> None:
    from xmr.cli.errors import cli_wording
    from xmr.data.folder import parse_split_fractions
    from xmr.workflows.folder import write_folder_manifest

    fractions = parse_split_fractions(a.split) if a.split else None
    print(write_folder_manifest(a.folder, a.out, recursive=a.recursive, captions=a.captions,
                                split_fractions=fractions, overwrite=a.overwrite,
                                **given_values(a, _MANIFEST_OPTIONS)).summary(cli_wording))
