"""Whole-network fine-tuning ("all") of EfficientNet-Lite0 and MiniLM on the fine-tuning capability.

References: the libraries' own whole networks -- ``EfficientNet.extract_features`` of
efficientnet_lite_pytorch (features, and on a deep copy for gradients) and the
sentence-transformers model end to end (``encode_batch`` for embeddings, a deep copy run on its
own ``preprocess`` output for gradients); gradient checkpointing against the same tail without it
(same seed, train mode: drop-connect / dropout drawn); layer-wise lr decay against a hand-written
list. The fast tests (no weights) use a stand-in tail.

Measured (1 thread, the seeded inputs below; error vs the library): image "all" from the float16
pixel rows, 224 px: features max 6.7e-6 (the grad-enabled forward's rounding, as for a tail of N
blocks); gradients at 64 px: relative L2 5.2e-7 over all parameters, worst value 9.3e-7 of the
largest gradient. Text "all": embeddings max 1.5e-8, gradients identical (0.0).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from xmr.encoders import encode_images, encode_texts
from xmr.encoders.efficientnet import EfficientNetLite0
from xmr.encoders.finetune import ALL, tail_depth, trunk_of
from xmr.encoders.minilm import MiniLML6
from xmr.errors import XmrError
from xmr.runs import FinetuneConfig

FEAT_ATOL = 1e-5  # image features, float32 (measured 6.7e-6; |feature| <= 4.4)
TEXT_ATOL = 1e-6  # unit text embeddings, float32 (measured 1.5e-8)
GRAD_RTOL = 1e-4  # relative L2 of all gradients together, and of each tensor against the largest gradient
TEXTS = ["a red circle", "grinning face", "flag: St. Vincent & Grenadines"]


def _projection(dim: int) -> torch.Tensor:
    return torch.randn(dim, 8, generator=torch.Generator().manual_seed(0))


def _arrays(size: int, n: int = 2) -> list[np.ndarray]:
    """``n`` seeded images: smooth colour ramps plus noise, uint8 (size, size, 3)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, size)[None, :, None] * rng.uniform(0, 255, (n, 1, 1, 1, 3))[:, 0]
    out = np.clip(ramp + rng.normal(0, 30, (n, size, size, 3)), 0, 255).astype(np.uint8)
    return list(out)


def _close_grads(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(ref)
    keys = sorted(ref)
    flat_g, flat_r = (torch.cat([d[k].flatten() for k in keys]) for d in (got, ref))
    assert float((flat_g - flat_r).norm() / flat_r.norm()) <= GRAD_RTOL
    scale = max(float(g.abs().max()) for g in ref.values())
    for k in keys:
        assert float((got[k] - ref[k]).abs().max()) <= GRAD_RTOL * scale, k


# -- EfficientNet-Lite0 ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small() -> EfficientNetLite0:
    return EfficientNetLite0(image_size=64)  # the whole network at 64 px: fast gradients, same weights


@pytest.mark.slow
def test_image_all_through_the_pixel_cache_is_the_frozen_feature(tmp_path: Path) -> None:
    base = EfficientNetLite0()
    trunk = trunk_of(base, ALL)
    assert trunk.encoder_id == "efficientnet-lite0-imagenet@224/input" and trunk.dim == 3 * 224 * 224
    assert trunk.model_tail("efficientnet-lite0")[1]["n_tail"] == ALL
    from PIL import Image

    paths = []
    for i, a in enumerate(_arrays(224)):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(a).save(paths[-1])
    res = encode_images(trunk, paths, cache_dir=tmp_path / "cache")
    assert res.feats.dtype == np.float16 and res.ok.all()
    loaded = [base.load(p) for p in paths]
    # the cached rows are the pixels to the bit (integers 0..255 are exact in float16)
    np.testing.assert_array_equal(res.feats.astype(np.float32), base.to_pixels(loaded).reshape(2, -1).numpy())
    tail = trunk.make_tail()
    assert tail.n_tail == ALL and tail.trunk_id == trunk.encoder_id and not tail.training
    full = base.forward(base.to_input(loaded)).numpy()
    np.testing.assert_allclose(tail.features(torch.from_numpy(res.feats)).detach().numpy(), full,
                               rtol=0, atol=FEAT_ATOL)


def _image_reference_grads(base: EfficientNetLite0, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """d loss / d parameters of the library's whole network, named as an "all" tail names them."""
    net = copy.deepcopy(base.model)
    (net.extract_features(x).mean(dim=(2, 3)) @ _projection(1280)).sum().backward()
    rename = {"_conv_stem": "conv_stem", "_bn0": "bn0", "_blocks": "blocks", "_conv_head": "conv_head", "_bn1": "bn1"}
    out = {}
    for name, p in net.named_parameters():
        head, _, rest = name.partition(".")
        if head in rename:
            out[f"{rename[head]}.{rest}"] = p.grad
    return out


def _grads(tail: nn.Module, rows: torch.Tensor, dim: int, saved: list[int] | None = None) -> dict[str, torch.Tensor]:
    """The tail's parameter gradients of a fixed projection of its features; ``saved`` gets the bytes of
    the activations autograd kept for the backward pass (outside checkpointed blocks / layers)."""
    tail.zero_grad()
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = (tail.features(rows) @ _projection(dim)).sum()
    loss.backward()
    if saved is not None:
        saved.append(total[0])
    return {k: p.grad.clone() for k, p in tail.named_parameters() if p.grad is not None}


@pytest.mark.slow
def test_image_all_gradients_match_the_library_network(small: EfficientNetLite0) -> None:
    arrays = _arrays(64)
    ref = _image_reference_grads(small, small.to_input(arrays))
    tail = small.make_tail(ALL)
    got = _grads(tail, small.to_pixels(arrays).reshape(2, -1), 1280)
    assert len(got) == len(list(tail.parameters())) == len(ref)
    _close_grads(got, ref)


@pytest.mark.slow
@pytest.mark.parametrize("freeze_bn", [True, False])
def test_image_checkpointing_gives_the_same_gradients(small: EfficientNetLite0, freeze_bn: bool) -> None:
    rows = small.to_pixels(_arrays(64)).reshape(2, -1)
    results, saved = [], []
    for on in (False, True):
        tail = small.make_tail(ALL, freeze_bn=freeze_bn).train()  # drop-connect drawn in every block
        tail.set_checkpointing(on)
        torch.manual_seed(3)
        grads = _grads(tail, rows, 1280, saved)
        stats = {k: v.clone() for k, v in tail.state_dict().items() if "running_" in k or "num_batches" in k}
        results.append((grads, stats))
    (g0, s0), (g1, s1) = results
    assert saved[1] < saved[0] / 4  # the blocks' activations were not kept (measured: 1/9.5 at 64 px)
    assert set(g0) == set(g1)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-5, atol=1e-7)
    for k in s0:  # BatchNorm statistics moved once per step, as without checkpointing
        torch.testing.assert_close(s1[k], s0[k], rtol=0, atol=0)
    fresh = small.make_tail(ALL).state_dict()
    assert any(not torch.equal(s0[k], fresh[k]) for k in s0 if "running_mean" in k) == (not freeze_bn)


@pytest.mark.slow
@pytest.mark.parametrize("n_tail", [3, ALL])
def test_image_layer_groups_cover_every_parameter_once_in_order(small: EfficientNetLite0, n_tail: object) -> None:
    tail = small.make_tail(n_tail)  # type: ignore[arg-type]
    groups = tail.layer_groups()
    assert len(groups) == (17 if n_tail == ALL else 3)
    assert [id(p) for g in groups for p in g] == [id(p) for p in tail.parameters()]
    head = {id(p) for p in [*tail.conv_head.parameters(), *tail.bn1.parameters()]}
    assert head <= {id(p) for p in groups[-1]}  # the head conv trains with the last block


# -- MiniLM ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm() -> MiniLML6:
    return MiniLML6()


def _text_reference_grads(enc: MiniLML6, texts: list[str]) -> dict[str, torch.Tensor]:
    """d loss / d parameters of the library's whole SentenceTransformer, named as an "all" tail names them."""
    ref = copy.deepcopy(enc.model).eval()  # eval: no dropout, as the tail in eval mode
    emb = ref(ref.preprocess(texts))["sentence_embedding"]
    (emb @ _projection(384)).sum().backward()
    out = {}
    for name, p in ref[0].auto_model.named_parameters():
        if name.startswith("embeddings."):
            out[name] = p.grad
        elif name.startswith("encoder.layer."):
            out["layers." + name.removeprefix("encoder.layer.")] = p.grad
    return {k: v for k, v in out.items() if v is not None}


@pytest.mark.slow
def test_text_all_from_token_ids_is_the_frozen_embedding_and_its_gradients(minilm: MiniLML6,
                                                                            tmp_path: Path) -> None:
    trunk = trunk_of(minilm, ALL, length=16)
    assert trunk.encoder_id == "all-minilm-l6-v2/input-len16" and trunk.dim == 32
    assert trunk.describe()["dtype"] == "float32"
    res = encode_texts(trunk, TEXTS, cache_dir=tmp_path / "cache")
    ids, mask = minilm.tokenize(TEXTS, 16)
    np.testing.assert_array_equal(res.feats, torch.cat([ids, mask], 1).float().numpy())  # exact
    tail = trunk.make_tail()
    assert tail.n_tail == ALL and tail.describe()["trunk_id"] == trunk.encoder_id
    rows = torch.from_numpy(res.feats)
    np.testing.assert_allclose(tail.features(rows).detach().numpy(), minilm.encode_batch(TEXTS), rtol=0,
                               atol=TEXT_ATOL)
    got = _grads(tail, rows, 384)
    ref = _text_reference_grads(minilm, TEXTS)
    assert len(ref) == len(list(tail.parameters())) == 5 + 16 * 6  # 3 tables + LayerNorm; 16 per layer
    _close_grads(got, ref)


@pytest.mark.slow
def test_text_checkpointing_gives_the_same_gradients_and_groups_cover_the_tail(minilm: MiniLML6) -> None:
    ids, mask = minilm.tokenize(TEXTS, 16)
    rows = torch.cat([ids, mask], 1).float()
    grads, saved = [], []
    for on in (False, True):
        tail = minilm.make_tail(ALL, length=16).train()  # dropout drawn
        tail.set_checkpointing(on)
        torch.manual_seed(5)
        grads.append(_grads(tail, rows, 384, saved))
    assert saved[1] < saved[0] / 4  # the layers' activations were not kept (measured: 1/104)
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-5, atol=1e-7)
    for n_tail, n_groups in ((2, 2), (ALL, 7)):
        tail = minilm.make_tail(n_tail, length=16)
        groups = tail.layer_groups()
        assert len(groups) == n_groups
        assert [id(p) for g in groups for p in g] == [id(p) for p in tail.parameters()]


# -- the capability, the config and the CLI (no weights) -------------------------------------------

def test_depths_are_declared_and_all_is_a_config_value(tmp_path: Path) -> None:
    assert tail_depth("efficientnet-lite0", "image") == 16 and tail_depth("minilm-l6", "text") == 6
    assert tail_depth("toy-image", "image") is None
    cfg = FinetuneConfig(image_blocks="all", text_layers="all")
    assert cfg.image_blocks == ALL and cfg.text_layers == ALL
    cfg.check_encoders("efficientnet-lite0", "minilm-l6", image_head=None, word_level=False)
    with pytest.raises(XmrError, match="cannot be fine-tuned") as e:
        cfg.check_encoders("toy-image", "minilm-l6", image_head=None, word_level=False)
    assert "\n" not in str(e.value)
    with pytest.raises(XmrError, match="must be a count or 'all'"):
        FinetuneConfig(image_blocks="every")  # type: ignore[arg-type]
    with pytest.raises(XmrError, match=r"N must be 0\.\.16 or 'all'"):
        FinetuneConfig(image_blocks=17).check_encoders("efficientnet-lite0", "minilm-l6", image_head=None,
                                                       word_level=False)
    with pytest.raises(XmrError, match="cannot be fine-tuned"):
        trunk_of(object(), ALL)


def test_run_json_keeps_all_and_refuses_other_strings(tmp_path: Path) -> None:
    from xmr.utils.json_types import check_json_types

    check_json_types(FinetuneConfig, {"image_blocks": "all", "text_layers": 3}, "run.json")
    for bad in ("3", "ALL", True, 2.5):
        with pytest.raises(XmrError, match="field 'image_blocks'") as e:
            check_json_types(FinetuneConfig, {"image_blocks": bad}, "run.json")
        assert '"all"' in str(e.value)


@pytest.mark.parametrize("value", ["every", "-1", "2.5", ""])
def test_a_bad_depth_option_is_one_line(value: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from xmr.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "r"), "--finetune-image-blocks", value])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("xmr: error: argument --finetune-image-blocks") and "'all'" in err[-1]


def test_help_shows_the_depth_and_decay_options(capsys: pytest.CaptureFixture[str]) -> None:
    from xmr.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--finetune-image-blocks N|all" in out and "--finetune-text-layers N|all" in out
    assert "--layer-lr-decay DECAY" in out and "(default: 1.0)" in out.rsplit("--layer-lr-decay DECAY", 1)[1][:300]


# -- layer-wise learning-rate decay (a stand-in tail: no weights) ----------------------------------

class _StandIn(nn.Module):
    """A tail of three linear "layers" whose groups are its layers, input side first."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(layer.parameters()) for layer in self.layers]


def test_layer_lr_decay_gives_each_group_its_rate() -> None:
    from xmr.models import JointModel, ModelConfig
    from xmr.training import TrainConfig
    from xmr.training.checkpoint import TrainedModules
    from xmr.training.trainer import _optimizer, _scheduler

    model = JointModel(ModelConfig(image_encoder="toy-image", text_encoder="toy-text", image_dim=4, text_dim=4,
                                   embed_dim=4, head="linear"))
    model.image_tail, model.text_tail = _StandIn(), _StandIn()
    config = TrainConfig(lr=1e-3, finetune_lr=1e-4, layer_lr_decay=0.5, warmup_epochs=0, epochs=2)
    opt = _optimizer(TrainedModules(model, []), model, config)
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs == pytest.approx([1e-3, 1e-4 * 0.25, 1e-4 * 0.5, 1e-4, 1e-4 * 0.25, 1e-4 * 0.5, 1e-4], rel=1e-12)
    assert [p for p in opt.param_groups[3]["params"]] == list(model.image_tail.layers[2].parameters())
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    sched = _scheduler(opt, config, steps_per_epoch=4, frozen_tail_epochs=1)
    for _ in range(5):
        opt.step()
        sched.step()
    factor = opt.param_groups[1]["lr"] / (1e-4 * 0.25)  # every tail group on one schedule, after Stage I
    assert 0 < factor < 1
    assert [g["lr"] for g in opt.param_groups[1:]] == pytest.approx([r * factor for r in lrs[1:]], rel=1e-9)
    off = _optimizer(TrainedModules(model, []), model, TrainConfig())  # 1.0: one tail group, as before
    assert len(off.param_groups) == 2 and off.param_groups[1]["lr"] == 1e-4
    with pytest.raises(XmrError, match="layer_lr_decay"):
        TrainConfig(layer_lr_decay=0.0)


# -- end to end: train, save, load, serve ----------------------------------------------------------

@pytest.mark.slow
def test_a_whole_network_run_trains_saves_and_loads(tmp_path: Path) -> None:
    from xmr.bench.shapes import make_shapes_dataset
    from xmr.cli import main
    from xmr.models import load_model

    manifest = make_shapes_dataset(tmp_path / "data", copies=1)
    run, cache = tmp_path / "run", tmp_path / "cache"
    assert main(["-q", "train", str(manifest), "--out", str(run), "--cache-dir", str(cache), "--epochs", "1",
                 "--image-encoder", "efficientnet-lite0", "--finetune-image-blocks", "all",
                 "--text-encoder", "minilm-l6", "--finetune-text-layers", "all", "--finetune-text-length", "8",
                 "--layer-lr-decay", "0.8", "--embed-dim", "16", "--batch-size", "8", "--patience", "0"]) == 0
    saved = json.loads((run / "best" / "model.json").read_text())["config"]
    assert saved["image_tail"]["n_tail"] == "all" and saved["text_tail"]["n_tail"] == "all"
    assert saved["image_tail"]["trunk_id"] == "efficientnet-lite0-imagenet@224/input"
    assert saved["text_tail"]["trunk_id"] == "all-minilm-l6-v2/input-len8"
    finetune = json.loads((run / "run.json").read_text())["finetune"]
    assert finetune["image_blocks"] == "all" and finetune["text_layers"] == "all"
    assert json.loads((run / "run.json").read_text())["train"]["layer_lr_decay"] == 0.8
    model = load_model(run / "best")
    fresh = MiniLML6().make_tail(ALL, length=8).state_dict()
    trained = model.text_tail.state_dict()  # type: ignore[union-attr]
    assert any(not torch.equal(trained[k], fresh[k]) for k in fresh)  # the embeddings and layers moved
    assert main(["-q", "eval", str(run), "--cache-dir", str(cache)]) == 0


def test_trunk_encoders_follow_their_base_to_a_device(small: EfficientNetLite0, minilm: MiniLML6) -> None:
    """A trunk encoder placed on a runtime moves its base's network (``to_device``) and feeds it there; on the
    CPU the rows are the same as before placement."""
    from xmr.encoders.placement import place_encoder
    from xmr.runtime.device import Runtime

    cpu = torch.device("cpu")
    image, text = small.trunk_encoder(3), minilm.trunk_encoder(2, length=8)
    arrays, texts = _arrays(64), ["a red circle", "two blue squares"]
    before = image.encode_batch(arrays), text.encode_batch(texts)
    for trunk in (image, text):
        seen: list[torch.device] = []
        base_move = trunk.base.to_device
        trunk.base.to_device = lambda d, move=base_move: (seen.append(d), move(d))[-1]  # type: ignore[method-assign]
        trunk.to_device(cpu)
        assert seen == [cpu] and trunk.base.device == cpu
    place_encoder(image, Runtime(device=cpu, precision="fp32"))
    np.testing.assert_array_equal(image.encode_batch(arrays), before[0])
    np.testing.assert_array_equal(text.encode_batch(texts), before[1])
