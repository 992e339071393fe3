"""The runs ``xmr demo`` trains (xmr.workflows.demo.demo_configs), with and without --more-data."""

from __future__ import annotations

from pathlib import Path

from xmr.cli import build_parser
from xmr.runs.config import RunConfig, TrainSource
from xmr.training import TrainConfig
from xmr.workflows.demo import MORE_DATA_ROW, demo_configs


def test_the_default_demo_trains_infonce_and_vse_on_the_emoji_only(tmp_path: Path) -> None:
    m = tmp_path / "emoji.jsonl"
    configs = demo_configs(m, 30)
    assert list(configs) == ["infonce", "vse++"]
    assert configs["infonce"] == RunConfig(manifest=str(m), eval_texts_per_item=1, train=TrainConfig(epochs=30))
    assert all(not c.extra_train and c.train.components.cross_style is None for c in configs.values())
    assert all(c.image_encoder == "efficientnet-lite0-fne" for c in configs.values())  # xmr train's default


def test_more_data_adds_the_best_measured_pipeline(tmp_path: Path) -> None:
    m, icons, extra = tmp_path / "emoji.jsonl", tmp_path / "icons.jsonl", tmp_path / "extra.jsonl"
    configs = demo_configs(m, 30, [icons, extra])
    assert list(configs) == ["infonce", "vse++", MORE_DATA_ROW]
    best = configs[MORE_DATA_ROW]
    assert best.manifest == str(m)  # the emoji's own val / test stay the run's
    assert best.extra_train == (TrainSource(str(icons), ("train", "val", "test")),
                                TrainSource(str(extra), ("train", "val", "test")))
    assert best.train == TrainConfig.from_flat(loss="infonce", epochs=30, cross_style=3.0)
    assert best.image_encoder == "efficientnet-lite0"  # what its figures were measured with, not the default


def test_the_cli_flag() -> None:
    assert build_parser().parse_args(["demo", "--more-data"]).more_data is True
    assert build_parser().parse_args(["demo"]).more_data is False
