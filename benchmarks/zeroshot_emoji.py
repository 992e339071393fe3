"""Zero-shot cross-modal emoji retrieval on heterogeneous manifolds (Yang et al., AAAI 2020).

Two image "modalities" of the same identities (identity = one emoji): OpenMoji colour vs
OpenMoji black line art, and Twemoji vs Noto. Frozen EfficientNet-Lite0 features; per pair and
training seed:

* models (``xmr.zeroshot.identity``), trained on the *train* split's emoji (present in both
  styles): one single-modal identity classifier per style (f_a, f_b; cross-entropy) and one
  two-stream cross-modal model (f_u; CE + 0.2 * batch-hard triplet, margin 0.6, P x K batches);
* retrieval on the *test* split (29 CLDR subgroups never seen in training, so every test emoji
  is an unseen identity): queries from one style, gallery = the same emoji in the other style,
  exactly one relevant item per query, both directions:

  - ``baseline``: kNN (cosine) in the cross-modal space f_u;
  - ``homo walk`` / ``homo fused``: all three graphs (A-A, B-B, A-B) built in f_u; ``walk`` is
    the query's one-directional walk on the gallery graph (Eq. 7 = Eq. 8 with lambda = 1),
    ``fused`` is Eq. 8 with the lambda chosen on validation;
  - ``hetero walk`` / ``hetero fused``: the A-A graph in f_a, the B-B graph in f_b (each
    style's single-modal model), the A-B cross block (and the truncation seeds) in f_u;
  - ``hetero-raw walk`` / ``hetero-raw fused`` (extra, not in the paper): the within-style graphs
    in the frozen ImageNet features themselves instead of the single-modal models.

  Walk scores rank first; items a walk never reaches (score exactly 0) follow, ordered by the
  f_u cosine (``xmr.zeroshot.manifolds.with_fallback``).

Hyper-parameters (k, k_cross, alpha, gamma, n_seeds/k_trunc of gallery-guided truncation,
lambda) are chosen per method, pair and seed by the mean mAP of both directions on the *val*
split: 11 CLDR subgroups disjoint from train and test, i.e. identities unseen in training, used
exactly like the test split. The test split is touched once, with the chosen values. The lambda
sweep on test is shown for reading only (the chosen lambda, listed in the table of choices, was
picked on the val curve drawn beside it).

Example (8 min per seed on a 2-core machine that other jobs kept at load ~7; ``--quick`` is a
16-point grid)::

    XMR_CACHE_DIR=/work/xmr-cache python benchmarks/zeroshot_emoji.py --seeds 0
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from xmr.bench.common import command_line, load_note, markdown
from xmr.data import fetch_dataset, read_manifest
from xmr.encoders import create_encoder, encode_images
from xmr.plots import line_plot
from xmr.utils.arrays import l2_normalize
from xmr.utils.io import atomic_write_text, load_json, save_json
from xmr.utils.paths import default_cache_dir
from xmr.workflows.features import feature_cache_dir
from xmr.zeroshot import (
    IdentityTrainConfig,
    WalkConfig,
    embed,
    fuse,
    retrieval_metrics,
    train_single_modal,
    train_two_stream,
    walk_both_ways,
    with_fallback,
)

log = logging.getLogger("zeroshot_emoji")

PAIRS = {"openmoji": ("openmoji-color", "openmoji-black"), "twemoji-noto": ("twitter", "google")}
LAMBDAS = tuple(round(float(x), 1) for x in np.linspace(0.0, 1.0, 11))
SPACES = ("homo", "hetero", "hetero-raw")


@dataclass
class SplitData:
    """Frozen features of the emoji of one split present in both styles, rows aligned by emoji."""

    groups: list[str]
    a: np.ndarray
    b: np.ndarray


@dataclass
class Embedded:
    """One split in every space: cross-modal (f_u), single-modal (f_a, f_b) and raw features."""

    a_cross: np.ndarray
    b_cross: np.ndarray
    a_single: np.ndarray
    b_single: np.ndarray
    a_raw: np.ndarray
    b_raw: np.ndarray

    def own(self, space: str) -> tuple[np.ndarray, np.ndarray]:
        return {"homo": (self.a_cross, self.b_cross), "hetero": (self.a_single, self.b_single),
                "hetero-raw": (self.a_raw, self.b_raw)}[space]


def _l2(x: np.ndarray) -> np.ndarray:
    return l2_normalize(x).astype(np.float32)


def load_pair(manifest: Path, styles: tuple[str, str], cache_dir: Path) -> dict[str, SplitData]:
    """Features of every split for one style pair (emoji present in both styles only)."""
    items = [it for it in read_manifest(manifest) if it.style in styles]
    enc = create_encoder("efficientnet-lite0")
    res = encode_images(enc, [it.image for it in items], cache_dir=feature_cache_dir(cache_dir), show_progress=False)
    if not res.ok.all():
        raise SystemExit(f"{int((~res.ok).sum())} unreadable images, first: {res.bad[:1]}")
    by_key = {(it.split, it.group, it.style): res.feats[i] for i, it in enumerate(items)}
    out = {}
    for split in ("train", "val", "test"):
        groups = sorted({g for (s, g, st) in by_key if s == split and st == styles[0]}
                        & {g for (s, g, st) in by_key if s == split and st == styles[1]})
        out[split] = SplitData(groups, np.stack([by_key[(split, g, styles[0])] for g in groups]),
                               np.stack([by_key[(split, g, styles[1])] for g in groups]))
    return out


def train_models(train: SplitData, cfg: IdentityTrainConfig) -> tuple[object, object, object, dict[str, float]]:
    labels = np.arange(len(train.groups))
    single_a = train_single_modal(train.a, labels, cfg)
    single_b = train_single_modal(train.b, labels, cfg)
    feats = np.concatenate([train.a, train.b])
    modality = np.repeat([0, 1], len(labels))
    cross, parts = train_two_stream(feats, np.concatenate([labels, labels]), modality, cfg)
    return single_a, single_b, cross, parts


def embed_split(models: tuple[object, object, object], data: SplitData) -> Embedded:
    single_a, single_b, cross = models
    return Embedded(embed(cross, data.a, modality=0), embed(cross, data.b, modality=1),  # type: ignore[arg-type]
                    embed(single_a, data.a), embed(single_b, data.b),  # type: ignore[arg-type]
                    _l2(data.a), _l2(data.b))


def both_directions(w_ab: np.ndarray, w_ba: np.ndarray, cos_ab: np.ndarray, lam: float, rel: np.ndarray
                    ) -> dict[str, dict[str, float]]:
    """Metrics of A->B and B->A for Eq. 8 with query-side weight ``lam``."""
    return {"a2b": retrieval_metrics(with_fallback(fuse(w_ab, w_ba, lam), cos_ab), rel),
            "b2a": retrieval_metrics(with_fallback(fuse(w_ba, w_ab, lam), cos_ab.T), rel)}


def _cosine_metrics(split: Embedded) -> dict[str, dict[str, float]]:
    rel = np.eye(len(split.a_cross), dtype=bool)
    cos_ab = split.a_cross @ split.b_cross.T
    return {"a2b": retrieval_metrics(cos_ab, rel), "b2a": retrieval_metrics(cos_ab.T, rel)}


def _mean_map(m: dict[str, dict[str, float]]) -> float:
    return 0.5 * (m["a2b"]["mAP"] + m["b2a"]["mAP"])


GRIDS = {  # (k, k_cross, alpha, gamma, (n_seeds, k_trunc)); n_seeds = 0: no truncation
    "quick": ((5, 10), (10, 20), (0.3, 0.8), (1.0,), ((0, 20), (5, 20))),
    "default": ((5, 10, 20), (10, 20, 40), (0.3, 0.7, 0.95), (1.0, 3.0), ((0, 20), (5, 20))),
    # the default grid's choices sat on its edges (alpha 0.3, gamma 3, k_cross 40): push them out
    "wide": ((5, 10, 20), (20, 40, 80), (0.1, 0.3, 0.7), (1.0, 3.0, 6.0), ((0, 20), (5, 20))),
}


def walk_grid(name: str) -> list[WalkConfig]:
    return [WalkConfig(k=k, k_cross=kc, alpha=a, gamma=g, n_seeds=ns, k_trunc=kt)
            for k, kc, a, g, (ns, kt) in itertools.product(*GRIDS[name])]


def select_on_val(val: Embedded, space: str, grid: list[WalkConfig]) -> dict[str, object]:
    """Best (config, lambda) for the fused walk and best config for lambda = 1, by val mean mAP."""
    rel = np.eye(len(val.a_cross), dtype=bool)
    cos_ab = val.a_cross @ val.b_cross.T
    a_own, b_own = val.own(space)
    best_fused: tuple[float, WalkConfig | None, float] = (-1.0, None, 0.0)
    best_walk: tuple[float, WalkConfig | None] = (-1.0, None)
    for cfg in grid:
        w_ab, w_ba = walk_both_ways(a_own, b_own, val.a_cross, val.b_cross, cfg)
        for lam in LAMBDAS:
            score = _mean_map(both_directions(w_ab, w_ba, cos_ab, lam, rel))
            if score > best_fused[0]:
                best_fused = (score, cfg, lam)
            if lam == 1.0 and score > best_walk[0]:
                best_walk = (score, cfg)
    return {"fused": {"config": best_fused[1], "lam": best_fused[2], "val_mAP": best_fused[0]},
            "walk": {"config": best_walk[1], "lam": 1.0, "val_mAP": best_walk[0]}}


def evaluate_test(test: Embedded, val: Embedded, space: str, chosen: dict[str, object]
                  ) -> tuple[dict[str, object], dict[str, list[float]]]:
    """Test metrics of the chosen walk and fused settings, plus the lambda sweeps (val and test)."""
    rel = np.eye(len(test.a_cross), dtype=bool)
    cos_ab = test.a_cross @ test.b_cross.T
    out: dict[str, object] = {}
    sweep: dict[str, list[float]] = {}
    for variant in ("walk", "fused"):
        pick = chosen[variant]
        cfg = pick["config"]  # type: ignore[index]
        w_ab, w_ba = walk_both_ways(*test.own(space), test.a_cross, test.b_cross, cfg)
        out[variant] = both_directions(w_ab, w_ba, cos_ab, pick["lam"], rel)  # type: ignore[index]
        reached = (fuse(w_ab, w_ba, pick["lam"]) > 0)  # type: ignore[index]
        out[variant]["relevant_reached_a2b"] = float(100 * reached.diagonal().mean())  # type: ignore[index]
        if variant == "fused":
            sweep["test"] = [_mean_map(both_directions(w_ab, w_ba, cos_ab, lam, rel)) for lam in LAMBDAS]
            v_ab, v_ba = walk_both_ways(*val.own(space), val.a_cross, val.b_cross, cfg)
            v_rel = np.eye(len(val.a_cross), dtype=bool)
            v_cos = val.a_cross @ val.b_cross.T
            sweep["val"] = [_mean_map(both_directions(v_ab, v_ba, v_cos, lam, v_rel)) for lam in LAMBDAS]
    return out, sweep


def run_pair(name: str, data: dict[str, SplitData], seed: int, train_cfg: IdentityTrainConfig,
             grid: list[WalkConfig]) -> dict[str, object]:
    t0 = time.perf_counter()
    torch.set_num_threads(1)  # tiny matrices; a busy 2-core machine makes more threads slower
    models = train_models(data["train"], replace(train_cfg, seed=seed))
    parts = models[3]
    val, test = embed_split(models[:3], data["val"]), embed_split(models[:3], data["test"])
    t_train = time.perf_counter() - t0
    rel = np.eye(len(test.a_cross), dtype=bool)
    cos_ab = test.a_cross @ test.b_cross.T
    result: dict[str, object] = {"seed": seed, "train_last_epoch": parts,
                                 "n": {s: len(d.groups) for s, d in data.items()},
                                 "baseline": {"a2b": retrieval_metrics(cos_ab, rel),
                                              "b2a": retrieval_metrics(cos_ab.T, rel)},
                                 "baseline_val_mAP": _mean_map(_cosine_metrics(val))}
    for space in SPACES:
        chosen = select_on_val(val, space, grid)
        metrics, sweep = evaluate_test(test, val, space, chosen)
        result[space] = {"chosen": {v: {"config": c["config"].to_dict(), "lam": c["lam"],  # type: ignore[union-attr]
                                        "val_mAP": c["val_mAP"]} for v, c in chosen.items()},
                         **metrics, "lambda_sweep": sweep}
        log.info("%s seed %d %s: val-chosen %s", name, seed, space, result[space]["chosen"])  # type: ignore[index]
    result["seconds"] = {"train": t_train, "total": time.perf_counter() - t0}
    return result


# ---- reporting -------------------------------------------------------------------------------

METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP")
ROWS = (("baseline", "kNN in f_u (baseline)"), ("homo/walk", "homo walk (Eq. 7)"),
        ("homo/fused", "homo fused (Eq. 8)"), ("hetero/walk", "hetero walk (Eq. 7)"),
        ("hetero/fused", "hetero fused (Eq. 8)"), ("hetero-raw/walk", "hetero-raw walk (extra)"),
        ("hetero-raw/fused", "hetero-raw fused (extra)"))


def _get(res: dict[str, object], key: str, direction: str) -> dict[str, float]:
    node: object = res
    for part in key.split("/"):
        node = node[part]  # type: ignore[index]
    return node[direction]  # type: ignore[index]


def table(runs: list[dict[str, object]], direction: str) -> str:
    rows = []
    for key, label in ROWS:
        vals = np.array([[_get(r, key, direction)[m] for m in METRICS] for r in runs])
        if len(runs) > 1:
            cells = [f"{mu:.1f} ± {sd:.1f}" for mu, sd in zip(vals.mean(0), vals.std(0))]
        else:
            cells = [f"{v:.1f}" for v in vals[0]]
        rows.append([label, *cells])
    return markdown(["method", "Rank-1", "Rank-5", "Rank-10", "Rank-20", "mAP"], rows)


def sweep_png(path: Path, sweeps: dict[str, list[float]], title: str) -> None:
    """The lambda sweeps as a line plot (matplotlib): mAP against lambda, one line per sweep."""
    line_plot({name: (list(LAMBDAS), values) for name, values in sweeps.items()}, path,
              xlabel="lambda (weight of the query-side walk, Eq. 8)", ylabel="mAP (%)", title=title,
              emphasise=[n for n in sweeps if "test" in n], dashed=[n for n in sweeps if n.startswith("baseline")])


def _choices_table(runs: list[dict[str, object]]) -> str:
    rows = []
    for r in runs:
        for space in SPACES:
            for variant in ("walk", "fused"):
                c = r[space]["chosen"][variant]  # type: ignore[index]
                cfg = c["config"]
                trunc = "off" if cfg["n_seeds"] == 0 else f"{cfg['n_seeds']} seeds x {cfg['k_trunc']}"
                rows.append([r["seed"], f"{space} {variant}", cfg["k"], cfg["k_cross"], cfg["alpha"],
                             cfg["gamma"], trunc, c["lam"], f"{c['val_mAP']:.1f}"])
    return markdown(["seed", "method", "k", "k_cross", "alpha", "gamma", "truncation", "lambda", "val mAP"], rows)


def lambda_sweeps(runs: list[dict[str, object]]) -> dict[str, list[float]]:
    """Mean mAP against lambda per space and split over the runs, and the kNN baselines as flat lines."""
    sweeps = {}
    for space in ("homo", "hetero"):
        for part in ("val", "test"):
            curves = [r[space]["lambda_sweep"][part] for r in runs]  # type: ignore[index]
            sweeps[f"{space} {part}"] = [float(v) for v in np.mean(curves, axis=0)]
    base = {"val": np.mean([r["baseline_val_mAP"] for r in runs]),
            "test": np.mean([_mean_map(r["baseline"]) for r in runs])}  # type: ignore[arg-type]
    for part in ("val", "test"):  # flat reference lines: kNN in f_u
        sweeps[f"baseline {part}"] = [float(base[part])] * len(LAMBDAS)
    return sweeps


def replot(out: Path) -> None:
    """Redraw the lambda-sweep PNGs of the results in ``out`` from their saved JSON (nothing retrained)."""
    report = load_json(out / "zeroshot_emoji.json")
    for name, pair in report["pairs"].items():
        styles = PAIRS[name]
        try:
            sweeps = lambda_sweeps(pair["runs"])
        except KeyError as e:  # results written before the field existed
            log.warning("%s: %s has no %s; its PNG is left as it is", out, name, e)
            continue
        sweep_png(out / f"lambda_sweep_{name}.png", sweeps,
                  f"{styles[0]} <-> {styles[1]}: mean mAP of both directions vs lambda")


def pair_markdown(name: str, runs: list[dict[str, object]], out: Path) -> list[str]:
    """Result tables, chosen hyper-parameters and the lambda sweep (PNG + table) of one pair."""
    styles = PAIRS[name]
    n = runs[0]["n"]
    seeds = [r["seed"] for r in runs]
    who = f"Mean ± std over seeds {seeds}" if len(runs) > 1 else f"Seed {seeds[0]}"
    sizes = f"train {n['train']}, val {n['val']}, test {n['test']}"  # type: ignore[index]
    md = [f"## {styles[0]} ↔ {styles[1]}\n\nEmoji in both styles: {sizes} (one relevant gallery item per "
          f"query). {who}, percent.\n"]
    for direction, (qa, gb) in (("a2b", styles), ("b2a", styles[::-1])):
        md.append(f"### query {qa} → gallery {gb}\n\n{table(runs, direction)}\n")
    base_val = ", ".join(f"{r['baseline_val_mAP']:.1f}" for r in runs)
    md.append(f"Chosen on val (per seed; the baseline's val mAP, mean of both directions: {base_val}):\n")
    md.append(_choices_table(runs) + "\n")
    sweeps = lambda_sweeps(runs)
    png = out / f"lambda_sweep_{name}.png"
    sweep_png(png, sweeps, f"{styles[0]} <-> {styles[1]}: mean mAP of both directions vs lambda")
    md.append(f"λ sweep (graph settings fixed at the val choice of each fused method, mean mAP of both "
              f"directions, mean over seeds): `{png.name}`\n")
    md.append(markdown(["λ", *sweeps], [[lam, *[f"{c[i]:.1f}" for c in sweeps.values()]]
                                         for i, lam in enumerate(LAMBDAS)]) + "\n")
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, default=None,
                    help="default: $XMR_CACHE_DIR/datasets/emoji/manifest.jsonl")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=sorted(PAIRS))
    ap.add_argument("--epochs", type=int, default=IdentityTrainConfig.epochs)
    ap.add_argument("--grid", choices=sorted(GRIDS), default="default",
                    help="walk hyper-parameter grid searched on val (quick 16, default 108, wide 162 points)")
    ap.add_argument("--quick", action="store_true", help="same as --grid quick")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "zeroshot")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw the lambda-sweep PNGs in --out from its saved JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.replot:
        replot(args.out)
        return 0
    cache = default_cache_dir()
    manifest = args.manifest or fetch_dataset("emoji", cache)  # fetched (npm) on first use
    train_cfg = IdentityTrainConfig(epochs=args.epochs)
    grid_name = "quick" if args.quick else args.grid
    grid = walk_grid(grid_name)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report: dict[str, object] = {"command": command_line(), "train_config": train_cfg.to_dict(),
                                 "walk_grid": {"name": grid_name, "size": len(grid)},
                                 "lambdas": list(LAMBDAS), "pairs": {}}
    md = ["# Zero-shot cross-modal emoji retrieval (heterogeneous manifolds)\n",
          f"Command: `XMR_CACHE_DIR={cache} {command_line()}`  ",
          f"Seeds: {args.seeds}; walk grid `{grid_name}`: {len(grid)} configs x {len(LAMBDAS)} lambdas, "
          f"chosen on val by the mean mAP of both directions; {load_note()}.\n"]
    for name in args.pairs:
        styles = PAIRS[name]
        data = load_pair(manifest, styles, cache)
        runs = [run_pair(name, data, seed, train_cfg, grid) for seed in args.seeds]
        report["pairs"][name] = {"styles": styles, "runs": runs}  # type: ignore[index]
        md += pair_markdown(name, runs, args.out)
    report["seconds"] = time.perf_counter() - t0
    md.append(f"Total runtime {report['seconds']:.0f} s.\n")
    save_json(args.out / "zeroshot_emoji.json", report)
    atomic_write_text(args.out / "zeroshot_emoji.md", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
