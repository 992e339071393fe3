"""Label retrieval on image and joint image+text manifolds (joint-embedding-manifold paper, Sec. 4.3).

An N-way k-shot database (k labelled images from each of N random classes) is drawn from a
pool of images; every other pool image of those N classes is a query whose label is the label of
its nearest database image, once by Euclidean (cosine) distance and once by geodesic distance on
a great-circle epsilon-graph with ``edges_per_vertex`` x |V| edges (Alg. 1, Dijkstra). A query
with no path to the database is *unretrievable* (a miss in "all", left out of "retrievable").
All pool images, of every class, are vertices of the graph; in the joint manifold the text points
are extra vertices that are never retrieved themselves.

Feature spaces per dataset (the paper's Resnet / Image / Joint rows):

* ``pretrained``: the frozen EfficientNet-Lite0 features, L2-normalised (image only);
* ``image``: the joint model's image embeddings after the Procrustes/ICP alignment T (image only);
* ``image+text``: the same aligned image points plus text points as extra manifold samples.

T (rotation + translation, :func:`xmr.rerank.geodesic.procrustes_align`) is fitted once on the
*training* pairs (image, its caption) of each dataset, never on the evaluated pool.

Datasets:

* Fashion-MNIST (Debian ``dataset-fashion-mnist``; ``make data``): grey 28 x 28 images inverted
  to dark-on-white (the Zalando product shots were on white), upsampled to 224 px (bicubic) and
  encoded with EfficientNet-Lite0 through the feature cache. The joint space is a linear xmr
  joint model (InfoNCE, ``train_joint_model``) trained on a class-stratified subsample of the
  train split, each image paired with three caption templates of its class ("a photo of a
  sneaker." ...; MiniLM). Validation pool: other train-split images; test pool: t10k images.
  Text points: the 30 caption embeddings (10 classes x 3 templates). The 10 classes are *seen*
  in training: this space was taught the labels, so both methods are expected to do well.
* emoji subcategories (CLDR subgroups): the demo's joint model (``--emoji-run``). Validation pool:
  the val split (11 subgroups), test pool: the test split (29 subgroups never seen in
  training), all four drawing styles. Text points: the pool's CLDR names (one per emoji).

``edges_per_vertex`` is chosen per (dataset, space) on the validation pool (mean geodesic R@1
over all queries, averaged over the N-way k-shot settings and validation seeds), then used
unchanged on the test pool with other seeds. Geodesic distances are computed once per graph for
all pool vertices and reused for every database; one database per dataset is re-scored by the
library's :func:`xmr.rerank.manifold_eval.label_retrieval` as a reference check.

Example (the first run encodes 7,500 Fashion-MNIST images: ~10 min measured on a busy 2-core machine, ~70 s
expected at the 112 img/s of a quiet one; warm: 4 min 53 s busy, ``--quick`` about 1 min)::

    XMR_CACHE_DIR=/work/xmr-cache python benchmarks/label_retrieval.py \\
        --emoji-run /work/xmr-runs/demo/emoji-infonce
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from PIL import Image

from xmr.bench.common import command_line, load_note, markdown
from xmr.bench.label_retrieval import (
    EPV_GRID,
    METRICS,
    Pool,
    choose_epv,
    evaluate,
    make_pools,
    manifold_graph,
    score_database,
)
from xmr.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist
from xmr.encoders import create_encoder
from xmr.encoders.cache import FeatureCache, text_key
from xmr.errors import XmrError
from xmr.rerank.geodesic import procrustes_align
from xmr.rerank.manifold_eval import n_way_k_shot_retrieval
from xmr.utils.io import atomic_write_text, save_json
from xmr.utils.paths import default_cache_dir
from xmr.utils.progress import progress

log = logging.getLogger("label_retrieval")

HERE = Path(__file__).resolve().parent
SETTINGS = ((5, 1), (5, 5), (10, 1), (10, 5))  # (N-way, k-shot)
VAL_SEED0, TEST_SEED0 = 1000, 0
FMNIST_NOUNS = ("T-shirt", "pair of trousers", "pullover", "dress", "coat",
                "sandal", "shirt", "sneaker", "bag", "ankle boot")
FMNIST_TEMPLATES = ("a photo of a {}.", "a product photo of a {}.", "a black and white picture of a {}.")


# ---------------------------------------------------------------- Fashion-MNIST

def stratified(labels: np.ndarray, per_class: int, rng: np.random.Generator, exclude: np.ndarray | None = None
               ) -> np.ndarray:
    """``per_class`` random indices of each label (not in ``exclude``), sorted."""
    taken = np.zeros(len(labels), bool) if exclude is None else np.isin(np.arange(len(labels)), exclude)
    out = [rng.choice(np.flatnonzero((labels == c) & ~taken), per_class, replace=False)
           for c in np.unique(labels)]
    return np.sort(np.concatenate(out))


def fmnist_features(images: np.ndarray, encoder: object, cache: FeatureCache) -> np.ndarray:
    """EfficientNet features of 28 x 28 grey images (inverted, upsampled), through ``cache``.

    The cache key is the SHA-1 of the raw pixels plus the preprocessing name. Shape: (n, 1280).
    """
    size = encoder.image_size  # type: ignore[attr-defined]
    keys = [hashlib.sha1(b"fmnist-inv-bicubic:" + im.tobytes()).hexdigest() for im in images]
    todo = {k: i for i, k in enumerate(keys) if k not in cache}
    items = list(todo.items())
    bs, per_shard = 32, 1024  # few large shards: the cache merges once it holds more than 64
    for s in progress(range(0, len(items), per_shard), desc="encode Fashion-MNIST", unit="shard"):
        chunk = items[s:s + per_shard]
        feats = []
        for b in range(0, len(chunk), bs):
            arrs = [np.asarray(Image.fromarray(255 - images[i]).convert("RGB")
                               .resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)
                    for _, i in chunk[b:b + bs]]
            feats.append(encoder.encode_batch(arrs))  # type: ignore[attr-defined]
        cache.put([k for k, _ in chunk], np.concatenate(feats))
    log.info("Fashion-MNIST features: %d images, %d newly encoded", len(keys), len(items))
    return cache.get(keys)


def fmnist_pools(args: argparse.Namespace, cache_dir: Path) -> tuple[dict[str, Pool], dict[str, object]]:
    from xmr.models import ModelConfig
    from xmr.training import EvalSet, PairSet, TrainConfig, train_joint_model

    x_tr, y_tr = load_fashion_mnist("train", root=args.fmnist_dir)
    x_te, y_te = load_fashion_mnist("test", root=args.fmnist_dir)
    rng = np.random.default_rng(0)
    n_head, n_val, n_test = (150, 60, 80) if args.quick else (400, 150, 200)  # per class
    i_head = stratified(y_tr, n_head, rng)
    i_val = stratified(y_tr, n_val, rng, exclude=i_head)
    i_test = stratified(y_te, n_test, rng)
    img_enc, txt_enc = create_encoder("efficientnet-lite0"), create_encoder("minilm-l6")
    fcache = FeatureCache(cache_dir / "features", img_enc.describe())
    feats = {"head": fmnist_features(x_tr[i_head], img_enc, fcache),
             "val": fmnist_features(x_tr[i_val], img_enc, fcache),
             "test": fmnist_features(x_te[i_test], img_enc, fcache)}
    labels = {"head": y_tr[i_head], "val": y_tr[i_val], "test": y_te[i_test]}
    texts = [tpl.format(noun) for noun in FMNIST_NOUNS for tpl in FMNIST_TEMPLATES]  # class-major
    tcache = FeatureCache(cache_dir / "features", txt_enc.describe())
    tkeys = [text_key(t) for t in texts]  # the pipeline's key, so `xmr encode` shares them
    missing = [(k, t) for k, t in zip(tkeys, texts) if k not in tcache]
    if missing:
        tcache.put([k for k, _ in missing], txt_enc.encode_batch([t for _, t in missing]))
    txt_feats = tcache.get(tkeys)
    n_tpl = len(FMNIST_TEMPLATES)
    pairs = np.array([(i, c * n_tpl + j) for i, c in enumerate(labels["head"]) for j in range(n_tpl)], np.int64)
    relevance = sp.csr_matrix(np.repeat(np.eye(10, dtype=bool), n_tpl, axis=1)[labels["val"]])
    mcfg = ModelConfig(image_encoder="efficientnet-lite0", text_encoder="minilm-l6", image_dim=1280,
                       text_dim=384, head="linear", dropout=0.0)
    tcfg = TrainConfig(loss="infonce", epochs=8 if args.quick else 15, batch_size=128, lr=1e-3, patience=4, seed=0)
    run_dir = cache_dir / "benchmarks" / "label_retrieval" / f"fmnist-linear-{n_head}pc"
    res = train_joint_model(PairSet(feats["head"], txt_feats, pairs, labels["head"].astype(np.int64)),
                            EvalSet(feats["val"], txt_feats, relevance), mcfg, tcfg, out_dir=run_dir)
    model = res.model
    emb = {k: model.embed_numpy(v, "image") for k, v in feats.items()}
    temb = model.embed_numpy(txt_feats, "text")
    align = procrustes_align(emb["head"][pairs[:, 0]], temb[pairs[:, 1]])
    pools = make_pools(feats, emb, {"val": temb, "test": temb}, labels, align)
    info = {"pool_sizes": {k: int(len(v)) for k, v in labels.items()}, "per_class": [n_head, n_val, n_test],
            "joint_model": str(run_dir), "joint_model_val": res.best_metrics, "best_epoch": res.best_epoch,
            "text_points": len(texts), "templates": list(FMNIST_TEMPLATES), "class_names": list(CLASS_NAMES)}
    return pools, info


# ---------------------------------------------------------------- emoji

def emoji_pools(args: argparse.Namespace, cache_dir: Path) -> tuple[dict[str, Pool], dict[str, object]]:
    from xmr.models import load_model
    from xmr.runs.config import RunConfig, load_run_config, run_encoders, run_items
    from xmr.workflows.features import encode_items

    run = Path(args.emoji_run)
    cfg = load_run_config(run, RunConfig)
    model = load_model(run / "best")
    enc = run_encoders(cfg)
    feats, emb, temb, labels = {}, {}, {}, {}
    align = None
    for split in ("train", "val", "test"):
        fs = encode_items(run_items(cfg, split=split), **enc, cache_dir=cache_dir, texts_per_item=1)
        feats[split] = fs.image_feats
        emb[split] = model.embed_numpy(fs.image_feats, "image")
        temb[split] = model.embed_numpy(fs.text_feats, "text")
        labels[split] = np.array([it.label for it in fs.items], dtype=object).astype(str)
        if split == "train":
            coo = fs.relevance.tocoo()  # each item's CLDR name
            align = procrustes_align(emb["train"][coo.row], temb["train"][coo.col])
    pools = make_pools(feats, emb, temb, labels, align)  # type: ignore[arg-type]
    info = {"run": str(run), "model_id": model.model_id,
            "pool_sizes": {k: int(len(v)) for k, v in labels.items()},
            "classes": {k: int(len(set(v))) for k, v in labels.items()},
            "text_points": {k: int(len(v)) for k, v in temb.items()}}
    return pools, info


# ---------------------------------------------------------------- evaluation

def test_sweep(pool: Pool, space: str, seeds: list[int]) -> dict[str, dict[str, float]]:
    """Test-pool means over all settings for every grid value: a sensitivity report only."""
    out = {}
    for epv in EPV_GRID:
        res = evaluate(pool, space, epv, seeds, SETTINGS)["settings"].values()  # type: ignore[union-attr]
        out[f"{epv:g}"] = {k: float(np.nanmean([m[k] for m in res]))
                           for k in ("r1_euclidean", "r1_geodesic", "geo_minus_eu_retrievable")}
        out[f"{epv:g}"]["retrievable_fraction"] = float(np.mean([m["n_retrievable"] / m["n_queries"] for m in res]))
    return out


def reference_check(pool: Pool, space: str, epv: float, seed: int) -> None:
    """The fast path must agree with the library's n_way_k_shot_retrieval on one database."""
    points, extra = pool.spaces[space]
    n_way = min(5, len(set(pool.labels)))
    ref = n_way_k_shot_retrieval(points, pool.labels, n_way=n_way, k_shot=1, edges_per_vertex=epv,
                          extra_points=extra, seed=seed)
    fast = score_database(points, manifold_graph(points, extra, epv)[0], pool.labels, n_way, 1, seed)
    for m in METRICS:
        if not (np.isclose(ref[m], fast[m]) or (np.isnan(ref[m]) and np.isnan(fast[m]))):
            raise AssertionError(f"fast path disagrees with n_way_k_shot_retrieval on {m}: {fast[m]} vs {ref[m]}")


def run_dataset(name: str, pools: dict[str, Pool], n_seeds: int) -> dict[str, object]:
    val_seeds = list(range(VAL_SEED0, VAL_SEED0 + n_seeds))
    test_seeds = list(range(TEST_SEED0, TEST_SEED0 + n_seeds))
    out: dict[str, object] = {"val_seeds": val_seeds, "test_seeds": test_seeds, "spaces": {}}
    for space in pools["test"].spaces:
        t0 = time.perf_counter()
        epv, curve = choose_epv(pools["val"], space, val_seeds, SETTINGS)
        reference_check(pools["test"], space, epv, seed=test_seeds[0])
        res = evaluate(pools["test"], space, epv, test_seeds, SETTINGS)
        res["val_curve"] = curve
        res["test_sweep"] = test_sweep(pools["test"], space, test_seeds)
        res["seconds"] = time.perf_counter() - t0
        out["spaces"][space] = res  # type: ignore[index]
        log.info("%s / %s: edges_per_vertex %g (val curve %s), %.1f s", name, space, epv, curve, res["seconds"])
    return out


# ---------------------------------------------------------------- report

def table(result: dict[str, object]) -> str:
    rows = []
    for space, res in result["spaces"].items():  # type: ignore[union-attr]
        for setting, m in res["settings"].items():
            rows.append([space, setting, f"{res['edges_per_vertex']:g}", f"{m['r1_euclidean']:.1f}",
                         f"{m['r1_geodesic']:.1f}", f"{m['geo_minus_eu']:+.1f} ± {m['geo_minus_eu_sd']:.1f}",
                         f"{m['r1_euclidean_retrievable']:.1f}", f"{m['r1_geodesic_retrievable']:.1f}",
                         f"{m['n_retrievable']:.0f} / {m['n_queries']:.0f}"])
    return markdown(["space", "database", "edges/vertex", "Eu R@1", "Geo R@1", "Geo − Eu (± sd over seeds)",
                     "Eu R@1 retr.", "Geo R@1 retr.", "retrievable / queries"], rows)


def val_table(result: dict[str, object]) -> str:
    rows = [[space, *(f"{res['val_curve'][f'{e:g}']:.1f}" for e in EPV_GRID),  # type: ignore[index]
             f"{res['val_curve']['euclidean']:.1f}", f"{res['edges_per_vertex']:g}"]  # type: ignore[index]
            for space, res in result["spaces"].items()]  # type: ignore[union-attr]
    return markdown(["space", *(f"epv {e:g}" for e in EPV_GRID), "Eu (any epv)", "chosen"], rows)


def sweep_table(result: dict[str, object]) -> str:
    rows = []
    for space, res in result["spaces"].items():  # type: ignore[union-attr]
        for epv, m in res["test_sweep"].items():
            rows.append([space, epv, f"{m['r1_euclidean']:.1f}", f"{m['r1_geodesic']:.1f}",
                         f"{m['geo_minus_eu_retrievable']:+.1f}", f"{100 * m['retrievable_fraction']:.0f} %"])
    return markdown(["space", "edges/vertex", "Eu R@1", "Geo R@1", "Geo − Eu on retrievable", "retrievable"], rows)


def summary(result: dict[str, object]) -> str:
    """Geodesic wins and losses per (space, database) cell, and how many are beyond seed noise.

    A difference counts as clear when |mean| > 2 standard errors (sd / sqrt(seeds)) of the paired
    per-seed differences (same database, same queries for both methods)."""
    cells = [m for res in result["spaces"].values() for m in res["settings"].values()]  # type: ignore[union-attr]

    def count(key: str) -> str:
        se = [m[f"{key}_sd"] / np.sqrt(m["n_seeds"]) for m in cells]
        wins = sum(m[key] > 0 for m in cells)
        clear_w = sum(m[key] > 2 * e for m, e in zip(cells, se))
        clear_l = sum(m[key] < -2 * e for m, e in zip(cells, se))
        return f"{wins} of {len(cells)} cells ({clear_w} clearly better, {clear_l} clearly worse)"

    return (f"Geodesic R@1 above Euclidean over all queries: {count('geo_minus_eu')}; on retrievable "
            f"queries (vs Euclidean on the same queries): {count('geo_minus_eu_retrievable')}. Clearly = "
            "paired mean difference beyond 2 standard errors over the seeds.")


def write_report(out_dir: Path, results: dict[str, dict[str, object]], meta: dict[str, object]) -> None:
    parts = ["# Label retrieval: Euclidean vs geodesic R@1 on image and image+text manifolds", "",
             f"Command: `{meta['command']}` (feature cache and the Fashion-MNIST joint model under "
             f"`{meta['cache_dir']}`, i.e. `XMR_CACHE_DIR`)", "",
             f"{meta['load']}; total {meta['seconds']:.0f} s. Test seeds {meta['test_seeds']}, validation "
             f"seeds {meta['val_seeds']} (one N-way k-shot database per seed and setting; the means below "
             "are over seeds). R@1 in percent; unretrievable queries are misses in the 'all' columns. "
             "'retr.' columns: only queries with a path to the database (Euclidean on the same queries "
             "is the paper's Baseline*). edges/vertex chosen on the validation pool (table after each "
             "dataset: mean geodesic R@1 over all queries and settings).", ""]
    for name, res in results.items():
        parts += [f"## {name}", "", f"Data: `{json.dumps(res['info'])}`", "", table(res), "", summary(res), "",
                  "Validation (mean geodesic R@1, all queries) per edges_per_vertex:", "", val_table(res), "",
                  "Sensitivity on the test pool (means over the settings; reported, not used to choose):", "",
                  sweep_table(res), ""]
    atomic_write_text(out_dir / "label_retrieval.md", "\n".join(parts))
    save_json(out_dir / "label_retrieval.json", {"meta": meta, "results": results})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller Fashion-MNIST pools, 3 seeds")
    p.add_argument("--seeds", type=int, default=None, help="databases per setting (default 10, quick 3)")
    p.add_argument("--emoji-run", default="runs/demo/emoji-infonce", help="trained emoji joint model run")
    p.add_argument("--fmnist-dir", default=None, help="folder of the Fashion-MNIST IDX files")
    p.add_argument("--datasets", default="fashion-mnist,emoji")
    p.add_argument("--out", default=str(HERE / "results" / "label_retrieval"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    cache_dir = default_cache_dir()
    n_seeds = args.seeds or (3 if args.quick else 10)
    results: dict[str, dict[str, object]] = {}
    for name in args.datasets.split(","):
        build = {"fashion-mnist": fmnist_pools, "emoji": emoji_pools}.get(name)
        if build is None:
            raise SystemExit(f"unknown dataset {name!r}")
        try:
            pools, info = build(args, cache_dir)
        except XmrError as e:
            log.error("%s skipped: %s", name, e)
            continue
        res = run_dataset(name, pools, n_seeds)
        res["info"] = info
        results[name] = res
        print(f"\n## {name}\n\n{table(res)}\n", flush=True)
    meta = {"command": command_line(), "cache_dir": str(cache_dir), "load": load_note(),
            "seconds": time.perf_counter() - t0,
            "val_seeds": list(range(VAL_SEED0, VAL_SEED0 + n_seeds)),
            "test_seeds": list(range(TEST_SEED0, TEST_SEED0 + n_seeds)), "epv_grid": list(EPV_GRID),
            "settings": [list(s) for s in SETTINGS], "quick": args.quick}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_report(out, results, meta)
    log.info("wrote %s (%.0f s)", out / "label_retrieval.md", meta["seconds"])
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
