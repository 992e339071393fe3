"""EfficientNet-Lite0 on ONNX Runtime: the torch model's features (cosine), its graph exported once
and cached by encoder id, a damaged cached graph exported again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xmr.encoders import create_image_encoder
from xmr.encoders.efficientnet import EfficientNetLite0
from xmr.encoders.efficientnet_onnx import EfficientNetLite0Onnx, graph_path
from xmr.utils.threads import ThreadConfig, using_config


def seeded_images(n: int = 6, size: int = 224) -> list[np.ndarray]:
    """Noise, smooth gradients and flat colours: uint8 (size, size, 3) each."""
    rng = np.random.default_rng(27)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    out = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n // 2)]
    for k in range(n - n // 2):
        img = np.stack([np.add.outer(ramp, ramp * (k + 1)) % 256, np.tile(ramp, (size, 1)),
                        np.full((size, size), 40.0 * k)], axis=2)
        out.append(img.astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def torch_features() -> np.ndarray:
    return EfficientNetLite0().encode_batch(seeded_images())


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def test_onnx_features_match_torch_and_the_graph_is_cached(cache: Path, torch_features: np.ndarray) -> None:
    enc = create_image_encoder("efficientnet-lite0-onnx", cache_dir=cache)
    assert isinstance(enc, EfficientNetLite0Onnx)
    assert enc.encoder_id == EfficientNetLite0().encoder_id  # same features -> one feature cache
    with using_config(ThreadConfig(threads=2)):
        fast = enc.encode_batch(seeded_images())
    assert fast.shape == torch_features.shape == (6, 1280) and fast.dtype == np.float32
    assert min_cosine(fast, torch_features) > 1 - 1e-5  # the bound: 0.9999
    assert enc.exports == 1 and graph_path(enc.encoder_id, cache).is_file()
    # a row does not depend on its batch, nor on the thread count
    with using_config(ThreadConfig(threads=1)):
        alone = np.vstack([enc.encode_batch([img]) for img in seeded_images()[:2]])
    assert min_cosine(alone, fast[:2]) > 1 - 1e-6
    assert enc.exports == 1  # another thread count: another session, the same graph


def test_second_encoder_reuses_the_cached_graph(cache: Path, torch_features: np.ndarray) -> None:
    path = graph_path(EfficientNetLite0().encoder_id, cache)
    if not path.is_file():
        EfficientNetLite0Onnx(cache_dir=cache).encode_batch(seeded_images()[:1])
    stamp = path.stat().st_mtime_ns
    enc = EfficientNetLite0Onnx(cache_dir=cache)
    fast = enc.encode_batch(seeded_images())
    assert enc.exports == 0 and enc._model is None  # no torch model built, no export
    assert path.stat().st_mtime_ns == stamp
    assert min_cosine(fast, torch_features) > 1 - 1e-5


def test_a_damaged_cached_graph_is_exported_again(tmp_path: Path, torch_features: np.ndarray,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    path = graph_path(EfficientNetLite0().encoder_id, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x08\x07not an onnx graph" * 100)
    enc = EfficientNetLite0Onnx(cache_dir=tmp_path)
    fast = enc.encode_batch(seeded_images())
    assert enc.exports == 1 and "exporting it again" in caplog.text
    assert min_cosine(fast, torch_features) > 1 - 1e-5
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left


def test_empty_batch() -> None:
    assert EfficientNetLite0Onnx().encode_batch([]).shape == (0, 1280)



def test_xmr_encode_with_the_onnx_encoder_fills_the_torch_encoders_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from PIL import Image

    from xmr.cli import main

    monkeypatch.setenv("XMR_CACHE_DIR", str(tmp_path / "xmr-cache"))  # the default, which --cache-dir overrides
    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(seeded_images()[:3]):
        Image.fromarray(img).save(folder / f"{i}.png")

    def encode(encoder: str) -> str:
        caplog.clear()
        with caplog.at_level("INFO", logger="xmr.workflows.features"):
            assert main(["--threads", "1", "encode", "--images", str(folder), "--image-encoder", encoder,
                         "--text-encoder", "toy-text", "--cache-dir", str(tmp_path / "features")]) == 0
        return caplog.text

    assert "3 images (3 newly encoded)" in encode("efficientnet-lite0-onnx")
    # the graph follows --cache-dir, as the features do (not $XMR_CACHE_DIR)
    assert graph_path(EfficientNetLite0().encoder_id, tmp_path / "features").is_file()
    assert not (tmp_path / "xmr-cache").exists()
    assert "3 images (0 newly encoded)" in encode("efficientnet-lite0")  # one encoder id: one cache
