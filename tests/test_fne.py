"""The full-network embedding of EfficientNet-Lite0 (xmr.encoders.fne) against forward hooks on the
package's own model, its config spelling and its registration."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from xmr.cli import main
from xmr.encoders import ENCODERS, create_image_encoder
from xmr.encoders.efficientnet import EfficientNetLite0
from xmr.encoders.fne import BLOCK_WIDTHS, DEFAULT_FNE, FneConfig, FullNetworkEmbedding
from xmr.errors import XmrError

SIZE = 64  # a tiny input: the maps are 2 x 2 at the head, the features still every tap's


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(2)]


def _hooked(net: Any, x: torch.Tensor, config: FneConfig) -> np.ndarray:
    """The reference: the package's own ``extract_features`` with forward hooks on the tapped blocks,
    each map averaged, scaled by hand in numpy, concatenated."""
    seen: dict[int, torch.Tensor] = {}
    hooks = [net._blocks[b].register_forward_hook(lambda mod, inp, out, b=b: seen.__setitem__(b, out))
             for b in config.blocks]
    try:
        with torch.no_grad():
            head = net.extract_features(x)
    finally:
        for h in hooks:
            h.remove()
    maps = [seen[b] for b in config.blocks] + ([head] if config.head else [])
    parts = []
    for m in maps:
        v = m.double().numpy().mean(axis=(2, 3))
        if config.scale == "block-l2":
            v = v / np.sqrt((v * v).sum(axis=1, keepdims=True))
        elif config.scale == "block-std":
            v = (v - v.mean(axis=1, keepdims=True)) / v.std(axis=1, keepdims=True)
        parts.append(v)
    z = np.concatenate(parts, axis=1)
    if config.ternary:
        z = np.where(z > 0.15, 1.0, np.where(z < -0.25, -1.0, 0.0))
    return z


@pytest.mark.parametrize("spec", [DEFAULT_FNE.spec, "b2,b4,b7,b10,b14,b15,head:none", "b0,b15:block-std",
                                  "b7,b14,head:block-std:ternary"])
def test_features_equal_hooks_on_the_package_model(spec: str, images: list[np.ndarray]) -> None:
    config = FneConfig.parse(spec)
    enc = FullNetworkEmbedding(config, image_size=SIZE)
    got = enc.encode_batch(images)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    ref = _hooked(enc.base.model, (x - 0.498) / 0.502, config)
    assert got.dtype == np.float32 and got.shape == (2, config.dim) == ref.shape
    if config.ternary:  # a value on a threshold may round either way: allow one flip per row at most
        assert set(np.unique(got)) <= {-1.0, 0.0, 1.0} and (got != ref).sum() <= 2
    else:
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-4)


def test_the_head_tap_is_efficientnet_lite0s_own_features(images: list[np.ndarray]) -> None:
    enc = FullNetworkEmbedding(FneConfig.parse("b15,head:none"), image_size=SIZE)
    base = EfficientNetLite0(image_size=SIZE)
    np.testing.assert_allclose(enc.encode_batch(images)[:, BLOCK_WIDTHS[15]:], base.encode_batch(images), atol=1e-6)


def test_block_widths_match_the_package_model() -> None:
    net = EfficientNetLite0(image_size=SIZE).model
    assert [int(b._block_args.output_filters) for b in net._blocks] == list(BLOCK_WIDTHS)


def test_the_id_and_dim_follow_the_config() -> None:
    a = create_image_encoder("efficientnet-lite0-fne")
    assert a.dim == DEFAULT_FNE.dim == sum(DEFAULT_FNE.widths)
    ids = {FullNetworkEmbedding(FneConfig.parse(s)).encoder_id
           for s in ["b14,head:block-l2", "b14,b15,head", "b14,head:none", "b14,head:block-std",
                     "b14,head:block-std:ternary", "b14,b15"]}
    assert len(ids) == 6 and a.encoder_id not in ids
    assert FullNetworkEmbedding(FneConfig.parse("b7,head"), image_size=SIZE).encoder_id != \
        FullNetworkEmbedding(FneConfig.parse("b7,head")).encoder_id
    b = create_image_encoder("efficientnet-lite0-fne:b7,b15:none")
    assert b.dim == 80 + 320 and b.encoder_id.endswith("/fne-b7.b15-none")
    assert create_image_encoder(f"efficientnet-lite0-fne:{DEFAULT_FNE.spec}").encoder_id == a.encoder_id
    assert FneConfig.parse("b14,head") == FneConfig.parse("b14,head:none")  # the default scale


@pytest.mark.parametrize("spec", ["", "b16", "b3,b1", "b3,b3", "x1", "head:l1", "head:block-l2:ternary",
                                  "head:none:binary", "b1:none:ternary:more"])
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(XmrError):
        create_image_encoder(f"efficientnet-lite0-fne:{spec}")


def test_listed_by_xmr_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert {"efficientnet-lite0-fne", "efficientnet-lite0-fne:TAPS[:SCALE[:ternary]]"} <= set(ENCODERS.names())
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet-lite0-fne" in out and "efficientnet-lite0-fne:TAPS" in out
