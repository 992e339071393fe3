"""``open-clip:SPEC`` encoders: open_clip models from local files, strictly offline.

Every model here is a tiny random open_clip ``CLIP`` made in the test (a 2-layer ViT on 32 px, a
2-layer text transformer on 16 tokens), saved as open_clip saves one; the references are that
in-memory model's own ``encode_image`` / ``encode_text`` and open_clip's tokenizer. The pixels are
checked against hand-worked sizes and crop offsets of open_clip's eval transform (and against the
transform itself where torchvision is installed). Sockets are refused in every test.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from xmr.encoders import ENCODERS, canonical_encoder_name, create_image_encoder, create_text_encoder, encode_texts
from xmr.encoders.openclip import OpenClipImageEncoder, OpenClipTextEncoder
from xmr.encoders.openclip_import import import_open_clip
from xmr.encoders.openclip_pixels import PixelConfig, to_pixels
from xmr.errors import XmrError

from hostile import cli_error, cli_ok, one_error_line, run_process

if importlib.util.find_spec("open_clip") is None:
    pytest.skip("open_clip_torch is not installed", allow_module_level=True)
TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
PREPROCESS = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bilinear"}
SIZES = [(32, 32), (40, 56), (75, 33)]  # (h, w)
TEXTS = ["a red circle", "blue", "an orange star drawn in outline " * 6]  # the last one is cut at 16 tokens


@pytest.fixture(scope="module")
def oc() -> Any:
    return import_open_clip()


@pytest.fixture(autouse=True)
def offline(no_network: None) -> None:
    """Every test here runs with connections refused (conftest's ``no_network``)."""


def make_open_clip(oc: Any, folder: Path, *, seed: int = 0, preprocess: dict[str, Any] | None = None) -> Any:
    """A tiny random open_clip CLIP saved as open_clip's ``local-dir:`` folders hold one; returns the model."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = oc.CLIP(**TINY).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / (0.05 + 0.01 * seed)))  # not open_clip's (nor xmr's) initial 0.07
    folder.mkdir(parents=True)
    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    cfg = {"model_cfg": TINY, "preprocess_cfg": PREPROCESS if preprocess is None else preprocess}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    return model


@pytest.fixture(scope="module")
def models(oc: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("oc")
    return {"a": root / "a", "model_a": make_open_clip(oc, root / "a", seed=0),
            "b": root / "b", "model_b": make_open_clip(oc, root / "b", seed=1)}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    out = []
    for i, (h, w) in enumerate(SIZES):
        out.append(root / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(out[-1])
    return out


def _normalised(image: Image.Image, mean: Any, std: Any) -> np.ndarray:
    x = np.asarray(image, dtype=np.float32) / 255
    return ((x - np.float32(mean)) / np.float32(std)).transpose(2, 0, 1).astype(np.float32)


def _by_hand(path: Path, cfg: dict[str, Any]) -> np.ndarray:
    """open_clip's eval transform worked out by hand for the sizes in SIZES (torchvision's Resize /
    CenterCrop, open_clip's ResizeKeepRatio / CenterCropOrPad): the resized size, then the crop box."""
    img = Image.open(path).convert("RGB")
    key = (cfg.get("resize_mode", "shortest"), tuple(cfg["size"]), img.size)
    resample = Image.Resampling.BILINEAR if cfg.get("interpolation") == "bilinear" else Image.Resampling.BICUBIC
    plans = {  # (w, h) in -> (resized (w, h), crop box), from torchvision's formulas
        ("shortest", (32, 32), (32, 32)): (None, None),
        ("shortest", (32, 32), (56, 40)): ((44, 32), (6, 0, 38, 32)),  # 56 * 32 / 40 = 44.8 -> 44; (44 - 32) / 2
        ("shortest", (32, 32), (33, 75)): ((32, 72), (0, 20, 32, 52)),  # 75 * 32 / 33 = 72.7 -> 72; (72 - 32) / 2
        ("shortest", (24, 32), (56, 40)): ((34, 24), (1, 0, 33, 24)),  # ratio min(40/24, 56/32): 56 / 1.667 -> 34
        ("squash", (24, 32), (33, 75)): ((32, 24), None),
    }
    if key[0] == "longest":  # (33, 75) -> ratio max(75/32, 33/32) = 2.34: 14 x 32, padded 9 + 9 to 32 x 32
        assert key == ("longest", (32, 32), (33, 75))
        fill = cfg["fill_color"]
        out = ImageOps.expand(img.resize((14, 32), resample), border=(9, 0, 9, 0), fill=(fill,) * 3)
        return _normalised(out, cfg["mean"], cfg["std"])
    size, box = plans[key]
    if key[0] == "shortest" and key[1][0] != key[1][1]:
        resample = Image.Resampling.BICUBIC  # open_clip's ResizeKeepRatio here: always bicubic
    out = img.resize(size, resample) if size is not None else img
    return _normalised(out.crop(box) if box is not None else out, cfg["mean"], cfg["std"])


PIXEL_CASES = [
    ({"size": (32, 32), **PREPROCESS}, [0, 1, 2]),
    ({"size": (24, 32), "mean": 0.5, "std": 0.5, "interpolation": "bilinear"}, [1]),  # resized bicubic all the same
    ({"size": (32, 32), "mean": (0.1, 0.2, 0.3), "std": (0.3, 0.2, 0.1), "interpolation": "bilinear",
      "resize_mode": "longest", "fill_color": 128}, [2]),
    ({"size": (24, 32), "mean": 0.5, "std": 0.25, "interpolation": "bicubic", "resize_mode": "squash"}, [2]),
]


@pytest.mark.parametrize("cfg,which", PIXEL_CASES)
def test_pixels_follow_open_clips_transform(cfg: dict[str, Any], which: list[int], images: list[Path],
                                            oc: Any) -> None:
    pixel_cfg = PixelConfig.from_open_clip(cfg, "test")
    for i in which:
        ours = to_pixels(Image.open(images[i]).convert("RGB"), pixel_cfg)
        assert ours.dtype == np.float32 and ours.shape == (3, *cfg["size"])
        np.testing.assert_allclose(ours, _by_hand(images[i], cfg), atol=1e-6, rtol=0)
        if importlib.util.find_spec("torchvision") is not None:  # open_clip's own transform, where it can run
            full = {"resize_mode": "shortest", "fill_color": 0, **cfg}
            transform = oc.transform.image_transform_v2(oc.transform.PreprocessCfg(**full), is_train=False)
            theirs = transform(Image.open(images[i]))
            np.testing.assert_array_equal(ours, theirs.numpy())


def test_registry_lists_the_family_and_builds_each_side(models: dict[str, Any]) -> None:
    a = models["a"]
    img, txt = create_image_encoder(f"open-clip:{a}"), create_text_encoder(f"open-clip:{a}")
    assert "open-clip:SPEC" in ENCODERS.names()
    assert isinstance(img, OpenClipImageEncoder) and isinstance(txt, OpenClipTextEncoder)
    assert img.checkpoint is txt.checkpoint and img.dim == txt.dim == TINY["embed_dim"]


def test_features_equal_open_clips_encode_image_and_encode_text(models: dict[str, Any], images: list[Path],
                                                                oc: Any) -> None:
    a, model = models["a"], models["model_a"]
    img, txt = create_image_encoder(f"open-clip:{a}"), create_text_encoder(f"open-clip:{a}")
    ours = img.encode_batch([img.load(p) for p in images])
    cfg = {"size": (32, 32), **PREPROCESS}
    with torch.no_grad():
        ref = model.encode_image(torch.from_numpy(np.stack([_by_hand(p, cfg) for p in images]))).numpy()
        ref_text = model.encode_text(oc.tokenize(TEXTS, context_length=TINY["text_cfg"]["context_length"])).numpy()
    assert ours.dtype == np.float32 and ours.shape == (len(images), TINY["embed_dim"])
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
    got = txt.encode_batch(TEXTS)
    np.testing.assert_allclose(got, ref_text, atol=1e-5, rtol=0)
    alone = np.concatenate([txt.encode_batch([t]) for t in TEXTS])  # a text's vector never depends on its batch
    np.testing.assert_allclose(alone, got, atol=1e-5, rtol=0)
    assert np.abs(ours[0] - ours[1]).max() > 1e-3 and np.abs(got[0] - got[1]).max() > 1e-3
    assert img.joint_temperature(txt) == pytest.approx(math.exp(-float(model.logit_scale.detach())))
    assert txt.joint_temperature(img) == img.joint_temperature(txt)
    assert img.joint_temperature(create_text_encoder("toy-text")) is None
    assert img.joint_temperature(create_image_encoder(f"open-clip:{a}")) is None  # the same side twice
    assert img.joint_space == txt.joint_space and img.joint_space.startswith("open-clip:")
    assert create_text_encoder(f"open-clip:{models['b']}").joint_space != img.joint_space


def test_architecture_and_weights_file(models: dict[str, Any], images: list[Path], oc: Any, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``ARCH:FILE`` as ``open_clip.create_model(ARCH, pretrained=FILE)``: open_clip's default preprocessing."""
    (tmp_path / "xmr-tiny-test.json").write_text(json.dumps(TINY))
    oc.add_model_config(tmp_path / "xmr-tiny-test.json")  # an architecture open_clip knows in this process
    weights = shutil.copy(models["a"] / "open_clip_model.safetensors", tmp_path / "w.safetensors")
    monkeypatch.chdir(tmp_path)
    name = "open-clip:xmr-tiny-test:w.safetensors"
    assert canonical_encoder_name(name) == f"open-clip:xmr-tiny-test:{weights}"
    img, txt = create_image_encoder(name), create_text_encoder(name)
    cfg = {"size": (32, 32), "mean": oc.OPENAI_DATASET_MEAN, "std": oc.OPENAI_DATASET_STD}
    model = models["model_a"]
    with torch.no_grad():
        ref = model.encode_image(torch.from_numpy(np.stack([_by_hand(p, cfg) for p in images]))).numpy()
        ref_text = model.encode_text(oc.tokenize(TEXTS, context_length=16)).numpy()
    np.testing.assert_allclose(img.encode_batch([img.load(p) for p in images]), ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(txt.encode_batch(TEXTS), ref_text, atol=1e-5, rtol=0)
    assert img.encoder_id != create_image_encoder(f"open-clip:{models['a']}").encoder_id  # other preprocessing


def test_encoder_ids_follow_the_content(models: dict[str, Any], tmp_path: Path) -> None:
    a, b = models["a"], models["b"]
    ids_a = {(create_image_encoder(f"open-clip:{a}").encoder_id, create_text_encoder(f"open-clip:{a}").encoder_id)
             for _ in range(2)}
    assert len(ids_a) == 1
    (img_a, txt_a), = ids_a
    assert img_a.startswith("open-clip-image-") and txt_a.startswith("open-clip-text-")
    assert create_image_encoder(f"open-clip:{b}").encoder_id != img_a
    moved = shutil.copytree(a, tmp_path / "moved")
    assert create_image_encoder(f"open-clip:local-dir:{moved}").encoder_id == img_a  # open_clip's own spelling too
    cfg = json.loads((moved / "open_clip_config.json").read_text())
    cfg["preprocess_cfg"]["mean"] = [0.5, 0.5, 0.5]
    (moved / "open_clip_config.json").write_text(json.dumps(cfg))
    assert create_image_encoder(f"open-clip:{moved}").encoder_id != img_a
    res_a = encode_texts(create_text_encoder(f"open-clip:{a}"), ["a red circle"], cache_dir=tmp_path / "c")
    res_b = encode_texts(create_text_encoder(f"open-clip:{b}"), ["a red circle"], cache_dir=tmp_path / "c")
    assert res_b.n_encoded == 1 and not np.allclose(res_a.feats, res_b.feats)


def test_a_model_id_from_the_hugging_face_cache(models: dict[str, Any], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from test_hub_cache import cache_model

    snapshot = cache_model(tmp_path / "hub", "org/tiny-oc", models["a"], "e" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    enc = create_text_encoder("open-clip:org/tiny-oc")
    assert enc.checkpoint.source.folder == snapshot
    assert enc.encoder_id == create_text_encoder(f"open-clip:{models['a']}").encoder_id
    assert canonical_encoder_name("open-clip:org/tiny-oc") == f"open-clip:org/tiny-oc@{'e' * 40}"


@pytest.mark.parametrize("case,needle", [
    ("hub", r"open-clip never downloads: give the local folder of hf-hub:laion/x, or its id \(laion/x\) once it is"),
    ("tag", r"'openai' is one of open_clip's pretrained tags for ViT-B-32, which xmr never downloads"),
    ("no-file", r"no weights file .*nope.pt for ViT-B-32"),
    ("no-arch", r"no open_clip architecture 'NoSuchArch' \(\d+ known, e.g. ViT-B-32"),
    ("missing", r"open-clip: no folder .*/missing \(and it is not ARCH:FILE\)"),
    ("id", r"open-clip org/nope: no such local folder, and the Hugging Face cache"),
    ("no-config", r"is not an open_clip model folder \(no open_clip_config.json\)"),
    ("bad-config", r"not a readable open_clip config"),
    ("no-weights", r"holds no weights \(\*.safetensors, \*.bin, \*.pth\); open_clip would fill the model with random"),
    ("file", r"is a file; a weights file needs its architecture: open-clip:ARCH:FILE"),
    ("bad-weights", r"cannot load the open-clip model .*target"),
])
def test_bad_names_are_one_line_errors(case: str, needle: str, models: dict[str, Any], tmp_path: Path,
                                       capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from xmr.bench.shapes import make_shapes_dataset

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    target = tmp_path / "target"
    spec = {"hub": "hf-hub:laion/x", "tag": "ViT-B-32:openai", "no-file": f"ViT-B-32:{tmp_path / 'nope.pt'}",
            "no-arch": f"NoSuchArch:{models['a'] / 'open_clip_model.safetensors'}", "missing": f"{tmp_path}/missing",
            "id": "org/nope", "file": str(models["a"] / "open_clip_model.safetensors")}.get(case, str(target))
    if case in ("no-config", "bad-config", "no-weights", "bad-weights"):
        shutil.copytree(models["a"], target)
        if case == "no-config":
            (target / "open_clip_config.json").unlink()
        elif case == "bad-config":
            (target / "open_clip_config.json").write_text("{not json")
        elif case == "no-weights":
            (target / "open_clip_model.safetensors").unlink()
        else:
            (target / "open_clip_model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(XmrError, match=needle) as e:
        enc = create_text_encoder(f"open-clip:{spec}")  # the cheap checks come here, the rest on first use
        enc.encode_batch(["a red circle"])
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)
    manifest = make_shapes_dataset(tmp_path / "data", copies=1)
    err = cli_error(["encode", manifest, "--image-encoder", "toy-image", "--text-encoder", f"open-clip:{spec}",
                     "--cache-dir", tmp_path / "c"], capsys)
    assert err.startswith("xmr: error: ") and ("open-clip" in err or "open_clip" in err)


def test_cli_zero_shot_train_and_search(models: dict[str, Any], tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    """Identity heads on the model's own space; the run starts at the model's temperature."""
    from xmr.bench.shapes import make_shapes_dataset
    from xmr.models.joint import load_model

    a = models["a"]
    manifest = make_shapes_dataset(tmp_path / "data", copies=1)
    run = tmp_path / "run"
    assert "open-clip:SPEC" in cli_ok(["list"], capsys)
    enc = ["--image-encoder", f"open-clip:{a}", "--text-encoder", f"open-clip:{a}", "--cache-dir", tmp_path / "c"]
    cli_ok(["train", manifest, "--out", run, *enc, "--head", "identity", "--embed-dim", "16", "--epochs", "1",
            "--batch-size", "16", "--patience", "0", "--lr", "1e-12"], capsys)
    saved = json.loads((run / "run.json").read_text())
    assert saved["image_encoder"] == saved["text_encoder"] == f"open-clip:{a}"
    temperature = math.exp(-float(load_model(run / "best").log_logit_scale.detach()))
    assert temperature == pytest.approx(0.05, rel=1e-4)
    cli_ok(["index", run, "--cache-dir", tmp_path / "c"], capsys)
    out = cli_ok(["search", run, "--text", "a red circle", "-k", "3"], capsys)
    assert len([line for line in out.splitlines() if line.strip()]) >= 3


BROKEN_TORCHVISION = """
import importlib.machinery, sys
class Broken:  # a torchvision that fails to import, as a build for another torch does
    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name == "torchvision" else None
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        raise RuntimeError("operator torchvision::nms does not exist")
sys.meta_path.insert(0, Broken())
from xmr.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_broken_torchvision_is_one_line(models: dict[str, Any], tmp_path: Path) -> None:
    from xmr.bench.shapes import make_shapes_dataset

    manifest = make_shapes_dataset(tmp_path / "data", copies=1)
    proc = run_process(["encode", manifest, "--image-encoder", "toy-image", "--text-encoder",
                        f"open-clip:{models['a']}", "--cache-dir", tmp_path / "c"], code=BROKEN_TORCHVISION)
    assert "cannot import open_clip (RuntimeError: operator torchvision::nms does not exist)" in one_error_line(proc)


def test_a_text_tower_not_in_the_cache_fails_without_asking_the_network(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A transformers text tower (``hf_model_name``) that the cache lacks: one line, and no look-up at all
    (the hub client asks DNS before it connects; without the offline build it would)."""
    asked: list[object] = []

    def record(*args: object, **kwargs: object) -> None:
        asked.append(args)
        raise OSError("no network in tests")

    for name in ("getaddrinfo", "create_connection"):
        monkeypatch.setattr(socket, name, record)
    monkeypatch.setattr(socket.socket, "connect", record)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    folder = tmp_path / "hf-text"
    folder.mkdir()
    text_cfg = {"hf_model_name": "org/not-cached", "hf_tokenizer_name": "org/not-cached", "hf_proj_type": "linear",
                "hf_pooler_type": "mean_pooler"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {**TINY, "text_cfg": text_cfg}}))
    (folder / "open_clip_model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(XmrError, match=r"cannot load the open-clip model .*hf-text \(OSError") as e:
        create_text_encoder(f"open-clip:{folder}").encode_batch(["a red circle"])
    assert "\n" not in str(e.value) and asked == []
