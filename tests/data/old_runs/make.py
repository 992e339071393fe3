"""Make the old-run fixtures of ``tests/test_old_runs.py`` with the code of one fixed commit.

Run folders of every kind the tests make (tiny dimensions, the toy encoders, the shapes / scene /
CSS sets made on the fly, no downloads) are trained, indexed, evaluated and searched by the code
*before* issue 26's redesign (commit 16399d7), and the numbers it gave are kept in
``expected.json`` beside them; the test loads the same folders with today's code and compares.

    git worktree add /tmp/wt-old 16399d7
    XMR_THREADS=1 PYTHONPATH=/tmp/wt-old/src .venv/bin/python tests/data/old_runs/make.py

The script imports only what that commit has (the A3VSE run goes through its Python API, with a
fake colour labeller in place of WordNet + ImageNet, as its test did), so it is not expected to
run on later code: the fixtures are made once and kept. Paths inside the artefacts are absolute;
in the fixture the scratch root is written as ``@ROOT@`` (JSON files and ``gallery.sqlite``
rows), and the test writes its own copy's root back in.

``--big DEST`` makes, instead, the runs whose weights take megabytes (a fine-tuned EfficientNet
tail and MiniLM layer, the composed LSTM, GXN and the word-level models at the CLI's sizes) into a
folder outside the repository; ``XMR_OLD_RUNS_BIG=DEST`` adds them to the test.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

os.environ.setdefault("XMR_THREADS", "1")
os.environ.setdefault("XMR_NO_PROGRESS", "1")

import numpy as np  # noqa: E402

from xmr.cli import main  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: what the test checks with, recorded with
from test_old_runs import pixels_digest, relocate  # noqa: E402

HERE = Path(__file__).resolve().parent
TOKEN = "@ROOT@"
SKIP_FILES = ("*.lock", "last.pt")  # locks of finished commands; training states but keep_last's
KEEP_LAST = ("instance",)  # the run whose training state (last.pt) the fixture keeps: made by the CLI, resumable
TOY = ["--image-encoder", "toy-image", "--text-encoder", "toy-text"]
SMALL = ["--embed-dim", "16", "--hidden-dim", "16", "--batch-size", "16", "--lr", "3e-3", "--patience", "0"]
GXN = ["--embed-dim", "16", "--hidden-dim", "16", "--two-branch", "0.5", "--similarity", "order", "--loss", "vse0",
       "--margin", "0.05", "--lr", "2e-4", "--batch-size", "24", "--patience", "0"]
TEXT_QUERIES = ["a purple circle", "an orange cross"]
IMAGE_QUERY = "img/cyan-triangle-1.png"  # relative to the shapes manifest's folder

# name -> (data set, training arguments after the manifest); "karpathy" trains on a Karpathy JSON of the
# shapes set. The A3VSE run with pseudo-texts and the word-level text models are made through the Python
# API (a fake labeller; word models smaller than the CLI's fixed sizes, whose weights take megabytes); GXN's
# caption decoder and GAN get smaller widths than the workflow's fixed ones (see small_generative). The
# composed runs query with the frozen toy text encoder (the CLI's LSTM has a fixed hidden size of 512).
CLI_RUNS: dict[str, tuple[str, list[str]]] = {
    "infonce": ("shapes", [*TOY, *SMALL, "--epochs", "3"]),
    "vsepp": ("shapes", [*TOY, *SMALL, "--loss", "vse++", "--vse0-warmup", "1", "--epochs", "3"]),
    "instance": ("shapes", [*TOY, *SMALL, "--loss", "instance", "--then", "instance+rank", "--stage1-epochs", "1",
                            "--epochs", "3"]),
    "sparse": ("shapes", ["--image-encoder", "toy-image-regions", "--text-encoder", "toy-text", *SMALL,
                          "--image-head", "region-attention", "--hidden-dim", "8", "--sparse", "0.5x1",
                          "--loss", "vse++", "--vse0-warmup", "1", "--epochs", "3", "--grad-clip", "2"]),
    "two_branch": ("shapes", [*TOY, *SMALL, "--loss", "vse0", "--margin", "0.05", "--two-branch", "0.5",
                              "--epochs", "3"]),
    "gxn": ("scenes", [*TOY, *GXN, "--generative", "i2t,t2i", "--epochs", "2", "--caption-xe-epochs", "1"]),
    "cross_style": ("shapes", [*TOY, *SMALL, "--cross-style", "1.0", "--epochs", "3"]),
    "order": ("shapes", [*TOY, *SMALL, "--loss", "vse0", "--margin", "0.05", "--similarity", "order",
                         "--epochs", "3"]),
    "ema": ("shapes", [*TOY, *SMALL, "--ema", "0.9", "--epochs", "3"]),
    "augment": ("shapes", [*TOY, *SMALL, "--augment-views", "1", "--augment", "grey", "--epochs", "2"]),
    "extra": ("shapes", ["@ROOT@/data/shapes_b/manifest.jsonl:train,val@0.5", *TOY, *SMALL, "--epochs", "2"]),
    "karpathy": ("karpathy", ["--image-root", "@ROOT@/data/shapes", *TOY, *SMALL, "--epochs", "2"]),
    "composed": ("css", ["--task", "composed", *TOY, "--embed-dim", "16",
                         "--epochs", "2", "--batch-size", "16"]),
    "composed_joint": ("css", ["--task", "composed", "--in-joint", *TOY,
                               "--embed-dim", "16", "--epochs", "2", "--batch-size", "16"]),
}
# the optional large set (``--big DEST``, kept outside the repository: megabytes of weights): the runs whose
# sizes the CLI fixes -- a fine-tuned EfficientNet tail, a fine-tuned MiniLM layer, the composed LSTM, GXN and
# the word-level models at their CLI sizes -- each with its training state
BIG_RUNS: dict[str, tuple[str, list[str]]] = {
    "finetune_image": ("shapes", ["--image-encoder", "efficientnet-lite0", "--text-encoder", "toy-text",
                                  "--finetune-image-blocks", "1", *SMALL, "--batch-size", "8", "--finetune-lr", "1e-3",
                                  "--epochs", "2"]),
    "finetune_text": ("shapes", ["--image-encoder", "toy-image", "--text-encoder", "minilm-l6",
                                 "--finetune-text-layers", "1", "--finetune-text-length", "16", *SMALL,
                                 "--batch-size", "8", "--finetune-lr", "1e-3", "--epochs", "2"]),
    "composed_lstm": ("css", ["--task", "composed", "--image-encoder", "toy-image", "--embed-dim", "16",
                              "--epochs", "2", "--batch-size", "16"]),
    "gxn_cli": ("scenes", [*TOY, *GXN, "--generative", "i2t,t2i", "--epochs", "2", "--caption-xe-epochs", "1"]),
    "textcnn_cli": ("shapes", ["--image-encoder", "toy-image", "--text-encoder", "textcnn", "--word-vectors", "random",
                               *SMALL, "--epochs", "2"]),
    "bigru_cli": ("shapes", ["--image-encoder", "toy-image", "--text-encoder", "bigru", "--word-vectors", "random",
                             "--no-position-shift", "--text-length", "12", "--text-pool", "attention", *SMALL,
                             "--epochs", "2"]),
}
MANIFESTS = {"shapes": "data/shapes/manifest.jsonl", "scenes": "data/scenes/manifest.jsonl",
             "css": "data/css/manifest.jsonl", "karpathy": "data/shapes/dataset_shapes.json"}


def xmr(root: Path, *argv: str) -> str:
    """``xmr -q ARGV`` in this process with ``@ROOT@`` expanded; its stdout (fails on a non-zero status)."""
    args = ["-q", *(a.replace(TOKEN, str(root)) for a in argv)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(args)
    if rc != 0:
        raise SystemExit(f"xmr {' '.join(args)} -> {rc}")
    return out.getvalue()


def make_data(root: Path) -> None:
    """The data sets: shapes (2 styles), a second shapes set (extra pairs, index add), scenes, CSS, Karpathy JSON."""
    from xmr.bench.shapes import make_shapes_dataset
    from xmr.data.manifest import read_manifest
    from xmr.data.scene_captions import make_scene_captions
    from xmr.data.scenes import make_css_dataset

    shapes = make_shapes_dataset(root / "data" / "shapes", copies=2)
    make_shapes_dataset(root / "data" / "shapes_b", copies=1, seed=1)
    make_scene_captions(root / "data" / "scenes", seed=0, sizes={"train": 24, "val": 8, "test": 8})
    make_css_dataset(root / "data" / "css", n_train=24, n_test=6, seed=0, max_objects=3)
    images = []  # the shapes set in Karpathy's format, as tests/test_data_readers.py writes it
    for i, it in enumerate(read_manifest(shapes)):
        sents = [f"{it.texts[0]} number {k} of image {i}" for k in range(5)]
        images.append({"filepath": "img", "filename": Path(it.image).name, "imgid": i, "split": it.split,
                       "sentences": [{"raw": s, "tokens": s.split()} for s in sents]})
    (root / MANIFESTS["karpathy"]).write_text(json.dumps({"dataset": "shapes", "images": images}, indent=1))
    (root / "data" / "shapes" / "queries.txt").write_text(
        "".join(f"text:{t}\n" for t in TEXT_QUERIES) + f"image:{IMAGE_QUERY}\n")
    scene = [it for it in read_manifest(root / MANIFESTS["scenes"]) if it.split == "test"][-1]
    (root / "data" / "scenes" / "queries.txt").write_text(
        "text:a small red circle in the centre\ntext:two blue squares\n"
        f"image:{Path(scene.image).resolve().relative_to(root / 'data' / 'scenes')}\n")


def colour_labeller() -> object:
    """tests/test_sparse_training.py's fake 'ImageNet' labeller: four colour classes from the crop's mean RGB."""
    from xmr.semantics.labeller import ImageNetLabeller

    names = ["ruby", "emerald", "sapphire", "canary"]

    def logits(images: np.ndarray) -> np.ndarray:
        rgb = images.reshape(len(images), -1, 3).mean(axis=1) / 25.0
        rgb = rgb - rgb.mean(axis=1, keepdims=True)
        r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        return np.stack([r, g, b, (r + g) / 2 - b], axis=1)

    return ImageNetLabeller(class_names=names, logits_fn=logits, model_id="fake-colours", image_size=32)


def make_a3vse(root: Path) -> dict[str, object]:
    """A3VSE: sparse annotation + regional pseudo-texts + the six adversarial discriminators (Python API)."""
    from xmr.runs import RunConfig
    from xmr.training import TrainConfig
    from xmr.workflows.train import train_run

    train = TrainConfig(loss="vse++", epochs=3, vse0_warmup_epochs=1, batch_size=8, steps_per_epoch=3, lr=3e-3,
                        patience=0, adversarial=True, grad_clip=2.0, disc_hidden=16)
    cfg = RunConfig(manifest=str(root / MANIFESTS["shapes"]), train=train, image_encoder="toy-image-regions",
                    text_encoder="toy-text", embed_dim=16, head="linear", hidden_dim=8,
                    image_head="region-attention", sparse="0.5x1", pseudo_texts="regional")
    train_run(cfg, root / "runs" / "a3vse", cache_dir=root / "cache", labeller=colour_labeller())
    return {"data": "shapes", "train_argv": None}


def make_text_runs(root: Path) -> dict[str, dict[str, object]]:
    """Word-level text models trained end to end: TextCNN (max pool) and the bi-GRU with A3VSE's attention."""
    from xmr.runs import RunConfig
    from xmr.text import TextEncoderConfig
    from xmr.training import TrainConfig
    from xmr.workflows.train import train_run

    out: dict[str, dict[str, object]] = {}
    for kind, extra in (("textcnn", {"blocks": 1}), ("bigru", {"pool": "attention", "position_shift": False})):
        text = TextEncoderConfig(kind=kind, init="random", length=12, word_dim=8, hidden=8, out_dim=16,
                                 **extra)  # type: ignore[arg-type]
        cfg = RunConfig(manifest=str(root / MANIFESTS["shapes"]), train=TrainConfig(epochs=3, batch_size=16, lr=3e-3,
                                                                                     patience=0),
                        image_encoder="toy-image", text_encoder=kind, text_model=text, embed_dim=16, hidden_dim=16)
        train_run(cfg, root / "runs" / kind, cache_dir=root / "cache")
        out[kind] = {"data": "shapes", "train_argv": None}
    return out


@contextlib.contextmanager
def small_generative() -> Iterator[None]:
    """GXN's caption decoder and GAN at small widths (the workflow fixes GXN's; the saved config keeps them)."""
    import functools

    import xmr.workflows.imagine as imagine

    saved = imagine.CaptionerConfig, imagine.GanConfig
    imagine.CaptionerConfig = functools.partial(saved[0], word_dim=8, hidden_dim=16)  # type: ignore[misc]
    imagine.GanConfig = functools.partial(saved[1], c_dim=8, z_dim=8, ngf=2, ndf=2)  # type: ignore[misc]
    try:
        yield
    finally:
        imagine.CaptionerConfig, imagine.GanConfig = saved  # type: ignore[misc]


def searches(root: Path, run: str, index: str, data: str, extra: Sequence[str] = (), texts: bool = True
             ) -> dict[str, object]:
    """The run's queries against ``index``: images for the text and image queries, texts for the image query."""
    queries = root / "data" / ("shapes" if data in ("shapes", "karpathy") else data) / "queries.txt"
    base = ["search", f"runs/{run}", "--index", index, "-k", "5", "--json", *extra]
    out = {"images": [json.loads(line) for line in xmr(root, *base, "--queries", str(queries)).splitlines()]}
    if not texts:
        return out
    image = [line for line in queries.read_text().splitlines() if line.startswith("image:")][0][len("image:"):]
    out["texts"] = [json.loads(xmr(root, *base, "--target", "texts", "--image", str(queries.parent / image)))]
    return out


def evaluate(root: Path, run: str, *extra: str) -> dict[str, object]:
    path = root / "work" / f"eval-{run}{'-'.join(('', *extra)).replace('--', '')}.json"
    xmr(root, "eval", f"runs/{run}", "--cache-dir", "cache", "--out", str(path), *extra)
    saved = json.loads(path.read_text())
    saved.pop("command", None)
    return saved


def record_retrieval(root: Path, name: str, data: str) -> dict[str, object]:
    """eval + a fresh test-split index + searches of one retrieval run."""
    rec: dict[str, object] = {"eval": evaluate(root, name)}
    index = root / "work" / name / "index"
    xmr(root, "index", f"runs/{name}", "--split", "test", "--out", str(index), "--cache-dir", "cache")
    rec["search"] = searches(root, name, str(index), data)
    return rec


def record_gxn(root: Path, name: str, rec: dict[str, object]) -> None:
    """GXN: captions (greedy and beam 2) of two test scenes, imagined images, and eval --captions."""
    from xmr.data.manifest import read_manifest

    test = [it for it in read_manifest(root / MANIFESTS["scenes"]) if it.split == "test"][:2]
    rec["caption"] = {}
    for it in test:
        rel = str(Path(it.image).resolve().relative_to(root))
        rec["caption"][rel] = {beam: xmr(root, "caption", f"runs/{name}", "--image", rel, "--beam", beam).strip()
                               for beam in ("1", "2")}
    rec["imagine"] = {}
    for text, seed in (("a small red circle in the centre", "0"), ("two blue squares", "3")):
        out = root / "work" / f"imagine-{name}-{seed}.png"
        xmr(root, "imagine", f"runs/{name}", "--text", text, "--out", str(out), "--n", "2", "--seed", seed)
        pngs = [out.with_name(f"imagine-{name}-{seed}-{i}.png") for i in (1, 2)]
        rec["imagine"][f"{text}|{seed}"] = pixels_digest(pngs)
    rec["eval_captions"] = evaluate(root, name, "--captions")
    rec["eval_captions"].pop("metrics", None)
    rec["captions_json"] = json.loads((root / "runs" / name / "captions-test.json").read_text())
    rec["captions_json"].pop("command", None)
    (root / "runs" / name / "captions-test.json").unlink()


def record_composed(root: Path, name: str) -> dict[str, object]:
    """A composed run: eval (R@1/10/50) and two image + modification queries."""
    triplets = [json.loads(line) for line in (root / "data" / "css" / "triplets.jsonl").read_text().splitlines()]
    items = {json.loads(line)["id"]: json.loads(line) for line in
             (root / MANIFESTS["css"]).read_text().splitlines()}
    queries = []
    for t in [t for t in triplets if t.get("split") == "test"][:2]:
        image = str((root / "data" / "css" / items[t["source"]]["image"]).relative_to(root))
        out = xmr(root, "search", f"runs/{name}", "--image", image, "--text", t["text"], "-k", "5")
        queries.append({"image": image, "text": t["text"], "lines": out.splitlines()})
    xmr(root, "eval", f"runs/{name}", "--cache-dir", "cache")  # a composed eval takes no --out
    saved = json.loads((root / "runs" / name / "eval-composed-test.json").read_text())
    (root / "runs" / name / "eval-composed-test.json").unlink()
    saved.pop("command", None)
    return {"eval": saved, "composed_search": queries}


def make_indexes(root: Path, expected: dict[str, dict[str, object]]) -> None:
    """Indexes kept in the fixture: plain, with a diffusion re-ranker, of a folder, HNSW, IVF-PQ + refine
    from feature shards, and one edited (remove + add)."""
    infonce = expected["infonce"]
    xmr(root, "index", "runs/infonce", "--split", "test", "--cache-dir", "cache")
    infonce["stored_index"] = {"index": searches(root, "infonce", "runs/infonce/index", "shapes")}
    xmr(root, "index", "runs/infonce", "--split", "test", "--cache-dir", "cache", "--out", "runs/infonce/index_rr",
        "--rerank", "diffusion", "--rerank-param", "k=5", "--rerank-target", "both")
    infonce["stored_index"]["index_rr"] = searches(root, "infonce", "runs/infonce/index_rr", "shapes",
                                                   ["--rerank", "diffusion"])
    infonce["eval_rerank"] = evaluate(root, "infonce", "--rerank", "diffusion", "--rerank-param", "k=5")
    xmr(root, "index", "runs/infonce", "--images", "data/shapes/img", "--out", "runs/infonce/index_folder",
        "--cache-dir", "cache")
    infonce["stored_index"]["index_folder"] = searches(root, "infonce", "runs/infonce/index_folder", "shapes",
                                                        texts=False)
    xmr(root, "index", "runs/infonce", "--split", "test", "--cache-dir", "cache", "--out", "runs/infonce/index_hnsw",
        "--factory", "HNSW8", "--ef-search", "16")
    infonce["stored_index"]["index_hnsw"] = searches(root, "infonce", "runs/infonce/index_hnsw", "shapes")
    xmr(root, "encode", MANIFESTS["shapes"], *TOY, "--shards", "work/shards", "--partitions", "2",
        "--cache-dir", "cache")
    xmr(root, "index", "runs/infonce", "--shards", "work/shards", "--out", "runs/infonce/index_shards",
        "--factory", "IVF2,PQ4x4np", "--refine", "16")
    infonce["stored_index"]["index_shards"] = searches(root, "infonce", "runs/infonce/index_shards", "shapes")
    vsepp = expected["vsepp"]
    xmr(root, "index", "runs/vsepp", "--split", "test", "--cache-dir", "cache")
    xmr(root, "index", "remove", "runs/vsepp", "purple-circle/0", "orange-cross/1")
    xmr(root, "index", "add", "runs/vsepp", "data/shapes_b/manifest.jsonl", "--split", "val", "--cache-dir", "cache")
    vsepp["stored_index"] = {"index": searches(root, "vsepp", "runs/vsepp/index", "shapes")}


def pack(root: Path, dest: Path, keep_last: Sequence[str]) -> None:
    """Copy ``root``'s data and runs into ``dest`` with the root written as ``@ROOT@``.

    The feature cache stays behind (the encoders make it again), and so does the training state of
    every run not in ``keep_last``."""
    for sub in ("data", "runs"):
        shutil.rmtree(dest / sub, ignore_errors=True)
        shutil.copytree(root / sub, dest / sub, ignore=shutil.ignore_patterns(*SKIP_FILES))
    for name in keep_last:
        shutil.copy2(root / "runs" / name / "last.pt", dest / "runs" / name / "last.pt")
    relocate(dest, str(root), TOKEN)


def to_token(obj: object, root: str) -> object:
    """``obj`` (JSON) with ``root`` written as ``@ROOT@``."""
    return json.loads(json.dumps(obj).replace(root, TOKEN))


def build(root: Path, big: bool) -> dict[str, dict[str, object]]:
    """Train, index and record every run of the small set (or of the large one) under ``root``."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    os.chdir(root)
    make_data(root)
    expected: dict[str, dict[str, object]] = {}
    for name, (data, args) in (BIG_RUNS if big else CLI_RUNS).items():
        argv = ["train", MANIFESTS[data], *args, "--out", f"runs/{name}", "--cache-dir", "cache"]
        print(f"training {name}", file=sys.stderr)
        with small_generative() if name == "gxn" else contextlib.nullcontext():
            xmr(root, *argv)
        expected[name] = {"data": data, "train_argv": argv}
    if not big:
        expected["a3vse"] = make_a3vse(root)
        expected.update(make_text_runs(root))
    for name, rec in expected.items():
        data = str(rec["data"])
        print(f"recording {name}", file=sys.stderr)
        if data == "css":
            rec.update(record_composed(root, name))
        else:
            rec.update(record_retrieval(root, name, data))
        if name.startswith("gxn"):
            record_gxn(root, name, rec)
    if not big:
        make_indexes(root, expected)
    return {k: to_token(v, str(root)) for k, v in expected.items()}  # type: ignore[misc]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scratch", nargs="?", default="/tmp/xmr-old-runs", type=Path,
                        help="where the runs are made (emptied first)")
    parser.add_argument("--big", type=Path, metavar="DEST",
                        help="make the large set into DEST (not the repository's small one)")
    args = parser.parse_args()
    scratch = args.scratch.resolve()
    results = build(scratch, big=args.big is not None)
    dest = HERE if args.big is None else args.big.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    pack(scratch, dest, keep_last=KEEP_LAST if args.big is None else tuple(results))
    (dest / "expected.json").write_text(json.dumps(results, indent=0, sort_keys=True) + "\n")
    print(f"fixtures written to {dest}", file=sys.stderr)
