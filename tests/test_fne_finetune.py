"""Fine-tuning the full-network embedding (xmr.encoders.fne): cached trunk rows through the tail equal the
frozen embedding, the ids and the capability, and a tiny fine-tuning run that trains, saves and serves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xmr.bench.shapes import make_shapes_dataset
from xmr.cli import main
from xmr.encoders.efficientnet import to_model_input
from xmr.encoders.finetune import tail_depth
from xmr.encoders.fne import DEFAULT_FNE, FAMILY, FneConfig, FullNetworkEmbedding
from xmr.errors import XmrError
from xmr.models import load_model
from xmr.search import Searcher

SIZE = 64  # a tiny input: every block still runs, the maps are small


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(3)]


@pytest.mark.parametrize("spec", [DEFAULT_FNE.spec, "b2,b7,b15,head:block-std", "b0,b14,head:block-l2"])
@pytest.mark.parametrize("n_tail", [1, 3, 9])
def test_trunk_rows_through_the_untrained_tail_are_the_frozen_features(spec: str, n_tail: int,
                                                                        images: list[np.ndarray]) -> None:
    enc = FullNetworkEmbedding(FneConfig.parse(spec), image_size=SIZE)
    ref = enc.forward(to_model_input(images)).numpy()
    trunk = enc.trunk_encoder(n_tail)
    tail = trunk.make_tail()
    with torch.no_grad():
        exact = tail.features(trunk.rows(images)).numpy()  # float32 rows: the same computation
        cached = tail.features(torch.from_numpy(trunk.encode_batch(images))).numpy()  # float16, as cached
    assert exact.shape == cached.shape == (len(images), enc.dim)
    np.testing.assert_allclose(exact, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cached, ref, rtol=0, atol=1e-2)
    assert not np.allclose(cached, np.roll(ref, 1, axis=0), atol=1e-2)  # the comparison can fail


def test_all_caches_pixels_and_the_whole_network_is_the_frozen_encoder(images: list[np.ndarray]) -> None:
    enc = FullNetworkEmbedding(DEFAULT_FNE, image_size=SIZE)
    trunk = enc.trunk_encoder("all")
    assert trunk.encoder_id == f"{enc.encoder_id}/input" and trunk.dim == 3 * SIZE * SIZE
    with torch.no_grad():
        got = trunk.make_tail().features(torch.from_numpy(trunk.encode_batch(images))).numpy()
    np.testing.assert_allclose(got, enc.forward(to_model_input(images)).numpy(), rtol=1e-4, atol=1e-4)


def test_trunk_ids_differ_per_depth_and_the_capability_is_declared() -> None:
    enc = FullNetworkEmbedding(DEFAULT_FNE, image_size=SIZE)
    ids = {n: enc.trunk_encoder(n).encoder_id for n in (1, 3, 9, 16)}
    assert len(set(ids.values())) == 4 and enc.encoder_id not in ids.values()
    assert ids[1] == f"{enc.encoder_id}/trunk-15"
    assert tail_depth(FAMILY, "image") == 16 == FullNetworkEmbedding.finetune_depth
    assert tail_depth(f"{FAMILY}:b7,b15,head:block-l2", "image") == 16
    # a trunk row: the boundary after block 12 (measured) + the frozen taps b7, b10 (80 + 112 values)
    t3 = enc.trunk_encoder(3)
    assert t3.frozen == (7, 10) and t3.dim == int(np.prod(t3.boundary_shape)) + 80 + 112


@pytest.mark.parametrize("spec,n_tail,needle", [(DEFAULT_FNE.spec, 17, "N must be 0..16"),
                                                (DEFAULT_FNE.spec, 0, "has no trunk or tail"),
                                                ("b7,b15:none", 1, "needs the 'head' tap"),
                                                ("b7,head:block-std:ternary", 1, "needs the 'head' tap")])
def test_bad_tails_are_refused(spec: str, n_tail: int, needle: str) -> None:
    with pytest.raises(XmrError, match=needle):
        FullNetworkEmbedding(FneConfig.parse(spec), image_size=SIZE).trunk_encoder(n_tail)


@pytest.mark.slow  # the real weights at 224 px, a few images
def test_a_finetuned_fne_trains_saves_and_serves(tmp_path: Path) -> None:
    manifest, cache, run = make_shapes_dataset(tmp_path / "data", copies=1), tmp_path / "cache", tmp_path / "run"
    assert main(["-q", "train", str(manifest), "--out", str(run), "--cache-dir", str(cache), "--epochs", "2",
                 "--image-encoder", FAMILY, "--text-encoder", "toy-text", "--finetune-image-blocks", "1",
                 "--embed-dim", "32", "--batch-size", "8", "--lr", "3e-3", "--finetune-lr", "1e-3",
                 "--patience", "0"]) == 0
    saved = json.loads((run / "best" / "model.json").read_text())["config"]
    assert saved["image_tail"]["n_tail"] == 1 and saved["image_dim"] == DEFAULT_FNE.dim
    assert saved["image_tail"]["trunk_id"].endswith("-none/trunk-15")
    fresh = FullNetworkEmbedding().trunk_encoder(1).make_tail().state_dict()
    model = load_model(run / "best")
    assert model.image_tail is not None
    trained = model.image_tail.state_dict()
    assert trained.keys() == fresh.keys()
    assert any(not torch.equal(trained[k], fresh[k]) for k in trained if k.endswith("weight"))
    assert main(["-q", "eval", str(run), "--cache-dir", str(cache)]) == 0
    assert main(["-q", "index", str(run), "--cache-dir", str(cache)]) == 0
    hits = Searcher.from_run(run).search_text("a red circle", k=3)
    assert len(hits) == 3


def test_the_tail_trains_every_parameter_and_checkpointing_keeps_the_gradients(images: list[np.ndarray]) -> None:
    trunk = FullNetworkEmbedding(DEFAULT_FNE, image_size=SIZE).trunk_encoder(9)  # taps b10, b14, b15 in the tail
    rows = torch.from_numpy(trunk.encode_batch(images))
    grads = []
    for on in (False, True):
        tail = trunk.make_tail().train()
        tail.set_checkpointing(on)
        torch.manual_seed(0)  # the same drop-connect draws
        tail.features(rows).square().sum().backward()
        grads.append({n: p.grad for n, p in tail.named_parameters()})
    assert all(g is not None for g in grads[0].values())
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g)
    groups = tail.layer_groups()
    assert len(groups) == 9 and sum(map(len, groups)) == len(list(tail.parameters()))
