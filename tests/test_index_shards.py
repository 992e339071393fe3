"""``xmr index RUN --shards DIR``: an index built shard by shard equals the one built from the manifest;
shards of other encoders or dimensions, and unfinished shard folders, are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xmr.cli import main
from xmr.data.manifest import read_manifest
from xmr.search import Searcher
from xmr.workflows.ray_encode import encode_in_process
from xmr.workflows.shards import read_shard, shard_name, write_shard

QUERIES = ("a red circle", "a blue square", "green", "a black cross")


@pytest.fixture
def shards(toy_run: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    run, cache = toy_run
    manifest = Path(json.loads((run / "run.json").read_text())["manifest"])
    encode_in_process(read_manifest(manifest), image_encoder="toy-image", text_encoder="toy-text",
                      shards=tmp_path / "shards", cache_dir=cache, partitions=3)
    return run, cache, manifest, tmp_path / "shards"


def ranked(run: Path, index: Path, target: str = "images") -> list[list[tuple[str | None, float]]]:
    s = Searcher.from_run(run, index)
    return [[(h.id if target == "images" else h.text, round(h.score, 5)) for h in s.search_text(q, 10, target=target)]
            for q in QUERIES]


def test_an_index_of_shards_equals_the_index_of_the_manifest(shards: tuple[Path, Path, Path, Path],
                                                            tmp_path: Path) -> None:
    run, cache, manifest, folder = shards
    assert main(["-q", "index", str(run), "--manifest", str(manifest), "--out", str(tmp_path / "m"),
                 "--cache-dir", str(cache)]) == 0
    assert main(["-q", "index", str(run), "--shards", str(folder), "--out", str(tmp_path / "s")]) == 0
    for target in ("images", "texts"):
        assert ranked(run, tmp_path / "s", target) == ranked(run, tmp_path / "m", target)
    built = json.loads((tmp_path / "s" / "index_run.json").read_text())
    assert built["n_images"] == 64 and built["shards"] == str(folder.resolve())


def test_a_compressed_refined_index_of_shards(shards: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    run, cache, manifest, folder = shards
    assert main(["-q", "index", str(run), "--shards", str(folder), "--out", str(tmp_path / "s"), "--factory",
                 "IVF4,PQ4x4np", "--refine", "64"]) == 0
    built = json.loads((tmp_path / "s" / "index_run.json").read_text())
    assert built["checks"]["text_to_image_recall@10"] >= 0.99  # every candidate re-scored; float16 ties aside
    assert (tmp_path / "s" / "images" / "vectors.f16").stat().st_size == 64 * 32 * 2
    assert not list((tmp_path / "s" / "images").glob(".vectors*"))  # the build's spill file is gone


def test_bad_shards_are_one_line(shards: tuple[Path, Path, Path, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    run, cache, manifest, folder = shards
    other = tmp_path / "other"
    other.mkdir()  # a plan of other encoders is enough: refused before any shard is read
    plan = json.loads((folder / "plan.json").read_text())
    (other / "plan.json").write_text(json.dumps({**plan, "text_encoder": "minilm-l6"}))
    fs = read_shard(folder / shard_name(1))
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "plan.json").write_text((folder / "plan.json").read_text())
    for p in (0, 2):
        (wrong / shard_name(p)).write_bytes((folder / shard_name(p)).read_bytes())
    write_shard(wrong, 1, type(fs)(fs.items, np.ones((len(fs.items), 16), np.float32), fs.texts, fs.text_feats,
                                   fs.relevance))
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "plan.json").write_text((folder / "plan.json").read_text())
    (unfinished / shard_name(0)).write_bytes((folder / shard_name(0)).read_bytes())
    cases = [(other, "holds features of 'toy-image' + 'minilm-l6', the run was trained on 'toy-image' + 'toy-text'"),
             (wrong, f"{wrong}/part-00001.npz holds 16-d image and"),
             (unfinished, "2 of 3 partitions are not encoded yet (first: part-00001.npz)")]
    capsys.readouterr()
    for shard_dir, message in cases:
        out = tmp_path / f"idx-{shard_dir.name}"
        assert main(["-q", "index", str(run), "--shards", str(shard_dir), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("xmr: error: ") and message in err and "\n" not in err, err
        assert not out.exists()
