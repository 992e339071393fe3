"""The frozen trunk / trainable tail split of EfficientNet-Lite0 and the float16 feature cache.

Reference: the library's own ``EfficientNet.extract_features`` (through ``EfficientNetLite0.forward``
for features, and on a deep copy with every parameter trainable for gradients: the gradient of
a tail parameter does not depend on whether the trunk below it runs under ``no_grad``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from xmr.encoders import FeatureCache, ImageTail, TrunkEncoder, check_tail_blocks, create_encoder, encode_images
from xmr.encoders.augment import AugmentConfig, AugmentedView
from xmr.encoders.cache import text_key
from xmr.encoders.efficientnet import EfficientNetLite0
from xmr.encoders.toy import ToyImageEncoder
from xmr.errors import XmrError

N_TAILS = (1, 3, 5, 16)
# float16 cache vs the float32 network (3 images; measured max |error| in brackets). The pooled
# features: (N <= 5: 3.4e-4, N = 16: 5.7e-3; |feature| <= 4.4). The tail's gradients, relative L2
# error over all tail parameters (N <= 5: 0.4%, N = 16: 1.9%) and of the worst single parameter
# tensor (N <= 5: 1.2%, N = 16: 6.7%): ReLU6 kinks flip under float16 rounding. N = 16 caches the
# stem's output, the largest and least precise boundary.
FP16_FEAT_ATOL = {1: 2e-3, 3: 2e-3, 5: 2e-3, 16: 2e-2}
FP16_GRAD_RTOL = {1: 0.02, 3: 0.02, 5: 0.02, 16: 0.08}
FP16_GRAD_WORST = {1: 0.05, 3: 0.05, 5: 0.05, 16: 0.2}


def _drawings(folder: Path) -> list[Path]:
    """Three small drawings (shapes on white), as PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (shape, col) in enumerate([("ellipse", (220, 30, 30)), ("rectangle", (30, 90, 220)),
                                      ("polygon", (20, 160, 60))]):
        im = Image.new("RGB", (96, 80), (255, 255, 255))
        d = ImageDraw.Draw(im)
        if shape == "polygon":
            d.polygon([(10, 70), (48, 8), (86, 70)], fill=col, outline=(0, 0, 0))
        else:
            getattr(d, shape)((12 + 4 * i, 10, 80, 66), fill=col, outline=(0, 0, 0), width=3)
        out.append(folder / f"{shape}.png")
        im.save(out[-1])
    return out


@pytest.fixture(scope="module")
def base() -> EfficientNetLite0:
    return EfficientNetLite0()  # the tests never train it: make_tail copies, trunk runs under no_grad


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return _drawings(tmp_path_factory.mktemp("drawings"))


@pytest.fixture(scope="module")
def x(base: EfficientNetLite0, images: list[Path]) -> torch.Tensor:
    return base.to_input([base.load(p) for p in images])


def _projection() -> torch.Tensor:
    return torch.randn(1280, 8, generator=torch.Generator().manual_seed(0))


def _tail_grads(tail: ImageTail, act: torch.Tensor) -> dict[str, torch.Tensor]:
    (tail(act) @ _projection()).sum().backward()
    return {k: p.grad for k, p in tail.named_parameters() if p.grad is not None}


def _reference_grads(base: EfficientNetLite0, x: torch.Tensor, n_tail: int) -> dict[str, torch.Tensor]:
    """d loss / d (tail parameters) through the library's whole network, named as the tail names them."""
    net = copy.deepcopy(base.model)
    (net.extract_features(x).mean(dim=(2, 3)) @ _projection()).sum().backward()
    first, out = 16 - n_tail, {}
    for name, p in net.named_parameters():
        head, _, rest = name.partition(".")
        if head == "_blocks" and int(rest.split(".")[0]) >= first:
            i, _, sub = rest.partition(".")
            out[f"blocks.{int(i) - first}.{sub}"] = p.grad
        elif head in ("_conv_head", "_bn1"):
            out[f"{head[1:]}.{rest}"] = p.grad
    return out


@pytest.mark.slow
@pytest.mark.parametrize("n_tail", N_TAILS)
def test_tail_of_trunk_is_the_frozen_feature(base: EfficientNetLite0, x: torch.Tensor, images: list[Path],
                                             tmp_path: Path, n_tail: int) -> None:
    full = base.forward(x)
    tail = base.make_tail(n_tail)
    assert not tail.training and tail.n_tail == n_tail
    act = base.trunk(x, n_tail)
    assert tuple(act.shape[1:]) == tail.boundary_shape
    np.testing.assert_allclose(tail(act).detach().numpy(), full.numpy(), rtol=1e-5, atol=1e-5)

    trunk = TrunkEncoder(base, n_tail)
    assert trunk.encoder_id == f"efficientnet-lite0-imagenet@224/trunk-{16 - n_tail}"
    assert trunk.boundary_shape == tail.boundary_shape and trunk.dim == int(np.prod(tail.boundary_shape))
    res = encode_images(trunk, images, cache_dir=tmp_path / "cache")
    assert res.feats.dtype == np.float16 and res.feats.shape == (3, trunk.dim) and res.ok.all()
    again = encode_images(trunk, images, cache_dir=tmp_path / "cache")  # from the cache, still float16
    assert again.n_encoded == 0 and again.feats.dtype == np.float16
    np.testing.assert_array_equal(again.feats, res.feats)
    np.testing.assert_array_equal(res.feats, act.reshape(3, -1).half().numpy())
    cached = tail(tail.unflatten(res.feats)).detach().numpy()
    assert np.abs(cached - full.numpy()).max() <= FP16_FEAT_ATOL[n_tail]


@pytest.mark.slow
@pytest.mark.parametrize("n_tail", N_TAILS)
def test_tail_gradients_match_the_whole_network(base: EfficientNetLite0, x: torch.Tensor, n_tail: int) -> None:
    ref = _reference_grads(base, x, n_tail)
    act = base.trunk(x, n_tail)
    exact = _tail_grads(base.make_tail(n_tail), act)
    assert set(exact) == set(ref) and len(ref) == len(list(base.make_tail(n_tail).parameters()))
    for k in ref:
        np.testing.assert_allclose(exact[k].numpy(), ref[k].numpy(), rtol=1e-5, atol=1e-5 * float(ref[k].abs().max()),
                                   err_msg=k)
    half = _tail_grads(base.make_tail(n_tail), act.half().float())  # the float16 cache's activations
    flat = torch.cat([ref[k].flatten() for k in sorted(ref)])
    flat16 = torch.cat([half[k].flatten() for k in sorted(ref)])
    assert float((flat16 - flat).norm() / flat.norm()) <= FP16_GRAD_RTOL[n_tail]
    worst = max(float((half[k] - ref[k]).norm() / ref[k].norm()) for k in ref if float(ref[k].norm()) > 0)
    assert worst <= FP16_GRAD_WORST[n_tail]


def _bn_state(tail: ImageTail) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in tail.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.slow
def test_frozen_batchnorm_stays_in_eval_and_keeps_its_statistics(base: EfficientNetLite0, x: torch.Tensor) -> None:
    act = base.trunk(x, 3)
    tail = base.make_tail(3).train()
    bns = [m for m in tail.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 3 * 3 + 1 and not any(m.training for m in bns)
    assert tail.training and all(b.training for b in tail.blocks)  # the blocks train: drop-connect is on
    assert all(p.requires_grad for m in bns for p in m.parameters())  # BN affine parameters still learn
    before = _bn_state(tail)
    tail(act).sum().backward()
    for k, v in _bn_state(tail).items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)

    free = base.make_tail(3, freeze_bn=False).train()
    assert all(m.training for m in free.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    before = _bn_state(free)
    free(act)
    changed = [k for k, v in _bn_state(free).items() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)  # every running mean, var and count moved


@pytest.mark.slow
def test_drop_connect_keeps_the_library_rates_in_train_mode_only(base: EfficientNetLite0, x: torch.Tensor) -> None:
    tail = base.make_tail(3)
    assert tail.drop_connect_rates == pytest.approx([0.2 * i / 16 for i in (13, 14, 15)])
    act = base.trunk(x, 3)
    plain = tail(act)
    tail.train()
    torch.manual_seed(0)
    dropped = [tail(act) for _ in range(4)]  # blocks 13 and 14 have a skip connection: stochastic depth
    assert any(not torch.allclose(d, plain) for d in dropped)
    tail.eval()
    torch.testing.assert_close(tail(act), plain, rtol=0, atol=0)


@pytest.mark.slow
def test_tail_state_dict_and_describe_are_stable(base: EfficientNetLite0, x: torch.Tensor) -> None:
    tail = base.make_tail(2)
    keys = list(tail.state_dict())
    assert keys[0].startswith("blocks.0.") and any(k.startswith("blocks.1.") for k in keys)
    assert not any(k.startswith("blocks.2.") for k in keys)
    assert {"conv_head.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"} <= set(keys)
    with torch.no_grad():
        tail.conv_head.weight.mul_(0.5)  # "trained"
    other = base.make_tail(2)
    other.load_state_dict(tail.state_dict())
    act = base.trunk(x, 2)
    torch.testing.assert_close(other(act), tail(act))
    d = json.loads(json.dumps(tail.describe()))
    assert d == {"encoder_id": "efficientnet-lite0-imagenet@224",
                 "trunk_id": "efficientnet-lite0-imagenet@224/trunk-14", "n_tail": 2,
                 "boundary_shape": [192, 7, 7], "dim": 1280, "freeze_bn": True,
                 "drop_connect_rates": pytest.approx([0.175, 0.1875])}
    # the frozen encoder is untouched by training a tail
    np.testing.assert_allclose(base.make_tail(2)(act).detach().numpy(), base.forward(x).numpy(), atol=1e-5)


@pytest.mark.slow
def test_augmented_views_wrap_the_trunk(base: EfficientNetLite0, images: list[Path], tmp_path: Path) -> None:
    trunk = TrunkEncoder(base, 5)
    view = AugmentedView(trunk, AugmentConfig(views=2), 1)
    assert view.encoder_id.startswith("efficientnet-lite0-imagenet@224/trunk-11+aug-") and view.dim == 21952
    res = encode_images(view, images[:2], cache_dir=tmp_path / "c")
    assert res.feats.shape == (2, 21952) and np.isfinite(res.feats).all()


@pytest.mark.parametrize("n", [-1, 17, 2.5, True, "3"])
def test_tail_blocks_out_of_range_are_one_line(n: object) -> None:
    enc = EfficientNetLite0()  # refused before any weights load
    for call in (lambda: enc.make_tail(n), lambda: enc.trunk(torch.zeros(1, 3, 224, 224), n),
                 lambda: TrunkEncoder(enc, n)):
        with pytest.raises(XmrError, match="has 16 blocks, so N must be 0..16") as e:
            call()
        assert "\n" not in str(e.value) and repr(n) in str(e.value)
    assert check_tail_blocks(0, 16) == 0 and check_tail_blocks(16, 16) == 16


def test_no_tail_and_other_encoders_are_refused() -> None:
    enc = EfficientNetLite0()
    for call in (lambda: enc.make_tail(0), lambda: TrunkEncoder(enc, 0)):
        with pytest.raises(XmrError, match="0 blocks .* use the frozen encoder itself"):
            call()
    with pytest.raises(XmrError, match="'toy-image-d64-s0@32' cannot be split") as e:
        TrunkEncoder(create_encoder("toy-image"), 3)
    assert "\n" not in str(e.value)


# -- the float16 feature cache (no weights) ------------------------------------------------------

def _describe(dtype: str | None = None, dim: int = 4) -> dict[str, object]:
    d: dict[str, object] = {"encoder_id": "e", "modality": "image", "dim": dim}
    return d if dtype is None else {**d, "dtype": dtype}


def test_float16_cache_round_trips_dtype_and_values(tmp_path: Path) -> None:
    feats = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32) * 7
    c = FeatureCache(tmp_path, _describe("float16"))
    assert c.dtype == np.float16
    c.put([text_key(s) for s in "abc"], feats)
    shard = next(c.dir.glob("shard-*.npz"))
    with np.load(shard) as z:
        assert z["feats"].dtype == np.float16
    again = FeatureCache(tmp_path, _describe("float16"))
    got = again.get([text_key("c"), text_key("a")])
    assert got.dtype == np.float16 and again._feats.dtype == np.float16  # never widened in memory
    np.testing.assert_array_equal(got, feats[[2, 0]].astype(np.float16))
    with pytest.raises(XmrError, match="written by"):  # a float32 encoder of the same id is refused
        FeatureCache(tmp_path, _describe())
    with pytest.raises(XmrError, match="beyond the float16 range"):
        again.put([text_key("big")], np.full((1, 4), 1e5))
    with pytest.raises(XmrError, match="NaN/inf"):
        again.put([text_key("nan")], np.full((1, 4), np.nan))
    with pytest.raises(XmrError, match="dtype of 'int8'"):
        FeatureCache(tmp_path / "other", _describe("int8"))


def test_float32_cache_written_before_dtypes_still_loads(tmp_path: Path) -> None:
    folder = tmp_path / "e"  # as the cache wrote it before: encoder.json without a dtype, float32 shards
    folder.mkdir()
    (folder / "encoder.json").write_text(json.dumps(_describe()))
    feats = np.arange(8, dtype=np.float32).reshape(2, 4) / 3
    np.savez(folder / "shard-00000000000000000001-1-abcd.npz", keys=np.array([text_key("a"), text_key("b")]),
             feats=feats)
    before = (folder / "encoder.json").read_bytes()
    c = FeatureCache(tmp_path, _describe())
    assert c.dtype == np.float32 and len(c) == 2
    got = c.get([text_key("b")])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, feats[[1]])
    c.put([text_key("c")], np.ones((1, 4), dtype=np.float64))
    assert FeatureCache(tmp_path, _describe()).get([text_key("c")]).dtype == np.float32
    assert (folder / "encoder.json").read_bytes() == before


class _HalfToy(ToyImageEncoder):
    """The toy image encoder, cached in float16."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder_id += "-f16"

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "dtype": "float16"}

    def encode_batch(self, inputs: Sequence[object]) -> np.ndarray:
        return super().encode_batch(inputs).astype(np.float16)


def test_encode_images_returns_the_cache_dtype_with_nan_rows(tmp_path: Path) -> None:
    paths = _drawings(tmp_path / "img")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    enc = _HalfToy()
    res = encode_images(enc, [paths[0], broken, paths[1]], cache_dir=tmp_path / "c", skip_bad=True)
    assert res.feats.dtype == np.float16 and res.ok.tolist() == [True, False, True]
    assert np.isnan(res.feats[1]).all() and np.isfinite(res.feats[[0, 2]]).all()
    plain = ToyImageEncoder().encode_batch([enc.load(p) for p in paths[:2]])
    np.testing.assert_array_equal(res.feats[[0, 2]], plain.astype(np.float16))
    f32 = encode_images(ToyImageEncoder(), paths[:2], cache_dir=tmp_path / "c")  # the float32 path is unchanged
    assert f32.feats.dtype == np.float32
