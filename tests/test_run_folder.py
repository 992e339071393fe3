"""One run-folder config type and one loader for every task (``xmr.runs.base``; any task's run:
``xmr.tasks.load_run_config``, the task registry being the one registry of run configs)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from xmr.errors import XmrError
from xmr.runs import (
    BaseRunConfig,
    FinetuneConfig,
    RunConfig,
    SparseDataConfig,
    load_run_config,
    read_task_name,
    save_run_config,
    saved_run_matches,
)
from xmr.runs.base import task_of_config_class
from xmr.tasks import TASKS
from xmr.tasks import load_run_config as load_any_run_config
from xmr.tasks.composed.config import ComposedRunConfig
from xmr.tasks.composed.train import ComposedTrainConfig
from xmr.training import TrainConfig


def _write(folder: Path, raw: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps(raw))
    return folder


def test_every_task_has_one_run_config_type() -> None:
    assert TASKS.names() == ["composed", "retrieval"]
    for name in TASKS.names():
        cls = TASKS.get(name).config_class
        assert issubclass(cls, BaseRunConfig) and dataclasses.is_dataclass(cls) and task_of_config_class(cls) == name


@pytest.mark.parametrize("cfg", [
    RunConfig(manifest="/d/m.jsonl", embed_dim=64, train=TrainConfig(loss="vse++", epochs=3),
              sparse=SparseDataConfig("0.1x1")),
    ComposedRunConfig(manifest="/d/m.jsonl", triplets="/d/t.jsonl", composer="concat",
                      train=ComposedTrainConfig(epochs=4)),
])
def test_one_loader_reads_back_what_any_task_saved(tmp_path: Path, cfg: BaseRunConfig) -> None:
    save_run_config(tmp_path, cfg)
    assert json.loads((tmp_path / "run.json").read_text())["task"] == cfg.task
    back = load_any_run_config(tmp_path)
    assert type(back) is type(cfg) and back == cfg
    assert load_run_config(tmp_path, type(cfg)) == cfg and read_task_name(tmp_path) == cfg.task
    assert saved_run_matches(tmp_path, cfg)
    assert not saved_run_matches(tmp_path, dataclasses.replace(cfg, manifest="/d/other.jsonl"))


def test_a_run_without_task_key_is_retrieval_and_still_matches(tmp_path: Path) -> None:
    cfg = RunConfig(manifest="/d/m.jsonl")
    save_run_config(tmp_path, cfg)
    raw = json.loads((tmp_path / "run.json").read_text())
    del raw["task"]  # as written before tasks were named
    _write(tmp_path, raw)
    assert load_any_run_config(tmp_path) == cfg and saved_run_matches(tmp_path, cfg)


def test_a_run_of_another_task_is_refused_saying_what_it_is(tmp_path: Path) -> None:
    composed = ComposedRunConfig(manifest="/d/m.jsonl", triplets="/d/t.jsonl")
    save_run_config(tmp_path, composed)
    with pytest.raises(XmrError, match="is a composed run, not a retrieval run"):
        load_run_config(tmp_path, RunConfig)
    assert not saved_run_matches(tmp_path, RunConfig(manifest="/d/m.jsonl"))
    save_run_config(tmp_path, RunConfig(manifest="/d/m.jsonl"))
    with pytest.raises(XmrError, match="is a retrieval run, not a composed-query run"):
        load_run_config(tmp_path, ComposedRunConfig)


@pytest.mark.parametrize("raw,needle", [
    ({"manifest": "/m", "task": "segmentation"}, "unknown task 'segmentation'; known: composed, retrieval"),
    ({"manifest": "/m", "task": 3}, "unknown task 3"),
    ({"manifest": 5}, "field 'manifest' is 5, expected a string"),
    ({"manifest": "/m", "embed_dims": 64}, "unknown field 'embed_dims'"),
    ({"manifest": "/m", "train": {"epochs": "ten"}}, r"\(train\): field 'epochs' is \"ten\", expected a whole number"),
    ({"manifest": "/m", "train": {"epoch": 3}}, r"\(train\): not a valid TrainConfig \(unknown field 'epoch'\)"),
    ({"manifest": "/m", "text_encoder": "bigru", "text_model": {"kind": "bigru", "length": "x"}},
     r"\(text_model\): field 'length'"),
    ({"task": "composed", "manifest": "/m"}, "not a valid ComposedRunConfig .*triplets"),
    ({"task": "composed", "manifest": "/m", "triplets": "/t", "train": {"lr": []}}, r"\(train\): field 'lr'"),
])
def test_damaged_run_files_are_one_line_naming_the_field(tmp_path: Path, raw: dict, needle: str) -> None:
    _write(tmp_path, raw)
    with pytest.raises(XmrError, match=needle) as e:
        load_any_run_config(tmp_path)
    assert "\n" not in str(e.value) and "run.json" in str(e.value)


def test_removed_empty_fields_are_tolerated_and_a_config_is_of_its_own_task(tmp_path: Path) -> None:
    _write(tmp_path, {"manifest": "/m", "an_old_unused_field": None})
    assert load_any_run_config(tmp_path) == load_run_config(tmp_path, RunConfig) == RunConfig(manifest="/m")
    with pytest.raises(XmrError, match="'retrieval' run config, not 'composed'"):
        RunConfig(manifest="/m", task="composed")


def test_paper_features_saved_flat_load_nested_and_match(tmp_path: Path) -> None:
    """A ``run.json`` written before the paper features were grouped holds them flat: it loads as the nested
    configs and matches a new config of the same settings, which is written nested; settings that use
    nothing are no config at all."""
    flat = {"manifest": "/m", "finetune_image_blocks": 2, "finetune_freeze_bn": False, "finetune_text_layers": 0,
            "finetune_text_length": 32, "sparse": "0.2x1", "sparse_by_group": False, "pseudo_texts": "global"}
    cfg = RunConfig(manifest="/m", finetune=FinetuneConfig(image_blocks=2, freeze_bn=False),
                    sparse=SparseDataConfig("0.2x1", by_group=False, pseudo_texts="global"))
    assert RunConfig.from_flat(flat) == cfg and cfg.train.components.sparse is not None  # pseudo pairs: A3VSE's terms
    _write(tmp_path, {**flat, "train": {"loss": "infonce", "pseudo_beta": 0.8}})  # TrainConfig's settings flat too
    assert load_run_config(tmp_path, RunConfig) == cfg and saved_run_matches(tmp_path, cfg)
    assert not saved_run_matches(tmp_path, dataclasses.replace(cfg, finetune=None))
    save_run_config(tmp_path, cfg)
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["finetune"] == {"image_blocks": 2, "freeze_bn": False, "text_layers": 0, "text_length": 32}
    assert saved["sparse"] == {"spec": "0.2x1", "by_group": False, "pseudo_texts": "global"}
    assert not {"finetune_image_blocks", "sparse_by_group", "pseudo_texts"} & set(saved)
    assert load_run_config(tmp_path, RunConfig) == cfg
    unused = {**flat, "finetune_image_blocks": 0, "sparse": None, "pseudo_texts": None}
    assert RunConfig.from_flat(unused) == RunConfig(manifest="/m")
    _write(tmp_path, unused)
    assert load_run_config(tmp_path, RunConfig) == RunConfig(manifest="/m")
    with pytest.raises(XmrError, match="fine-tunes neither encoder"):
        FinetuneConfig(image_blocks=0)
    assert SparseDataConfig("0.2X1").spec == "0.2x1"
    with pytest.raises(XmrError, match="sparse is a SparseDataConfig or None, not '0.2x1'"):
        RunConfig(manifest="/m", sparse="0.2x1")  # type: ignore[arg-type]  # the flat form: RunConfig.from_flat's
    with pytest.raises(XmrError, match="neither a spec nor pseudo_texts"):
        SparseDataConfig(by_group=False)
    _write(tmp_path, {"manifest": "/m", "finetune": {"image_blocks": "two"}})
    with pytest.raises(XmrError, match=r"\(finetune\): field 'image_blocks'"):
        load_run_config(tmp_path, RunConfig)
