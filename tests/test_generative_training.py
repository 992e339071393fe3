"""Algorithm 1 in the product: --generative i2t / t2i training, resume, xmr caption / xmr imagine."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from PIL import Image

from xmr.cli import main
from xmr.data.scene_captions import make_scene_captions
from xmr.errors import XmrError
from xmr.models import JointModel, ModelConfig
from xmr.models.captioner import CaptionerConfig, caption_ids, caption_vocabulary
from xmr.models.generative import load_generative
from xmr.models.image_gan import GanConfig
from xmr.objectives import GenerativeData, GenerativePaths, Setup
from xmr.objectives.generative import image_references
from xmr.runs.config import load_run, run_encoders
from xmr.training import EvalSet, PairSet, TrainConfig, train_joint_model
from xmr.workflows.imagine import imagined_pixels

from hostile import interrupt_at_epoch

TOY = ["--image-encoder", "toy-image", "--text-encoder", "toy-text"]
GXN = ["--embed-dim", "64", "--hidden-dim", "64", "--two-branch", "0.5", "--similarity", "order", "--loss", "vse0",
       "--margin", "0.05", "--lr", "2e-4"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scene_captions(tmp_path_factory.mktemp("scenes"), seed=0, sizes={"train": 24, "val": 8, "test": 8})


def _train(manifest: Path, out: Path, *extra: str) -> int:
    return main(["train", str(manifest), "--out", str(out), *TOY, *GXN, "--batch-size", "24", "--patience", "0",
                 "--cache-dir", str(out.parent / "cache"), *extra])


def test_a_generative_run_trains_both_paths_and_serves_captions_and_images(scenes: Path, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert _train(scenes, run, "--generative", "i2t,t2i", "--epochs", "2", "--caption-xe-epochs", "1") == 0
    history = json.loads((run / "history.json").read_text())
    assert "train_i2t_xe" in history[0] and "train_t2i_d" in history[0] and "train_i2t_rl" not in history[0]
    assert history[1]["train_i2t_gamma"] == pytest.approx(0.05) and "train_i2t_reward" in history[1]
    saved = json.loads((run / "run.json").read_text())
    generative = saved["train"]["components"]["generative"]  # the component's own config, nested
    assert generative["paths"] == ["i2t", "t2i"] and generative["gan_beta_s"] == 2.0
    model_json = json.loads((run / "best" / "model.json").read_text())["config"]
    assert model_json["captioner"]["in_dim"] == 32 and model_json["image_generator"]["cond_dim"] == 32
    assert (run / "best" / "caption_vocab.json").is_file()
    capsys.readouterr()
    image = next((scenes.parent / "images").glob("*.png"))
    assert main(["caption", str(run), "--image", str(image), "--beam", "2"]) == 0
    words = capsys.readouterr().out.split()
    vocab = json.loads((run / "best" / "caption_vocab.json").read_text())
    known = set(vocab["words"] if isinstance(vocab, dict) else vocab)
    assert words and set(words) <= known
    assert main(["imagine", str(run), "--text", "a small red circle in the centre", "--out",
                 str(tmp_path / "x.png"), "--n", "2"]) == 0
    for i in (1, 2):
        im = Image.open(tmp_path / f"x-{i}.png")
        assert im.size == (64, 64) and im.mode == "RGB"
    config, model = load_run(run)  # the arrays behind the PNGs: same seed, same draws; another seed, others
    enc = run_encoders(config, model.vocab)["text_encoder"]
    heads = load_generative(run / "best", model.config)  # kept beside the model, not in it
    assert heads is not None and not any(k.startswith(("captioner", "image_generator")) for k in model.state_dict())
    drawn = imagined_pixels(model, heads, enc, "a small red circle in the centre", n=2, seed=0)
    assert drawn.shape == (2, 64, 64, 3) and drawn.dtype == np.uint8
    assert np.array_equal(drawn[1], np.asarray(Image.open(tmp_path / "x-2.png")))
    assert not np.array_equal(drawn, imagined_pixels(model, heads, enc, "a small red circle in the centre", n=2,
                                                     seed=1))
    capsys.readouterr()
    assert main(["eval", str(run), "--captions", "--cache-dir", str(tmp_path / "cache")]) == 0
    report = capsys.readouterr().out
    assert "retrieved #1" in report and "generated, beam 3" in report
    quality = json.loads((run / "captions-test.json").read_text())
    assert set(quality["retrieved"]) == {"1", "2", "3", "4", "5"} and quality["n_images"] == 8
    # bad input: one line each, exit 2
    (tmp_path / "bad.png").write_text("not an image")
    assert main(["caption", str(run), "--image", str(tmp_path / "bad.png")]) == 2
    assert main(["imagine", str(run), "--text", "   ", "--out", str(tmp_path / "y.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("xmr: error: ") for line in err)
    assert "bad.png" in err[0] and "empty" in err[1]


def test_paths_a_run_was_not_trained_with_and_a_missing_two_branch_are_refused(
        scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "plain"
    assert _train(scenes, run, "--epochs", "1") == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--captions", "--cache-dir", str(tmp_path / "cache")]) == 0
    report = capsys.readouterr().out
    assert "retrieved #5" in report and "generated" not in report  # no decoder: retrieved captions only
    image = next((scenes.parent / "images").glob("*.png"))
    assert main(["caption", str(run), "--image", str(image)]) == 2
    assert main(["imagine", str(run), "--text", "a red circle", "--out", str(tmp_path / "z.png")]) == 2
    assert main(["train", str(scenes), "--out", str(tmp_path / "r2"), *TOY, "--generative", "t2i"]) == 2
    assert main(["train", str(scenes), "--out", str(tmp_path / "r3"), *TOY, *GXN, "--generative", "t2i",
                 "--caption-xe-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4
    assert "without the i2t path" in err[0] and "without the t2i path" in err[1]
    assert "--two-branch" in err[2] and "--caption-xe-only" in err[3]
    with pytest.raises(SystemExit):
        main(["train", str(scenes), "--out", str(tmp_path / "r4"), "--generative", "i2t,gan"])
    with pytest.raises(XmrError, match="generative paths"):
        TrainConfig.from_flat(generative=("i2t", "i2t"))


def synthetic_gxn(n: int = 16, seed: int = 0, groups_per: int = 1
                  ) -> tuple[PairSet, EvalSet, GenerativeData, ModelConfig, object]:
    """A tiny two-branch order-space problem with captions and 64x64 images for GXN's paths (``groups_per``
    images per group); tests/test_objectives.py trains it too."""
    rng = np.random.default_rng(seed)
    texts = [f"a {c} {s}" for c, s in zip(rng.choice(["red", "blue", "green"], n), rng.choice(["circle", "square"], n))]
    img, txt = rng.normal(size=(n, 6)).astype(np.float32), rng.normal(size=(n, 5)).astype(np.float32)
    pairs = PairSet(img, txt, np.stack([np.arange(n), np.arange(n)], 1), np.arange(n) // groups_per)
    val = EvalSet(img[:6], txt[:6], sp.csr_matrix(np.eye(6, dtype=bool)))
    vocab = caption_vocabulary(texts)
    data = GenerativeData(caption_ids(vocab, texts, 6), image_references([[i] for i in range(n)], texts),
                          rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8))
    mc = ModelConfig(image_encoder="toy-image", text_encoder="toy-text", image_dim=6, text_dim=5, embed_dim=8,
                     hidden_dim=16, two_branch=0.5, similarity="order",
                     captioner=CaptionerConfig(vocab_size=len(vocab), in_dim=4, word_dim=8, hidden_dim=8,
                                               max_len=6).to_dict(),
                     image_generator=GanConfig(cond_dim=4, c_dim=4, z_dim=4, ngf=4, ndf=4).to_dict())
    return pairs, val, data, mc, vocab


def test_a_resumed_generative_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    pairs, val, data, mc, vocab = synthetic_gxn()
    cfg = TrainConfig.from_flat(loss="vse0", margin=0.05, epochs=3, batch_size=8, lr=1e-3, patience=0,
                                generative=("i2t", "t2i"), caption_xe_epochs=1)
    kw = {"caption_vocab": vocab, "generative": data}
    full = train_joint_model(pairs, val, mc, cfg, out_dir=tmp_path / "a", **kw)
    with interrupt_at_epoch(3), pytest.raises(KeyboardInterrupt):
        train_joint_model(pairs, val, mc, cfg, out_dir=tmp_path / "b", **kw)
    resumed = train_joint_model(pairs, val, mc, cfg, out_dir=tmp_path / "b", **kw)
    for key in ("train_i2t_xe", "train_t2i_d", "train_t2i_g", "train_loss"):
        assert [r[key] for r in resumed.history] == pytest.approx([r[key] for r in full.history]), key
    assert resumed.model.model_id == full.model.model_id


def test_the_generator_loss_moves_the_grounded_text_head_and_the_d_step_does_not() -> None:
    pairs, _, data, mc, vocab = synthetic_gxn()
    torch.manual_seed(0)
    model = JointModel(mc).train()
    cfg = TrainConfig.from_flat(loss="vse0", generative=("t2i",))
    assert cfg.components.generative is not None
    setup = Setup(model, cfg, pairs.image_groups, steps_per_epoch=1, total_steps=cfg.epochs,
                  inputs={"generative": dataclasses.replace(data, caption_vocab=vocab)})
    paths = GenerativePaths(setup, cfg.components.generative)
    assert paths.disc is not None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    disc_before = [p.clone() for p in paths.disc.parameters()]
    # an optimiser over the abstract text head only: G's step must leave the grounded head's weights
    # alone then -- and D's step never touches the model
    abstract = torch.optim.SGD(model.text_head.parameters(), lr=0.1)
    idx = torch.arange(8)
    paths.update_t2i(model, abstract, torch.from_numpy(pairs.text_feats[:8]), idx, idx)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("text_head_grounded"))
    assert any(not torch.equal(a, b) for a, b in zip(disc_before, paths.disc.parameters()))  # D learned
    # with the grounded head in the optimiser, G's gradient reaches t_l's weights
    grounded = torch.optim.SGD(model.text_head_grounded.parameters(), lr=0.1)
    paths.update_t2i(model, grounded, torch.from_numpy(pairs.text_feats[:8]), idx, idx)
    assert any(not torch.equal(before[k], model.state_dict()[k]) for k in before
               if k.startswith("text_head_grounded"))
    assert all(p.grad is None for p in paths.disc.parameters())  # G's backward left no gradient in D


def test_gxn_trains_and_imagines_at_bf16_close_to_fp32(tmp_path: Path) -> None:
    """GXN's paths on the runtime: ``--device cpu --precision bf16`` trains (the decoder, generator and
    discriminator under autocast, weights fp32) and captions / imagines close to fp32.

    Tolerances (one seeded epoch, i2t with its self-critical term and t2i): the rank loss, the decoder's
    XE and RL terms, the discriminator's loss and the KL within 1% (observed <= 0.2%); the generator's
    adversarial term, which reads the discriminator's bf16 logits, within 10% (observed 6%). Generated
    pixels (same seed, same fp32 weights) within 2 levels of 255 (observed max 1, mean 0.03); the
    decoder's teacher-forced log-probabilities within 0.05 (the captions of a one-epoch decoder, whose
    words are near ties, may differ by a word: bf16 has 8 bits of mantissa)."""
    from xmr.runtime import RuntimeConfig
    from xmr.runtime.device import resolve
    from xmr.workflows.imagine import _grounded, captions_of

    pairs, val, data, mc, vocab = synthetic_gxn()
    cfg = TrainConfig.from_flat(loss="vse0", margin=0.05, epochs=1, batch_size=8, lr=1e-3, patience=0,
                                generative=("i2t", "t2i"), caption_xe_epochs=0)
    bf16 = resolve(RuntimeConfig(device="cpu", precision="bf16"))
    runs = {name: train_joint_model(pairs, val, mc, cfg, out_dir=tmp_path / name, caption_vocab=vocab,
                                    generative=data, runtime=runtime)
            for name, runtime in (("fp32", None), ("bf16", bf16))}
    one, low = runs["fp32"].history[0], runs["bf16"].history[0]
    assert "train_i2t_rl" in one and "train_t2i_g" in one
    for key in ("train_loss", "train_i2t_xe", "train_i2t_rl", "train_t2i_d", "train_t2i_kl"):
        assert low[key] == pytest.approx(one[key], rel=1e-2), key
    assert low["train_t2i_g"] == pytest.approx(one["train_t2i_g"], rel=0.1)
    assert low["train_i2t_xe"] != one["train_i2t_xe"]  # it did run at bf16

    model = runs["fp32"].model
    heads = load_generative(tmp_path / "fp32" / "best", model.config)
    assert heads is not None and heads.captioner is not None

    class Text:  # the generator reads t_l of these features (the toy problem's text space, 5-d)
        def encode_batch(self, texts: list[str]) -> np.ndarray:
            return np.random.default_rng(0).normal(size=(len(texts), 5)).astype(np.float32)

    exact = imagined_pixels(model, heads, Text(), "a red circle", n=4, seed=0)  # type: ignore[arg-type]
    drawn = imagined_pixels(model, heads, Text(), "a red circle", n=4, seed=0, runtime=bf16)  # type: ignore[arg-type]
    assert drawn.shape == exact.shape == (4, 64, 64, 3) and drawn.dtype == np.uint8
    assert np.abs(drawn.astype(int) - exact.astype(int)).max() <= 2
    feats = pairs.image_feats[:8]
    written = captions_of(model, heads, feats, beam=2, runtime=bf16)
    assert len(written) == 8 and all(c.split() and all(w in vocab for w in c.split()) for c in written)
    targets = data.caption_ids[:8]  # type: ignore[index]
    with torch.inference_mode():
        ref = heads.captioner(_grounded(model, feats, "image"), targets).log_softmax(-1)
        with bf16.autocast():
            got = heads.captioner(_grounded(model, feats, "image", bf16), targets).float().log_softmax(-1)
    assert (got - ref)[..., 1:].abs().max() <= 0.05  # id 0 (padding) is masked to -1e4: bf16 rounds that by 16
