"""Fine-tuning the last image-encoder blocks on cached trunk activations: train, resume, serve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xmr.bench.shapes import make_shapes_dataset
from xmr.cli import main
from xmr.errors import XmrError
from xmr.models import load_model
from xmr.runs import FinetuneConfig, RunConfig
from xmr.search import Searcher

from hostile import interrupt_at_epoch

pytestmark = pytest.mark.slow  # the real EfficientNet-Lite0 weights

FT = ["--image-encoder", "efficientnet-lite0", "--text-encoder", "toy-text", "--finetune-image-blocks", "1",
      "--embed-dim", "32", "--batch-size", "8", "--lr", "3e-3", "--finetune-lr", "1e-3", "--patience", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ft")
    return make_shapes_dataset(root / "data", copies=1), root / "cache"


def _tail_state(model_dir: Path) -> dict[str, torch.Tensor]:
    model = load_model(model_dir)
    assert model.image_tail is not None
    return {k: v.clone() for k, v in model.image_tail.state_dict().items()}


def test_the_tail_trains_is_saved_and_serves_eval_index_search(data: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, cache = data
    run = tmp_path / "run"
    assert main(["-q", "train", str(manifest), "--out", str(run), "--cache-dir", str(cache), "--epochs", "3", *FT]) == 0
    saved = json.loads((run / "best" / "model.json").read_text())["config"]
    assert saved["image_tail"]["n_tail"] == 1 and saved["image_dim"] == 1280
    assert saved["image_tail"]["trunk_id"].endswith("/trunk-15")
    assert (cache / "features" / "efficientnet-lite0-imagenet@224_trunk-15").is_dir()
    # the tail's weights moved away from the pretrained ones (BatchNorm statistics did not: frozen)
    from xmr.encoders import create_image_encoder
    from xmr.encoders.trunk import TrunkEncoder

    fresh = TrunkEncoder(create_image_encoder("efficientnet-lite0"), 1).make_tail().state_dict()
    trained = _tail_state(run / "best")
    moved = [k for k in trained if not torch.equal(trained[k], fresh[k])]
    assert any(k.endswith("weight") for k in moved)
    assert not [k for k in moved if "running_" in k]
    # eval, index and search read the trunk through the run's encoders and apply the saved tail
    assert main(["-q", "eval", str(run), "--cache-dir", str(cache)]) == 0
    assert main(["-q", "index", str(run), "--cache-dir", str(cache)]) == 0
    s = Searcher.from_run(run)
    hits = s.search_text("a red circle", k=3)
    assert len(hits) == 3
    q = s.embed_texts(["a red circle"])
    gallery = s.model.embed_numpy(s.image_features([it.image for it in s.items]), "image")
    np.testing.assert_allclose(hits[0].score, float((gallery @ q[0]).max()), rtol=1e-4, atol=1e-5)


def test_a_resumed_finetuning_run_equals_an_uninterrupted_one(data: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, cache = data
    args = ["-q", "train", str(manifest), "--cache-dir", str(cache), "--epochs", "3", *FT]
    assert main([*args[:2], *args[2:], "--out", str(tmp_path / "a")]) == 0
    with interrupt_at_epoch(2):
        assert main([*args, "--out", str(tmp_path / "b")]) == 130  # interrupted: the work so far is kept
    assert len(json.loads((tmp_path / "b" / "history.json").read_text())) == 1
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    ha = json.loads((tmp_path / "a" / "history.json").read_text())
    hb = json.loads((tmp_path / "b" / "history.json").read_text())
    assert [r["train_loss"] for r in ha] == pytest.approx([r["train_loss"] for r in hb], rel=1e-5)
    a, b = _tail_state(tmp_path / "a" / "best"), _tail_state(tmp_path / "b" / "best")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_two_stage_keeps_the_tail_frozen_through_stage_one(data: tuple[Path, Path], tmp_path: Path) -> None:
    """Dual-path Stage I trains the heads on the frozen encoder; Stage II fine-tunes the tail too."""
    manifest, cache = data
    import xmr.training.trainer as trainer

    real, tails = trainer._epoch_and_bookkeeping, []

    def recording(run, *a, **k):
        out = real(run, *a, **k)
        tails.append({n: p.detach().clone() for n, p in run.model.image_tail.named_parameters()})
        return out

    trainer._epoch_and_bookkeeping = recording
    try:
        assert main(["-q", "train", str(manifest), "--out", str(tmp_path / "run"), "--cache-dir", str(cache), *FT,
                     "--epochs", "3", "--loss", "instance", "--then", "instance+rank", "--stage1-epochs", "2"]) == 0
    finally:
        trainer._epoch_and_bookkeeping = real
    from xmr.encoders import create_image_encoder
    from xmr.encoders.trunk import TrunkEncoder

    fresh = dict(TrunkEncoder(create_image_encoder("efficientnet-lite0"), 1).make_tail().named_parameters())
    assert len(tails) == 3
    for stage_one in tails[:2]:
        assert all(torch.equal(stage_one[n], fresh[n]) for n in fresh)
    assert any(not torch.equal(tails[2][n], fresh[n]) for n in fresh)


@pytest.mark.parametrize("args,needle", [
    (["--finetune-image-blocks", "17"], "it has 16 blocks, so N must be 0..16"),
    (["--finetune-image-blocks", "-1"], "--finetune-image-blocks: must be >= 0"),
    (["--finetune-image-blocks", "2", "--image-encoder", "toy-image"], "'toy-image' cannot be fine-tuned"),
    (["--train-bn-stats"], "--train-bn-stats applies to --finetune-image-blocks N only"),
])
def test_bad_finetuning_options_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str],
                                             needle: str) -> None:
    try:
        rc = main(["train", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "r"), *args])
    except SystemExit as e:  # refused by the option's own type, while the command line is parsed
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_a_finetuned_config_refuses_a_region_head() -> None:
    with pytest.raises(XmrError, match="takes no image_head"):
        RunConfig(manifest="/m", finetune=FinetuneConfig(image_blocks=1), image_head="region-mean")


def test_a_stale_or_damaged_trunk_cache_is_rebuilt_not_trained_on(data: tuple[Path, Path], tmp_path: Path) -> None:
    from PIL import Image

    from xmr.encoders import create_image_encoder, encode_images
    from xmr.encoders.trunk import TrunkEncoder

    manifest, _ = data
    images = sorted((manifest.parent).rglob("*.png"))[:3]
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for src, dst in zip(images, paths):
        dst.write_bytes(src.read_bytes())
    trunk = TrunkEncoder(create_image_encoder("efficientnet-lite0"), 1)
    cache = tmp_path / "cache"
    first = encode_images(trunk, paths, cache_dir=cache)
    assert first.n_encoded == 3 and first.feats.dtype == np.float16
    Image.new("RGB", (32, 32), (0, 200, 0)).save(paths[1])  # the file changed: its old activations are stale
    again = encode_images(trunk, paths, cache_dir=cache)
    assert (again.n_encoded, again.n_cached) == (1, 2)
    assert not np.array_equal(again.feats[1], first.feats[1]) and np.array_equal(again.feats[0], first.feats[0])
    folder = next(p for p in cache.iterdir() if p.name.endswith("trunk-15"))
    for shard in folder.glob("shard-*.npz"):
        np.savez(shard, keys=np.array(["x"]), feats=np.zeros((1, 7), np.float16))  # damaged: wrong width
    rebuilt = encode_images(trunk, paths, cache_dir=cache)
    assert rebuilt.n_encoded == 3
    np.testing.assert_array_equal(rebuilt.feats, again.feats)


def test_the_text_tail_trains_and_serves(data: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, cache = data
    run = tmp_path / "run"
    assert main(["-q", "train", str(manifest), "--out", str(run), "--cache-dir", str(cache), "--image-encoder",
                 "toy-image", "--text-encoder", "minilm-l6", "--finetune-text-layers", "1", "--finetune-text-length",
                 "16", "--embed-dim", "32", "--batch-size", "8", "--epochs", "2", "--finetune-lr", "1e-3",
                 "--patience", "0"]) == 0
    saved = json.loads((run / "best" / "model.json").read_text())["config"]
    assert saved["text_tail"]["n_tail"] == 1 and saved["text_tail"]["length"] == 16 and saved["text_dim"] == 384
    model = load_model(run / "best")
    from xmr.encoders import create_text_encoder

    fresh = create_text_encoder("minilm-l6").make_tail(1, length=16).state_dict()  # type: ignore[attr-defined]
    trained = model.text_tail.state_dict()
    assert any(not torch.equal(trained[k], fresh[k]) for k in fresh)
    assert main(["-q", "index", str(run), "--cache-dir", str(cache)]) == 0
    hits = Searcher.from_run(run).search_text("a red circle", k=2)
    assert len(hits) == 2


def test_bad_text_finetuning_options_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for args, needle in ((["--finetune-text-layers", "7"], "it has 6 layers, so N must be 1..6"),
                         (["--finetune-text-layers", "1", "--text-encoder", "toy-text"], "cannot be fine-tuned")):
        assert main(["train", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "r"), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
