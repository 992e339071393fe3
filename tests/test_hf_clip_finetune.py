"""``hf-clip:PATH`` fine-tuned end to end: trunks and tails against transformers' own forward.

Tiny random CLIP and SigLIP checkpoints (2 layers per tower, hidden 32), written with
``save_pretrained`` into a temporary folder (no download). The references are transformers' own
``get_image_features`` / ``get_text_features`` on the same inputs, and central finite differences
in float64 for the gradients.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xmr.encoders import create_image_encoder, create_text_encoder
from xmr.encoders.finetune import ALL, EncoderTail, tail_depth
from xmr.errors import XmrError

from test_hf_clip import MAX_TOKENS, WORDS, make_clip

transformers = pytest.importorskip("transformers")

#: float32 rows (the trunk run without its float16 cast): the same operations (measured: identical, 0.0)
ATOL = 1e-5
#: through the float16 cache (measured: <= 8.7e-4 over both models, sides and cuts; |feature| <= 3.3)
ATOL_FP16 = 2e-3
TEXTS = ["a red circle", "blue", "an orange star drawn in outline", "a a a a a a a a a a a a a a a a a a a a"]
DEPTH = 2


def make_siglip(folder: Path, *, seed: int = 0) -> Path:
    """A tiny random SigLIP (attention-pooling head, last-token text pooling) with tokenizer and processor."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A [EOS]", special_tokens=[("[EOS]", 3)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                eos_token="[EOS]", model_max_length=MAX_TOKENS)
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=DEPTH, num_attention_heads=2)
    text = dict(common, vocab_size=len(WORDS), max_position_embeddings=MAX_TOKENS, pad_token_id=0, eos_token_id=3,
                projection_size=32)
    torch.manual_seed(seed)
    model = transformers.SiglipModel(transformers.SiglipConfig(
        text_config=text, vision_config=dict(common, image_size=32, patch_size=8))).eval()
    transformers.utils.logging.disable_progress_bar()
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    transformers.SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-ft")
    return {"clip": make_clip(root / "clip", seed=3), "siglip": make_siglip(root / "siglip", seed=4)}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(1)
    out = []
    for i, (h, w) in enumerate([(32, 32), (40, 56), (75, 33)]):
        out.append(root / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(out[-1])
    return out


def _reference(kind: str, folder: Path) -> torch.nn.Module:
    cls = transformers.CLIPModel if kind == "clip" else transformers.SiglipModel
    return cls.from_pretrained(folder, local_files_only=True).eval()


def _pooled(out: object) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # type: ignore[attr-defined]


def _float32_rows(trunk: object, inputs: list[object]) -> torch.Tensor:
    """The trunk's rows computed in float32 (its cache keeps float16): its encode_batch without the cast."""
    real = torch.Tensor.to

    def keep32(t: torch.Tensor, *args: object, **kw: object) -> torch.Tensor:
        if args and args[0] is torch.float16:
            return t
        return real(t, *args, **kw)  # type: ignore[arg-type]

    torch.Tensor.to = keep32  # type: ignore[method-assign,assignment]
    try:
        return torch.from_numpy(np.asarray(trunk.encode_batch(inputs), dtype=np.float32))  # type: ignore[attr-defined]
    finally:
        torch.Tensor.to = real  # type: ignore[method-assign]


def _side(kind: str, ckpts: dict[str, Path], side: str) -> object:
    make = create_image_encoder if side == "image" else create_text_encoder
    return make(f"hf-clip:{ckpts[kind]}")


def _inputs(enc: object, side: str, images: list[Path]) -> list[object]:
    return [enc.load(p) for p in images] if side == "image" else list(TEXTS)  # type: ignore[attr-defined]


def _reference_features(kind: str, ckpts: dict[str, Path], side: str, enc: object, inputs: list[object]) -> np.ndarray:
    model = _reference(kind, ckpts[kind])
    with torch.no_grad():
        if side == "image":
            return _pooled(model.get_image_features(pixel_values=torch.from_numpy(np.stack(inputs)))).numpy()
        tok = enc.checkpoint.tokenizer(TEXTS, padding="max_length", truncation=True,  # type: ignore[attr-defined]
                                       max_length=MAX_TOKENS, return_tensors="pt")
        return _pooled(model.get_text_features(input_ids=tok["input_ids"],
                                               attention_mask=tok["attention_mask"])).numpy()


def test_depth_is_read_from_the_config(ckpts: dict[str, Path]) -> None:
    for kind in ckpts:
        assert tail_depth(f"hf-clip:{ckpts[kind]}", "image") == tail_depth(f"hf-clip:{ckpts[kind]}", "text") == DEPTH
    assert tail_depth("toy-image", "image") is None


@pytest.mark.parametrize("kind", ["clip", "siglip"])
@pytest.mark.parametrize("side", ["image", "text"])
@pytest.mark.parametrize("n_tail", [1, DEPTH, ALL])
def test_tail_features_equal_transformers(kind: str, side: str, n_tail: object, ckpts: dict[str, Path],
                                          images: list[Path]) -> None:
    enc = _side(kind, ckpts, side)
    inputs = _inputs(enc, side, images)
    ref = _reference_features(kind, ckpts, side, enc, inputs)
    trunk = enc.trunk_encoder(n_tail)  # type: ignore[attr-defined]
    tail = trunk.make_tail().eval()
    assert isinstance(tail, EncoderTail) and tail.dim == ref.shape[1]
    with torch.no_grad():
        ours = tail.features(_float32_rows(trunk, inputs)).numpy()
        cached = tail.features(torch.from_numpy(trunk.encode_batch(inputs))).numpy()  # through float16 rows
    np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)
    np.testing.assert_allclose(cached, ref, atol=ATOL_FP16 if n_tail != ALL or side == "image" else ATOL, rtol=0)
    assert np.abs(ref[0] - ref[1]).max() > 1e-3  # different inputs, different vectors: the test can fail
    assert trunk.encoder_id.startswith(enc.encoder_id + "/trunk-")  # type: ignore[attr-defined]
    assert trunk.describe()["dim"] == trunk.dim


@pytest.mark.parametrize("kind", ["clip", "siglip"])
@pytest.mark.parametrize("side", ["image", "text"])
def test_tail_gradient_equals_central_differences(kind: str, side: str, ckpts: dict[str, Path],
                                                  images: list[Path]) -> None:
    """d s / d theta, s = sum(features * w) with w fixed, at a few parameters of every layer group, float64."""
    enc = _side(kind, ckpts, side)
    inputs = _inputs(enc, side, images)
    trunk = enc.trunk_encoder(ALL)  # type: ignore[attr-defined]
    tail = trunk.make_tail().double().eval()
    rows = torch.from_numpy(trunk.encode_batch(inputs)).double()
    w = torch.randn(len(inputs), tail.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def scalar() -> torch.Tensor:
        return (tail.features(rows) * w).sum()

    tail.zero_grad()
    scalar().backward()
    rng = np.random.default_rng(0)
    groups = tail.layer_groups()
    assert len(groups) == DEPTH + 2  # the embeddings, each layer, the pooling + projection
    checked = 0
    for group in groups:
        for p in group[:3]:
            if p.grad is None:
                continue
            flat, grad = p.data.view(-1), p.grad.view(-1)
            for i in rng.choice(flat.numel(), size=min(2, flat.numel()), replace=False):
                eps, keep = 1e-6, float(flat[i])
                with torch.no_grad():
                    flat[i] = keep + eps
                    up = float(scalar())
                    flat[i] = keep - eps
                    down = float(scalar())
                    flat[i] = keep
                fd = (up - down) / (2 * eps)
                assert abs(fd - float(grad[i])) <= 1e-6 + 1e-5 * abs(fd), (p.shape, fd, float(grad[i]))
                checked += 1
    assert checked >= 8


def test_gradient_checkpointing_gives_the_same_gradients(ckpts: dict[str, Path]) -> None:
    enc = _side("clip", ckpts, "text")
    trunk = enc.trunk_encoder(ALL)  # type: ignore[attr-defined]
    rows = torch.from_numpy(trunk.encode_batch(TEXTS))
    grads = []
    for on in (False, True):
        tail = trunk.make_tail().train()
        tail.set_checkpointing(on)
        tail.features(rows).pow(2).sum().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in tail.parameters() if p.grad is not None]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)


def test_bad_cuts_are_one_line_errors(ckpts: dict[str, Path]) -> None:
    enc = _side("clip", ckpts, "image")
    for bad, needle in ((3, "has 2 layers, so N must be 0..2 or 'all'"), (0, "use the frozen encoder itself"),
                        ("x", "must be a count or 'all'")):
        with pytest.raises(XmrError, match=needle) as e:
            enc.trunk_encoder(bad)  # type: ignore[attr-defined]
        assert "\n" not in str(e.value)


def test_the_checkpoint_temperature_starts_a_run_on_its_own_space(ckpts: dict[str, Path]) -> None:
    img, txt = _side("clip", ckpts, "image"), _side("clip", ckpts, "text")
    expected = float(torch.exp(-_reference("clip", ckpts["clip"]).logit_scale.detach()))
    assert img.joint_temperature(txt) == pytest.approx(expected)  # type: ignore[attr-defined]
    assert img.joint_temperature(txt.trunk_encoder(1)) == pytest.approx(expected)  # type: ignore[attr-defined]
    assert img.joint_temperature(img) is None  # type: ignore[attr-defined]
    assert img.joint_temperature(_side("siglip", ckpts, "text")) is None  # type: ignore[attr-defined]


def test_cli_fine_tunes_both_towers_and_serves_the_run(ckpts: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """Train the last image layer and both text layers with the heads (identity), then eval, index and search;
    the run's model file holds the tails (not the checkpoint), and a changed checkpoint is refused on load."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from xmr.bench.shapes import make_shapes_dataset
    from xmr.models import load_model
    from xmr.search import Searcher

    from hostile import cli_error, cli_ok

    ckpt = shutil.copytree(ckpts["clip"], tmp_path / "clip")  # changed at the end
    manifest = make_shapes_dataset(tmp_path / "data", copies=1)
    run, cache = tmp_path / "run", tmp_path / "cache"
    name = f"hf-clip:{ckpt}"
    cli_ok(["train", manifest, "--out", run, "--image-encoder", name, "--text-encoder", name, "--cache-dir", cache,
            "--head", "identity", "--embed-dim", "16", "--finetune-image-blocks", "1", "--finetune-text-layers", "2",
            "--finetune-lr", "1e-3", "--layer-lr-decay", "0.8", "--epochs", "2", "--batch-size", "16",
            "--patience", "0"], capsys)
    assert json.loads((run / "run.json").read_text())["train"]["layer_lr_decay"] == 0.8
    meta = json.loads((run / "best" / "model.json").read_text())["config"]
    model = load_model(run / "best")
    img, txt = create_image_encoder(name), create_text_encoder(name)
    assert meta["image_tail"]["trunk_id"] == f"{img.encoder_id}/trunk-1"
    assert meta["text_tail"]["trunk_id"] == f"{txt.encoder_id}/trunk-0"
    assert meta["init_temperature"] == pytest.approx(img.joint_temperature(txt))  # type: ignore[attr-defined]
    saved = load_file(run / "best" / "model.safetensors")
    tails = sum(p.numel() for t in (model.image_tail, model.text_tail) for p in t.parameters())
    assert sum(v.numel() for v in saved.values()) == tails + 1  # the tails and the temperature, nothing else
    assert not any(k.startswith("image_tail.stem") or "token_embedding" in k for k in saved)  # frozen parts: not saved
    # the tails trained: the served features moved away from the checkpoint's
    trunk = txt.trunk_encoder(2)  # type: ignore[attr-defined]
    rows = torch.from_numpy(trunk.encode_batch(["a red circle", "a blue square"]).astype(np.float32))
    with torch.no_grad():
        trained, fresh = model.text_tail.features(rows), trunk.make_tail().eval().features(rows)
    assert (trained - fresh).abs().max() > 1e-4
    out = cli_ok(["eval", run, "--cache-dir", cache], capsys)
    assert "R@1" in out or "r1" in out.lower()
    cli_ok(["index", run, "--cache-dir", cache], capsys)
    assert len([ln for ln in cli_ok(["search", run, "--text", "a red circle", "-k", "3"], capsys).splitlines()
                if ln.strip()]) >= 3
    s = Searcher.from_run(run)  # the served scores: cosine of the tails' features (identity heads)
    hits = s.search_text("a red circle", k=len(s.items))
    s_items = list(s.items)
    gallery_rows = img.trunk_encoder(1).encode_batch([img.load(it.image) for it in s.items])  # type: ignore[attr-defined]
    gallery = model.embed_numpy(gallery_rows, "image")
    query = model.embed_numpy(trunk.encode_batch(["a red circle"]), "text")[0]
    by_id = {it.id: float(v @ query) for it, v in zip(s.items, gallery)}
    np.testing.assert_allclose([h.score for h in hits], [by_id[h.id] for h in hits], atol=1e-5)
    del s
    from xmr.serve.service import SearchService

    svc = SearchService.serving(run)  # served like any run: text and image queries through the trunks and tails
    svc.warm_up()
    np.testing.assert_allclose(svc.searcher.embed(svc.searcher.text_features(["a red circle"]), "text")[0], query,
                               atol=1e-5)
    del svc
    # the whole model when asked: hf-clip:OUT, frozen, gives the run's tail features
    out = tmp_path / "merged"
    cli_ok(["export", run, "--hf-checkpoint", out], capsys)
    assert "exists; give --overwrite" in cli_error(["export", run, "--hf-checkpoint", out], capsys)
    texts = ["a red circle", "a blue square", "an orange star drawn in outline"]
    merged_img, merged_txt = create_image_encoder(f"hf-clip:{out}"), create_text_encoder(f"hf-clip:{out}")
    pixels = [img.load(it.image) for it in s_items]
    with torch.no_grad():
        want_img = model.image_tail.features(_float32_rows(img.trunk_encoder(1), pixels)).numpy()  # type: ignore[attr-defined]
        want_txt = model.text_tail.features(_float32_rows(trunk, texts)).numpy()
    np.testing.assert_allclose(merged_img.encode_batch(pixels), want_img, atol=ATOL, rtol=0)
    np.testing.assert_allclose(merged_txt.encode_batch(texts), want_txt, atol=ATOL, rtol=0)
    assert np.abs(merged_txt.encode_batch(texts) - txt.encode_batch(texts)).max() > 1e-4  # not the checkpoint's
    assert merged_img.checkpoint.temperature() == pytest.approx(float(torch.exp(-model.log_logit_scale.detach())))
    weights = load_file(ckpt / "model.safetensors")  # the checkpoint changes: the run's tails no longer fit it
    weights["visual_projection.weight"] = weights["visual_projection.weight"] * 1.01
    save_file(weights, ckpt / "model.safetensors", metadata={"format": "pt"})
    err = cli_error(["search", run, "--text", "a red circle"], capsys)
    assert "image tail was cut from" in err


def test_layer_wise_lr_decay_groups_the_tails_by_depth(ckpts: dict[str, Path]) -> None:
    from types import SimpleNamespace

    from xmr.training.trainer import tail_groups

    image = _side("clip", ckpts, "image").trunk_encoder(ALL).make_tail()  # type: ignore[attr-defined]
    text = _side("siglip", ckpts, "text").trunk_encoder(1).make_tail()  # type: ignore[attr-defined]
    model = SimpleNamespace(image_tail=image, text_tail=text)
    groups = tail_groups(model, 1e-3, 0.5)  # type: ignore[arg-type]
    lrs = [g["lr"] for g in groups]
    # image: embeddings, 2 layers, head (4 groups); text: 1 layer, head (2 groups); the last of each at the full rate
    assert lrs == pytest.approx([1e-3 / 8, 1e-3 / 4, 1e-3 / 2, 1e-3, 1e-3 / 2, 1e-3])
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for t in (image, text) for p in t.parameters())  # each once


def test_a_run_config_refuses_a_cut_past_the_tower(ckpts: dict[str, Path], tmp_path: Path) -> None:
    from xmr.runs import RunConfig

    name = f"hf-clip:{ckpts['siglip']}"
    common = dict(manifest=str(tmp_path / "m.jsonl"), image_encoder=name, text_encoder=name, head="identity",
                  embed_dim=32)
    RunConfig.from_flat(common, finetune_image_blocks=2, finetune_text_layers=1)  # within both towers
    for field in ("finetune_image_blocks", "finetune_text_layers"):
        with pytest.raises(XmrError, match=r"has 2 (blocks|layers), so N must be [01]\.\.2 or 'all'") as e:
            RunConfig.from_flat(common, **{field: 3})
        assert "\n" not in str(e.value)


def test_cli_trains_both_whole_towers(ckpts: dict[str, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`--finetune-image-blocks all --finetune-text-layers all` on an hf-clip checkpoint: the inputs cached, every
    layer of both towers (embeddings included) trained, saved and served."""
    import json

    from safetensors.torch import load_file

    from xmr.bench.shapes import make_shapes_dataset
    from xmr.models import load_model

    from hostile import cli_ok

    manifest = make_shapes_dataset(tmp_path / "data", copies=1)
    run, name = tmp_path / "run", f"hf-clip:{ckpts['clip']}"
    cli_ok(["train", manifest, "--out", run, "--image-encoder", name, "--text-encoder", name, "--cache-dir",
            tmp_path / "cache", "--head", "identity", "--embed-dim", "16", "--finetune-image-blocks", "all",
            "--finetune-text-layers", "all", "--epochs", "1", "--batch-size", "16", "--patience", "0"], capsys)
    meta = json.loads((run / "best" / "model.json").read_text())["config"]
    img = create_image_encoder(name)
    assert meta["image_tail"]["n_tail"] == "all" and meta["text_tail"]["n_tail"] == "all"
    assert meta["image_tail"]["trunk_id"] == f"{img.encoder_id}/trunk-input"
    saved = load_file(run / "best" / "model.safetensors")
    assert any("embeddings" in k for k in saved if k.startswith("image_tail."))  # the patch embedding trained
    assert any("embedding" in k for k in saved if k.startswith("text_tail."))
    model = load_model(run / "best")
    assert sum(v.numel() for v in saved.values()) == sum(p.numel() for p in model.parameters())
