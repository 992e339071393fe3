"""``--device`` / ``--precision`` on the commands that run a model (:mod:`xmr.runtime`): ``--device cpu`` gives
what no option gives, byte for byte; a device this machine lacks is one line, exit 2, before any work; bf16
features and metrics stay close to fp32's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xmr.bench.shapes import make_shapes_dataset
from xmr.cli import main

NO_CUDA = not torch.cuda.is_available()
ENCODERS = ["--image-encoder", "toy-image", "--text-encoder", "toy-text"]
TOY = [*ENCODERS, "--embed-dim", "32", "--epochs", "2", "--batch-size", "16", "--lr", "3e-3", "--patience", "0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(manifest, run folder, feature cache) of a toy run."""
    root = tmp_path_factory.mktemp("runtime-commands")
    manifest = make_shapes_dataset(root / "data", copies=2)
    assert main(["train", str(manifest), "--out", str(root / "run"), "--cache-dir", str(root / "cache"), *TOY]) == 0
    return manifest, root / "run", root / "cache"


def _cache_rows(cache: Path) -> dict[tuple[str, str], bytes]:
    """{(encoder folder, input key): its feature row's bytes} of every cache shard (shard names carry the
    writing process, so rows are compared, not files)."""
    rows = {}
    for shard in sorted(cache.rglob("*.npz")):
        with np.load(shard) as z:
            keys, feats = z["keys"], z["feats"]
        rows.update({(shard.parent.name, str(k)): f.tobytes() for k, f in zip(keys, feats, strict=True)})
    return rows


def test_encode_on_cpu_is_byte_identical(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    manifest = trained[0]
    assert main(["encode", str(manifest), *ENCODERS, "--cache-dir", str(tmp_path / "a")]) == 0
    assert main(["encode", str(manifest), *ENCODERS, "--cache-dir", str(tmp_path / "b"), "--device", "cpu",
                 "--precision", "fp32"]) == 0
    a, b = _cache_rows(tmp_path / "a"), _cache_rows(tmp_path / "b")
    assert a and a == b


def test_encode_bf16_features_are_close_to_fp32(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """bf16 autocast of the toy image net (two convs): its features' cosine to fp32's, measured here at
    >= 0.99999 per row over 64 images (bf16 keeps 8 bits of mantissa); asserted: every row >= 0.9999 (the
    issue's bar for a fast path). The text features
    (numpy feature hashing) do not run under torch and are equal."""
    from xmr.encoders import create_image_encoder
    from xmr.encoders.image_io import image_to_array
    from xmr.encoders.placement import place_encoder
    from xmr.runtime import RuntimeConfig
    from xmr.runtime.device import resolve

    manifest = trained[0]
    assert main(["encode", str(manifest), *ENCODERS, "--cache-dir", str(tmp_path / "fp32")]) == 0
    assert main(["encode", str(manifest), *ENCODERS, "--cache-dir", str(tmp_path / "bf16"),
                 "--precision", "bf16"]) == 0
    a, b = _cache_rows(tmp_path / "fp32"), _cache_rows(tmp_path / "bf16")
    # the image features made at bf16 are cached apart (<id>@bf16); the text features (numpy) are the same
    assert {f for f, _ in b} == {f + "@bf16" if f.startswith("toy-image") else f for f, _ in a}
    b = {(f.removesuffix("@bf16"), k): v for (f, k), v in b.items()}
    assert a.keys() == b.keys() and a
    texts = [k for k in a if k[0].startswith("toy-text")]
    assert texts and all(a[k] == b[k] for k in texts)
    images = sorted(manifest.parent.rglob("*.png"))[:16]
    x = [image_to_array(p, 32) for p in images]
    fp32 = create_image_encoder("toy-image").encode_batch(x)
    bf16 = place_encoder(create_image_encoder("toy-image"), resolve(RuntimeConfig(device="cpu", precision="bf16")))
    got = bf16.encode_batch(x)
    assert got.dtype == np.float32 and not np.array_equal(got, fp32)  # autocast did run
    cos = (got * fp32).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cos.min() >= 0.9999


def _metrics(run: Path, split: str = "test") -> dict[str, float]:
    return json.loads((run / f"eval-{split}-full.json").read_text())["metrics"]


def test_eval_on_cpu_is_identical_and_bf16_close(trained: tuple[Path, Path, Path]) -> None:
    """bf16 autocast of the heads (the features come from the cache, whose keys stay the encoder id).
    Measured on this 15-query test split: rsum 263.3 vs fp32's 256.7 (one text query moved into R@5: a step
    is 6.7), overlap S 0.643 vs 0.646. Asserted: rsum within two steps, overlap S within 0.02."""
    _, run, cache = trained
    assert main(["eval", str(run), "--cache-dir", str(cache)]) == 0
    default = _metrics(run)
    assert main(["eval", str(run), "--cache-dir", str(cache), "--device", "cpu"]) == 0
    assert _metrics(run) == default  # the JSON's metrics byte-identical (its command line differs)
    assert main(["eval", str(run), "--cache-dir", str(cache), "--precision", "bf16"]) == 0
    bf16 = _metrics(run)
    assert bf16.keys() == default.keys()
    assert abs(bf16["rsum"] - default["rsum"]) <= 13.4
    assert abs(bf16["overlap_S"] - default["overlap_S"]) <= 0.02


def test_index_and_search_on_cpu_are_identical(trained: tuple[Path, Path, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """An index built with ``--device cpu`` answers as the default one, byte for byte (search's JSON lines);
    a bf16 search answers too."""
    _, run, cache = trained
    assert main(["index", str(run), "--cache-dir", str(cache), "--out", str(tmp_path / "a")]) == 0
    assert main(["index", str(run), "--cache-dir", str(cache), "--out", str(tmp_path / "b"), "--device", "cpu"]) == 0
    capsys.readouterr()
    query = ["--text", "a red circle", "--json", "--target", "images"]
    assert main(["search", str(run), "--index", str(tmp_path / "a"), *query]) == 0
    default = capsys.readouterr().out
    assert main(["search", str(run), "--index", str(tmp_path / "b"), *query, "--device", "cpu"]) == 0
    assert capsys.readouterr().out == default and default
    assert main(["search", str(run), "--index", str(tmp_path / "a"), *query, "--precision", "bf16"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])


def test_the_service_loads_on_the_runtime_it_is_given(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from xmr.runtime import RuntimeConfig
    from xmr.serve import ServeConfig
    from xmr.serve.service import SearchService

    _, run, cache = trained
    assert main(["index", str(run), "--cache-dir", str(cache), "--out", str(tmp_path / "i")]) == 0
    plain = SearchService.serving(run, tmp_path / "i")
    cpu = SearchService.serving(run, tmp_path / "i", ServeConfig(runtime=RuntimeConfig(device="cpu")))
    bf16 = SearchService.serving(run, tmp_path / "i", ServeConfig(runtime=RuntimeConfig(precision="bf16")))
    feats = plain.searcher.text_features(["a red circle", "a blue square"])
    assert np.array_equal(cpu.searcher.embed(feats, "text"), plain.searcher.embed(feats, "text"))
    assert bf16.searcher.runtime.precision == "bf16"
    got, want = bf16.searcher.embed(feats, "text"), plain.searcher.embed(feats, "text")
    assert got.dtype == np.float32 and np.allclose(got, want, atol=0.05)


COMMANDS = {
    "encode": lambda t, out: ["encode", str(t[0]), *ENCODERS, "--cache-dir", str(out)],
    "eval": lambda t, out: ["eval", str(t[1]), "--cache-dir", str(out)],
    "index": lambda t, out: ["index", str(t[1]), "--cache-dir", str(out)],
    "index add": lambda t, out: ["index", "add", str(t[1]), str(t[0]), "--cache-dir", str(out)],
    "search": lambda t, out: ["search", str(t[1]), "--text", "a red circle"],
    "serve": lambda t, out: ["serve", str(t[1])],
    "caption": lambda t, out: ["caption", str(t[1]), "--image", str(next(t[0].parent.rglob("*.png")))],
    "imagine": lambda t, out: ["imagine", str(t[1]), "--text", "a red circle", "--out", str(out / "x.png")],
}


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_missing_cuda_is_one_line_before_any_work(command: str, trained: tuple[Path, Path, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    before = sorted(trained[1].rglob("*"))
    assert main([*COMMANDS[command](trained, tmp_path / "cache"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("xmr: error: --device cuda is not available"), err
    assert not (tmp_path / "cache").exists() and sorted(trained[1].rglob("*")) == before


def test_every_model_command_shows_the_runtime_defaults() -> None:
    from xmr.cli import build_parser
    from xmr.runtime import RuntimeConfig

    subs = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command in COMMANDS:
        parser = subs[command] if command in subs else subs["index"]._subparsers._group_actions[0].choices["add"]
        text = " ".join(parser.format_help().split())
        assert f"cuda:N or mps (default: {RuntimeConfig.device})" in text, command
        assert f"the weights stay fp32 (default: {RuntimeConfig.precision})" in text, command


def test_partitioned_encoding_refuses_bf16_in_one_line(trained: tuple[Path, Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["encode", str(trained[0]), *ENCODERS, "--cache-dir", str(tmp_path / "c"), "--shards",
                 str(tmp_path / "s"), "--precision", "bf16"]) == 2
    assert capsys.readouterr().err == "xmr: error: partitioned encoding runs at fp32 only, not at --precision bf16\n"
    assert not (tmp_path / "s").exists() and not (tmp_path / "c").exists()
