"""One source of truth: ``xmr train`` builds the same config as the Python API; foreign options are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xmr.cli import build_parser, train_config_from_args
from xmr.errors import XmrError
from xmr.runs import RunConfig
from xmr.runs.composed import ComposedRunConfig
from xmr.text import TextEncoderConfig
from xmr.training import TrainConfig
from xmr.training.composed import ComposedTrainConfig


def _cli(*args: str):
    return train_config_from_args(build_parser().parse_args(["train", *args]))


def test_defaults_are_the_dataclasses(tmp_path: Path) -> None:
    m = str(tmp_path / "m.jsonl")
    assert _cli(m, "--out", "r") == RunConfig(manifest=os.path.abspath(m))
    (tmp_path / "triplets.jsonl").write_text("")
    assert _cli(m, "--out", "r", "--task", "composed") == ComposedRunConfig(
        manifest=os.path.abspath(m), triplets=str(tmp_path / "triplets.jsonl"))


def test_given_options_reach_their_fields(tmp_path: Path) -> None:
    m = str(tmp_path / "m.jsonl")
    cli = _cli(m, "--out", "r", "--loss", "vse++", "--epochs", "7", "--vse0-warmup", "1", "--embed-dim", "64",
               "--text-encoder", "textcnn", "--text-length", "12", "--no-position-shift", "--word-vectors", "random",
               "--seed", "3")
    api = RunConfig(manifest=os.path.abspath(m), text_encoder="textcnn", embed_dim=64,
                    train=TrainConfig(loss="vse++", epochs=7, vse0_warmup_epochs=1, seed=3),
                    text_model=TextEncoderConfig(kind="textcnn", length=12, position_shift=False, init="random",
                                                 seed=3))
    assert cli == api
    composed = _cli(m, "--out", "r", "--task", "composed", "--triplets", "t.jsonl", "--epochs", "4",
                    "--compose", "concat", "--in-joint")
    assert composed == ComposedRunConfig(manifest=os.path.abspath(m), triplets=os.path.abspath("t.jsonl"),
                                         composer="concat", in_joint=True, train=ComposedTrainConfig(epochs=4))


@pytest.mark.parametrize("args,named", [
    (["--task", "composed", "--loss", "vse++"], "--loss"),
    (["--task", "composed", "--margin", "0.1", "--similarity", "order"], "--margin, --similarity"),
    (["--task", "composed", "--sparse", "0.1x1"], "--sparse"),
    (["--compose", "relation"], "--compose"),
    (["--in-joint"], "--in-joint"),
    (["--text-length", "12"], "--text-length"),
    (["--no-position-shift"], "--no-position-shift"),
])
def test_options_that_do_not_apply_are_refused_by_name(tmp_path: Path, args: list[str], named: str) -> None:
    (tmp_path / "triplets.jsonl").write_text("")
    with pytest.raises(XmrError, match=named):
        _cli(str(tmp_path / "m.jsonl"), "--out", "r", *args)


def test_eval_and_search_refuse_what_the_runs_task_does_not_take(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    from xmr.cli import main

    run = tmp_path / "c"
    run.mkdir()
    (run / "run.json").write_text('{"task": "composed"}')
    for args, named in ((["eval", str(run), "--rerank", "diffusion"], "--rerank does not apply to `xmr eval` of a "
                                                                      "composed run"),
                        (["search", str(run), "--text", "x", "--image", "y.png", "--target", "texts"], "--target"),
                        (["eval", str(run), "--task", "retrieval"], "is a composed run, not retrieval")):
        assert main(args) == 2
        assert named in capsys.readouterr().err


def test_tasks_are_registered_and_dispatched_by_run_json(tmp_path: Path) -> None:
    from xmr.tasks import TASKS, task_of_run

    assert TASKS.names() == ["composed", "retrieval"]
    (tmp_path / "run.json").write_text('{"manifest": "m"}')
    assert task_of_run(tmp_path).name == "retrieval"
    (tmp_path / "run.json").write_text('{"task": "bogus"}')
    with pytest.raises(XmrError, match="unknown task 'bogus'"):
        task_of_run(tmp_path)


def test_losses_carry_their_capabilities() -> None:
    from xmr.losses import LOSSES
    from xmr.losses.registry import capabilities

    assert capabilities("infonce").inner_product_only and not capabilities("infonce").takes_margin
    assert all(capabilities(n).takes_margin and not capabilities(n).inner_product_only
               for n in LOSSES.names() if n != "infonce")
    assert TrainConfig(loss="infonce").loss_kwargs() == {} and TrainConfig(loss="vse0").loss_kwargs() == {"margin": 0.2}
    with pytest.raises(XmrError, match="infonce scores by the inner product"):
        RunConfig(manifest="m", similarity="order")


def test_an_encoder_of_the_other_modality_is_refused_before_any_folder(tmp_path: Path) -> None:
    with pytest.raises(XmrError, match="'toy-image' encodes images, not texts"):
        _cli(str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "r"), "--image-encoder", "toy-image",
             "--text-encoder", "toy-image")
    with pytest.raises(XmrError, match="'minilm-l6' encodes texts, not images"):
        RunConfig(manifest="m", image_encoder="minilm-l6")
    assert not (tmp_path / "r").exists()


def test_head_settings_have_one_source() -> None:
    import dataclasses

    from xmr.models import ModelConfig
    from xmr.runs.config import HEAD_FIELDS, head_settings

    model_defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    run_defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    assert all(run_defaults[n] == model_defaults[n] for n in HEAD_FIELDS)
    cfg = RunConfig(manifest="m", embed_dim=64, head="linear", two_branch=0.5)
    settings = head_settings(cfg)
    assert settings["embed_dim"] == 64 and settings["head"] == "linear" and settings["two_branch"] == 0.5
    assert set(settings) <= set(model_defaults)


def test_the_new_training_options_build_the_same_config_as_the_api(tmp_path: Path) -> None:
    from xmr.encoders.augment import AugmentConfig
    from xmr.runs.config import TrainSource

    m = str(tmp_path / "m.jsonl")
    cli = _cli(m, f"{tmp_path / 'icons.jsonl'}:train,val@0.5", "--out", "r", "--augment-views", "2", "--augment",
               "crop,grey", "--finetune-image-blocks", "3", "--finetune-lr", "5e-5", "--ema", "0.99",
               "--finetune-text-layers", "1", "--finetune-text-length", "16", "--cross-style", "0.5")
    api = RunConfig(manifest=os.path.abspath(m),
                    extra_train=(TrainSource(str(tmp_path / "icons.jsonl"), ("train", "val"), 0.5),),
                    augment=AugmentConfig(views=2, kinds=("crop", "grey")), finetune_image_blocks=3,
                    finetune_text_layers=1, finetune_text_length=16,
                    train=TrainConfig(finetune_lr=5e-5, ema_decay=0.99, cross_style=0.5))
    assert cli == api


def test_the_generative_options_build_the_same_config_as_the_api(tmp_path: Path) -> None:
    m = str(tmp_path / "m.jsonl")
    cli = _cli(m, "--out", "r", "--two-branch", "0.5", "--similarity", "order", "--loss", "vse0",
               "--generative", "i2t,t2i", "--caption-xe-only", "--caption-xe-epochs", "2")
    api = RunConfig(manifest=os.path.abspath(m), two_branch=0.5, similarity="order",
                    train=TrainConfig(loss="vse0", generative=("i2t", "t2i"), caption_rl=False, caption_xe_epochs=2))
    assert cli == api
    assert _cli(m, "--out", "r", "--two-branch", "0.5", "--generative", "t2i").train.generative == ("t2i",)


def test_the_caption_schedules_follow_the_config() -> None:
    cfg = TrainConfig(epochs=6, caption_xe_epochs=2, scheduled_sampling=0.25, scheduled_sampling_step=0.1)
    assert [cfg.caption_gamma(e) for e in range(6)] == pytest.approx([0, 0, 0.05, 0.35, 0.65, 0.95])
    assert [cfg.sampling_prob(e) for e in range(4)] == pytest.approx([0, 0.1, 0.2, 0.25])
    assert TrainConfig(caption_rl=False).caption_gamma(10) == 0.0


def _option_help(help_text: str, option: str) -> str:
    """The help paragraph of ``option`` in argparse's output (its lines up to the next option)."""
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(option + " "))
    para = [lines[start]]
    for line in lines[start + 1:]:
        if line.strip().startswith("-"):
            break
        para.append(line)
    return " ".join(" ".join(para).split())


def test_train_help_shows_each_default_from_the_dataclasses() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "cmd").choices["train"]  # type: ignore[attr-defined]
    text = sub.format_help()
    assert f"(default: {TrainConfig().epochs} (composed: {ComposedTrainConfig().epochs}))" in \
        _option_help(text, "--epochs")
    assert f"(default: {TrainConfig().lr})" in _option_help(text, "--lr")
    assert f"(default: {TrainConfig().batch_size} (composed: {ComposedTrainConfig().batch_size}))" in \
        _option_help(text, "--batch-size")
    assert f"(default: {RunConfig.image_encoder})" in _option_help(text, "--image-encoder")
    assert f"(default: {TrainConfig().margin})" in _option_help(text, "--margin")
    assert "composed: tirg" in _option_help(text, "--compose")  # an option of the other task only
    assert _option_help(text, "--augment").count("(default") == 1  # a hand-written default is not doubled


def test_epoch_eta_is_the_mean_epoch_time_times_the_epochs_left() -> None:
    from xmr.utils.progress import epoch_eta

    assert epoch_eta([10.0, 14.0], 32) == "12.0 s/epoch, at most 6.0 min left"
    assert epoch_eta([3.0], 4) == "3.0 s/epoch, at most 9 s left"
    assert epoch_eta([3.0, 3.0], 2) == "3.0 s/epoch, the last epoch"
    assert epoch_eta([], 5) == ""
