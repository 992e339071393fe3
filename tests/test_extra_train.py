"""Training on several manifests at once: extra sources, their splits and weights (the run's val/test unchanged)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xmr.bench.shapes import make_shapes_dataset
from xmr.cli import main
from xmr.data import read_manifest
from xmr.errors import XmrError
from xmr.runs import RunConfig, load_run_config
from xmr.runs.config import TrainSource
from xmr.training.data import PairSet, weighted_epoch
from xmr.workflows.train import extra_training_items

from hostile import TRAIN


@pytest.mark.parametrize("spec,want", [
    ("icons.jsonl", ("icons.jsonl", ("train",), 1.0)),
    ("icons.jsonl@0.5", ("icons.jsonl", ("train",), 0.5)),
    ("icons.jsonl:train,val,test@2", ("icons.jsonl", ("train", "val", "test"), 2.0)),
    ("d/icons.jsonl:val", ("d/icons.jsonl", ("val",), 1.0)),
    ("d:x/icons.jsonl", ("d:x/icons.jsonl", ("train",), 1.0)),  # a colon inside the path is the path's
])
def test_source_specs(spec: str, want: tuple) -> None:
    src = TrainSource.parse(spec)
    assert (src.manifest, src.splits, src.weight) == (str(Path(want[0]).resolve()), *want[1:])


@pytest.mark.parametrize("spec,needle", [("a.jsonl@x", "weight after '@' must be a number"),
                                         ("a.jsonl@-1", "weight must be a number > 0"),
                                         ("a.jsonl@nan", "weight must be a number > 0"),
                                         ("a.jsonl:@1", "no split names after"),
                                         ("@2", "no manifest path")])
def test_bad_source_specs_are_one_line(spec: str, needle: str) -> None:
    with pytest.raises(XmrError, match=needle):
        TrainSource.parse(spec)


def test_weighted_epoch_draws_whole_weights_exactly_and_fractions_on_average() -> None:
    w = np.array([2.0, 1.0, 0.25, 3.0])
    draws = [weighted_epoch(w, np.random.default_rng([0, e])) for e in range(2000)]
    counts = np.stack([np.bincount(d, minlength=4) for d in draws])
    assert (counts[:, [0, 1, 3]] == [2, 1, 3]).all()  # whole weights: exactly that many times
    assert set(counts[:, 2]) == {0, 1} and abs(counts[:, 2].mean() - 0.25) < 0.03
    again = weighted_epoch(w, np.random.default_rng([0, 7]))
    np.testing.assert_array_equal(again, draws[7])  # seeded: resumable
    ps = PairSet(np.zeros((4, 2), np.float32), np.zeros((4, 2), np.float32), np.array([[i, i] for i in range(4)]),
                 np.arange(4), weights=w)
    assert ps.pairs_per_epoch == 6
    with pytest.raises(XmrError, match="weights"):
        PairSet(ps.image_feats, ps.text_feats, ps.pairs, ps.image_groups, weights=np.array([1.0, 0, 1, 1]))


def test_training_on_two_manifests_keeps_the_runs_own_val_and_test(tmp_path: Path) -> None:
    main_manifest = make_shapes_dataset(tmp_path / "a", copies=2, seed=0)
    extra = make_shapes_dataset(tmp_path / "b", copies=1, seed=1)
    run, cache = tmp_path / "run", tmp_path / "cache"
    assert main(["-q", "train", str(main_manifest), f"{extra}:train,val@0.5", "--out", str(run),
                 "--cache-dir", str(cache), *TRAIN]) == 0
    cfg = load_run_config(run, RunConfig)
    assert cfg.extra_train == (TrainSource(str(extra), ("train", "val"), 0.5),)
    saved = json.loads((run / "run.json").read_text())
    assert saved["extra_train"] == [{"manifest": str(extra), "splits": ["train", "val"], "weight": 0.5}]
    items, weights = extra_training_items(cfg)
    own = [it for it in read_manifest(main_manifest) if it.split == "train"]
    theirs = [it for it in read_manifest(extra) if it.split in ("train", "val")]
    assert len(items) == len(theirs) and all(it.id.startswith("+1/") and it.group.startswith("+1/") for it in items)
    assert set(weights.values()) == {0.5} and len(weights) == len(theirs)
    spec = json.loads((run / "train.json").read_text())
    assert spec["n_pairs"] == sum(len(it.texts) for it in own) + sum(len(it.texts) for it in theirs)
    # eval reads the run's own manifest: its test split, untouched by the extra source
    assert main(["-q", "eval", str(run), "--cache-dir", str(cache)]) == 0
    result = json.loads((run / "eval-test-full.json").read_text())
    n_test = len([it for it in read_manifest(main_manifest) if it.split == "test"])
    assert result["manifest"] == str(main_manifest) and result["metrics"]["n_images"] == n_test
    # the same command again resumes the finished run (the config with its sources matches)
    assert main(["-q", "train", str(main_manifest), f"{extra}:train,val@0.5", "--out", str(run),
                 "--cache-dir", str(cache), *TRAIN]) == 0
    # another source is another run
    assert main(["-q", "train", str(main_manifest), "--out", str(run), "--cache-dir", str(cache), *TRAIN]) == 2


def test_a_source_without_training_items_is_refused_by_name(tmp_path: Path) -> None:
    main_manifest = make_shapes_dataset(tmp_path / "a", copies=1)
    extra = make_shapes_dataset(tmp_path / "b", copies=1)
    cfg = RunConfig(manifest=str(main_manifest), extra_train=(TrainSource(str(extra), ("nope",)),))
    with pytest.raises(XmrError, match=f"{extra}: no annotated items in split.s. nope"):
        extra_training_items(cfg)
