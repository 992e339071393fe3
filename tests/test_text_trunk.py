"""The frozen trunk / trainable tail split of all-MiniLM-L6-v2 and its float16 token-state cache.

Reference: the library model end to end -- ``MiniLML6.encode_batch`` (sentence-transformers'
own tokenisation, padded to the longest text, then BertModel -> Pooling -> Normalize) for the
embeddings, ``BertModel(..., output_hidden_states=True)`` for the trunk's token states, and, for
gradients, a deep copy of the SentenceTransformer with only its last N layers trainable, run on
its own ``preprocess`` output. The fast tests build a tiny random BertLayer (no weights).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from xmr.encoders import TextTail, TextTrunkEncoder, check_tail_layers, create_encoder, encode_texts
from xmr.encoders.minilm import MiniLML6
from xmr.encoders.text_trunk import check_length
from xmr.errors import XmrError

N_TAILS = (1, 3, 6)
TEXTS = ["a red circle", "grinning face", "flag: St. Vincent & Grenadines", "a photo of a dog on a mat", "x"]
# Measured on TEXTS (5 texts of 3..12 tokens; |state| <= 9.8), max |error| vs the library:
#  float32: embeddings 1.6e-7..1.7e-7; gradients (all tail parameters) relative L2 4e-7..7e-7,
#    worst single value 4.9e-7 of the largest gradient.
#  float16 cache: embeddings 2.5e-5 (N = 6) .. 5.5e-5 (N = 1), min cosine 0.9999999;
#    gradients relative L2 1.0e-4 (N = 6) .. 3.3e-4 (N = 1), worst tensor 4.7e-4 .. 5.5e-4.
FP32_ATOL = 1e-5
FP16_ATOL = 5e-4
FP16_COS = 0.9999
FP32_GRAD_RTOL = 1e-5
FP16_GRAD_RTOL = 3e-3
FP16_GRAD_WORST = 5e-3  # relative L2 of the worst parameter tensor (the key biases excluded, below)


@pytest.fixture(scope="module")
def enc() -> MiniLML6:
    return MiniLML6()  # the tests never train it: make_tail copies, trunk runs under no_grad


def _projection() -> torch.Tensor:
    return torch.randn(384, 8, generator=torch.Generator().manual_seed(0))


def _tail_grads(tail: TextTail, states: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    (tail(states, mask) @ _projection()).sum().backward()
    return {k: p.grad for k, p in tail.named_parameters() if p.grad is not None}


def _reference_grads(enc: MiniLML6, texts: list[str], n_tail: int) -> dict[str, torch.Tensor]:
    """d loss / d (last n_tail layers) through the library's SentenceTransformer, named as the tail names them."""
    ref = copy.deepcopy(enc.model).eval()  # eval: no dropout, as the tail in eval mode
    layers = ref[0].auto_model.encoder.layer
    for p in ref.parameters():
        p.requires_grad_(False)
    for p in layers[6 - n_tail:].parameters():
        p.requires_grad_(True)
    emb = ref(ref.preprocess(texts))["sentence_embedding"]
    (emb @ _projection()).sum().backward()
    return {f"layers.{j}.{k}": p.grad for j, layer in enumerate(layers[6 - n_tail:])
            for k, p in layer.named_parameters()}


def _flat(grads: dict[str, torch.Tensor], keys: list[str]) -> torch.Tensor:
    return torch.cat([grads[k].flatten() for k in keys])


@pytest.mark.slow
@pytest.mark.parametrize("n_tail", N_TAILS)
def test_tail_of_trunk_is_the_frozen_embedding(enc: MiniLML6, tmp_path: Path, n_tail: int) -> None:
    full = enc.encode_batch(TEXTS)
    ids, mask = enc.tokenize(TEXTS, 64)
    assert ids.shape == mask.shape == (5, 64) and int(mask.sum(1).max()) < 20  # well under the length
    with torch.no_grad():
        hidden = enc.bert(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    states = enc.trunk(ids, mask, n_tail)
    assert states.shape == (5, 64, 384) and not states.requires_grad
    torch.testing.assert_close(states, hidden[6 - n_tail], rtol=0, atol=1e-6)
    tail = enc.make_tail(n_tail)
    assert not tail.training and tail.n_tail == n_tail and all(p.requires_grad for p in tail.parameters())
    np.testing.assert_allclose(tail(states, mask).detach().numpy(), full, rtol=0, atol=FP32_ATOL)
    untrimmed = copy.deepcopy(tail)
    untrimmed.trim = False  # all 64 positions through the layers: the same up to rounding
    torch.testing.assert_close(untrimmed(states, mask), tail(states, mask), rtol=0, atol=1e-6)

    trunk = TextTrunkEncoder(enc, n_tail)
    assert trunk.encoder_id == f"all-minilm-l6-v2/trunk-{6 - n_tail}-len64" and trunk.dim == 64 * 385
    assert trunk.describe()["dtype"] == "float16"
    res = encode_texts(trunk, TEXTS, cache_dir=tmp_path / "cache")
    assert res.feats.dtype == np.float16 and res.feats.shape == (5, 64 * 385) and res.ok.all()
    again = encode_texts(trunk, TEXTS[::-1], cache_dir=tmp_path / "cache")  # from the cache, still float16
    assert again.n_encoded == 0 and again.feats.dtype == np.float16
    np.testing.assert_array_equal(again.feats, res.feats[::-1])
    s16, m16 = trunk.make_tail().unflatten(res.feats)
    assert s16.dtype == torch.float32 and m16.dtype == torch.bool
    torch.testing.assert_close(m16, mask.bool(), rtol=0, atol=0)
    torch.testing.assert_close(s16, states.half().float(), rtol=0, atol=0)
    cached = tail(s16, m16).detach().numpy()
    err, cos = np.abs(cached - full).max(), (cached * full).sum(1).min()
    print(f"N={n_tail}: float32 max|err| {np.abs(tail(states, mask).detach().numpy() - full).max():.2g}, "
          f"float16 max|err| {err:.2g}, min cosine {cos:.8f}")
    assert err <= FP16_ATOL and cos >= FP16_COS


@pytest.mark.slow
@pytest.mark.parametrize("n_tail", N_TAILS)
def test_tail_gradients_match_the_library_model(enc: MiniLML6, n_tail: int) -> None:
    ref = _reference_grads(enc, TEXTS, n_tail)
    ids, mask = enc.tokenize(TEXTS, 64)
    states = enc.trunk(ids, mask, n_tail)
    exact = _tail_grads(enc.make_tail(n_tail), states, mask)
    keys = sorted(ref)
    assert set(exact) == set(ref) and len(ref) == 16 * n_tail
    scale = max(float(g.abs().max()) for g in ref.values())
    for k in keys:  # per tensor, against the largest gradient: the key biases' gradients are 0 + rounding
        np.testing.assert_allclose(exact[k].numpy(), ref[k].numpy(), rtol=1e-4, atol=1e-5 * scale, err_msg=k)
    flat = _flat(ref, keys)
    assert float((_flat(exact, keys) - flat).norm() / flat.norm()) <= FP32_GRAD_RTOL
    # softmax is invariant to a per-query shift: d loss / d (key bias) is 0 analytically
    assert all(float(ref[k].abs().max()) <= 1e-5 * scale for k in keys if k.endswith("attention.self.key.bias"))

    half = _tail_grads(enc.make_tail(n_tail), states.half().float(), mask)  # the float16 cache's states
    rel = float((_flat(half, keys) - flat).norm() / flat.norm())
    worst = max(float((half[k] - ref[k]).norm() / ref[k].norm()) for k in keys
                if not k.endswith("attention.self.key.bias"))
    print(f"N={n_tail}: float16 gradients relative L2 {rel:.2g}, worst tensor {worst:.2g}")
    assert rel <= FP16_GRAD_RTOL and worst <= FP16_GRAD_WORST


@pytest.mark.slow
def test_a_cached_row_does_not_depend_on_its_batch(enc: MiniLML6) -> None:
    trunk = TextTrunkEncoder(enc, 2, length=16)
    long = "the quick brown fox jumps over the lazy dog and runs far away into the woods"  # > 16 tokens
    together = trunk.encode_batch(["grinning face", long, "x"])
    alone = trunk.encode_batch(["grinning face"])
    assert together.shape == (3, 16 * 385) and alone.shape == (1, 16 * 385)
    n = 16 * 384
    np.testing.assert_array_equal(together[0, n:], alone[0, n:])  # the mask
    # measured bit-identical; at most one float16 rounding step apart if the BLAS blocks a batch differently
    np.testing.assert_allclose(together[0].astype(np.float32), alone[0].astype(np.float32), rtol=2**-10, atol=1e-7)
    assert together[1, n:].sum() == 16  # the long text fills the length: truncated, [SEP] last
    ids, _ = enc.tokenize([long], 16)
    assert int(ids[0, -1]) == enc.model.tokenizer.sep_token_id


@pytest.mark.slow
def test_dropout_runs_in_train_mode_only_and_the_frozen_encoder_is_untouched(enc: MiniLML6) -> None:
    ids, mask = enc.tokenize(TEXTS, 32)
    states = enc.trunk(ids, mask, 2)
    tail = enc.make_tail(2, length=32)
    plain = tail(states, mask)
    tail.train()
    torch.manual_seed(0)
    a, b = tail(states, mask), tail(states, mask)
    assert not torch.allclose(a, b) and not torch.allclose(a, plain)  # dropout 0.1 inside the copied layers
    tail.eval()
    torch.testing.assert_close(tail(states, mask), plain, rtol=0, atol=0)
    with torch.no_grad():
        tail.layers[0].output.dense.weight.mul_(0.5)  # "trained"
    assert not torch.allclose(tail(states, mask), plain)
    assert not enc.bert.training
    np.testing.assert_allclose(enc.make_tail(2, length=32)(states, mask).detach().numpy(), enc.encode_batch(TEXTS),
                               atol=FP32_ATOL)


@pytest.mark.slow
def test_tail_state_dict_and_describe_are_stable(enc: MiniLML6) -> None:
    tail = TextTrunkEncoder(enc, 2, length=16).make_tail()
    keys = list(tail.state_dict())
    assert keys[0] == "layers.0.attention.self.query.weight" and "layers.1.output.LayerNorm.bias" in keys
    assert len(keys) == 32 and not any(k.startswith("layers.2.") for k in keys)
    with torch.no_grad():
        tail.layers[1].intermediate.dense.bias.add_(0.1)
    other = enc.make_tail(2, length=16)
    other.load_state_dict(tail.state_dict())
    ids, mask = enc.tokenize(TEXTS, 16)
    states = enc.trunk(ids, mask, 2)
    torch.testing.assert_close(other(states, mask), tail(states, mask))
    assert json.loads(json.dumps(tail.describe())) == {
        "encoder_id": "all-minilm-l6-v2", "trunk_id": "all-minilm-l6-v2/trunk-4-len16", "n_tail": 2,
        "length": 16, "hidden": 384, "dim": 384}


@pytest.mark.parametrize("n", [-1, 0, 7, 2.5, True, "3"])
def test_tail_layers_out_of_range_are_one_line(n: object) -> None:
    enc = MiniLML6()  # refused before any weights load
    ids = torch.zeros(1, 4, dtype=torch.long)
    for call in (lambda: enc.make_tail(n), lambda: enc.trunk(ids, ids, n),
                 lambda: TextTrunkEncoder(enc, n)):
        with pytest.raises(XmrError, match="has 6 layers, so N must be 1..6") as e:
            call()
        assert "\n" not in str(e.value) and repr(n) in str(e.value)
    assert enc._model is None
    assert check_tail_layers(1, 6) == 1 and check_tail_layers(6, 6) == 6


@pytest.mark.parametrize("length", [1, 257, 64.0, "64"])
def test_bad_token_lengths_are_one_line(length: object) -> None:
    enc = MiniLML6()
    for call in (lambda: TextTrunkEncoder(enc, 1, length), lambda: enc.tokenize(["a"], length),
                 lambda: enc.make_tail(1, length=length)):
        with pytest.raises(XmrError, match=r"token length .* must be an int in 2\.\.256") as e:
            call()
        assert "\n" not in str(e.value)
    assert enc._model is None and check_length(256, 256) == 256


@pytest.mark.parametrize("name", ["toy-text", "efficientnet-lite0"])
def test_other_encoders_are_refused(name: str) -> None:
    base = create_encoder(name)
    with pytest.raises(XmrError, match=re.escape(f"{base.encoder_id!r} cannot be split")) as e:
        TextTrunkEncoder(base, 1)
    assert "\n" not in str(e.value) and "(minilm-l6 can)" in str(e.value)


# -- a tiny random BertLayer (no weights) ---------------------------------------------------------

def _tiny_tail(attn: str, *, trim: bool = True, length: int = 6) -> TextTail:
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertLayer

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=8, num_attention_heads=2, intermediate_size=16, num_hidden_layers=2)
    cfg._attn_implementation = attn
    layers = [BertLayer(cfg, layer_idx=i) for i in range(2)]
    return TextTail(layers, config=cfg, encoder_id="tiny", trunk_id="tiny/trunk-0-len6", length=length,
                    hidden=8, trim=trim).eval()


def _tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    states = torch.randn(3, 6, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]])
    return states, mask


def test_tail_masks_padding_alike_for_every_attention_implementation() -> None:
    states, mask = _tiny_batch()
    sdpa = _tiny_tail("sdpa")
    out = sdpa(states, mask)
    assert out.shape == (3, 8)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    eager = _tiny_tail("eager")
    eager.load_state_dict(sdpa.state_dict())
    torch.testing.assert_close(eager(states, mask), out, rtol=1e-6, atol=1e-6)
    untrimmed = _tiny_tail("sdpa", trim=False)
    torch.testing.assert_close(untrimmed(states, mask), out, rtol=1e-6, atol=1e-6)
    # padded positions are never read: other values there change nothing
    noisy = torch.where(mask.bool()[..., None], states, 100 * torch.randn_like(states))
    for tail in (sdpa, eager, untrimmed):
        torch.testing.assert_close(tail(noisy, mask), out, rtol=1e-5, atol=1e-5)
    # each text alone (its own trimmed length) gives its row of the batch
    for i in range(3):
        torch.testing.assert_close(sdpa(states[i:i + 1], mask[i:i + 1])[0], out[i], rtol=1e-5, atol=1e-6)


def test_unflatten_reads_the_cached_row_layout() -> None:
    tail = _tiny_tail("sdpa")
    states, mask = _tiny_batch()
    rows = torch.cat([states.reshape(3, -1), mask.float()], dim=1).half().numpy()  # TextTrunkEncoder's layout
    s, m = tail.unflatten(rows)
    assert s.dtype == torch.float32 and m.dtype == torch.bool and s.shape == (3, 6, 8)
    torch.testing.assert_close(s, states.half().float(), rtol=0, atol=0)
    torch.testing.assert_close(m, mask.bool(), rtol=0, atol=0)
    with pytest.raises(XmrError, match=r"expected text trunk rows of shape \(B, 54\)"):
        tail.unflatten(rows[:, :-1])
    with pytest.raises(XmrError, match=r"expected token states \(B, L, 8\) and a mask \(B, L\)"):
        tail(states, mask[:, :5])
    with pytest.raises(XmrError, match="expected token states"):
        tail(states[..., :4], mask)
