"""The day-one pair with the tag signal (``xmr.encoders.conse_tags``) against a brute-force fused score.

The intended score is ``cos(text, ConSE image) + w * cos(q, s)`` (0 for the tag term where the query names no
class); the product serves it as the inner product of unit vectors. Each test computes the intended score by
explicit loops on small seeded inputs and checks that the product ranks, and scores up to the constant
``1 / (1 + w)``, exactly as it does: the bare functions, the encoders, and a run through ``xmr pretrained`` and
``xmr eval``. The classifier is the real EfficientNet-Lite0 at 64 px; the class texts, the text space
(``toy-text``) and the query expansion (words ``c<N>`` name class N) are generated, so nothing needs WordNet
or MiniLM.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from conse_reference import brute_metrics, evaluated_test_split, library_logits
from xmr.encoders import ENCODERS, create_text_encoder
from xmr.encoders.conse import ClassTexts, ConseConfig, ConseImageNet
from xmr.encoders.conse_tags import (
    DAYONE_TAGS,
    ConseTagsImage,
    TagSignalConfig,
    TagsText,
    conse_tags,
    fuse_images,
    fuse_texts,
    softmax_tags,
)
from xmr.errors import XmrError

from hostile import cli_ok

SIZE = 64
TEXTS = [ClassTexts((f"thing {i}",), f"thing {i}, a kind of {['cat', 'car', 'cup'][i % 3]}") for i in range(1000)]
SETTINGS = ConseConfig(top_k=5, temperature=0.7, gloss_weight=0.5, text_encoder="toy-text")


def cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return 0.0 if na == 0 or nb == 0 else float(np.dot(a, b) / (na * nb))


def l2_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_scores(img: np.ndarray, tags: np.ndarray, txt: np.ndarray, q: np.ndarray, w: float) -> np.ndarray:
    """The intended score of every (text, image) pair, one pair at a time. Shape: (T, N)."""
    return np.array([[cos(txt[t], img[i]) + w * cos(q[t], tags[i]) for i in range(len(img))]
                     for t in range(len(txt))])


def seeded(seed: int = 0, n: int = 7, t: int = 9, d: int = 8, c: int = 12) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(n, d))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt = rng.normal(size=(t, d))
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    tags = rng.dirichlet(np.ones(c) * 0.3, size=n)
    q = (rng.random((t, c)) < 0.2).astype(np.float32)
    q[[1, 4]] = 0  # queries naming no class
    return img, tags, txt, q


@pytest.mark.parametrize("w", [0.0, 0.3, 1.0, 7.5])
def test_the_fused_inner_product_is_the_intended_score(w: float) -> None:
    from xmr.models.heads import IdentityHead

    img, tags, txt, q = seeded()
    fi, ft = fuse_images(img, tags, w), fuse_texts(txt, q, w)
    assert fi.shape == (7, 8 + 12 + 1) and ft.shape == (9, 21)
    np.testing.assert_allclose(np.linalg.norm(fi, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(ft, axis=1), 1, atol=1e-6)
    head = IdentityHead(21, 21)  # what a run of the pair applies: a no-op on unit rows
    np.testing.assert_allclose(head(torch.from_numpy(fi)).numpy(), fi, atol=1e-7)
    want = brute_scores(img, tags, txt, q, w)
    got = (ft.astype(np.float64) @ fi.T.astype(np.float64)) * (1 + w)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_array_equal(np.argsort(-got, axis=1, kind="stable")[:, :3],
                                  np.argsort(-want, axis=1, kind="stable")[:, :3])
    if w == 0:  # the day-one cosine alone
        np.testing.assert_allclose(got, txt @ img.T, atol=1e-6)


def test_a_tag_weight_can_change_the_ranking() -> None:
    img, tags, txt, q = seeded(3)
    plain = np.argsort(-(fuse_texts(txt, q, 0.0) @ fuse_images(img, tags, 0.0).T), axis=1)
    tagged = np.argsort(-(fuse_texts(txt, q, 5.0) @ fuse_images(img, tags, 5.0).T), axis=1)
    assert (plain[:, 0] != tagged[:, 0]).any()  # the test could fail: the signal matters
    np.testing.assert_array_equal(plain[[1, 4]], tagged[[1, 4]])  # queries naming no class keep their order


def test_class_vectors_equal_loops() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(4, 30)) * 3
    for z, s in zip(logits, softmax_tags(logits), strict=True):
        np.testing.assert_allclose(s, np.exp(z) / np.exp(z).sum(), rtol=1e-9)
    for k, t in ((1, 1.0), (5, 0.7), (30, 2.0)):
        got = conse_tags(logits, top_k=k, temperature=t)
        for z, row in zip(logits, got, strict=True):
            p = np.exp(z / t) / np.exp(z / t).sum()
            top = sorted(range(len(p)), key=lambda c: (-p[c], c))[:k]
            want = np.zeros_like(p)
            want[top] = p[top] / p[top].sum()
            np.testing.assert_allclose(row, want, atol=1e-12)
    with pytest.raises(XmrError, match="all zero"):
        fuse_images(np.ones((1, 2)), np.zeros((1, 3)), 1.0)


class NumberTags:
    """The query expansion of these tests: each word ``c<N>`` names class N (a k-hot row over 1000 classes)."""

    tag_offsets = tuple(range(1000))

    def query_vectors(self, queries: Sequence[str]) -> np.ndarray:
        q = np.zeros((len(queries), 1000), np.float32)
        for row, text in enumerate(queries):
            q[row, [int(n) % 1000 for n in re.findall(r"\bc(\d+)\b", text)]] = 1.0
        return q


TAGS = TagSignalConfig(weight=2.0, image_tags="conse")


def test_the_encoders_fold_the_signal_in(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    batch = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(3)]
    plain = ConseImageNet(SETTINGS, image_size=SIZE, texts=TEXTS)
    plain.use_cache_root(tmp_path)
    for tags in (TAGS, TagSignalConfig(weight=0.5, image_tags="softmax")):
        enc = ConseTagsImage(SETTINGS, tags, image_size=SIZE, texts=TEXTS)
        enc.use_cache_root(tmp_path)
        logits = library_logits(enc, batch)
        s = conse_tags(logits, top_k=5, temperature=0.7) if tags.image_tags == "conse" else softmax_tags(logits)
        got = enc.encode_batch(batch)
        assert got.shape == (3, enc.dim) and enc.dim == 64 + 1000 + 1
        assert enc.table_path() == plain.table_path() and enc.table.shape == (1000, 64)  # the day-one class table
        np.testing.assert_allclose(got, fuse_images(plain.encode_batch(batch), s, tags.weight), atol=1e-5)
    text = TagsText("toy-text", TAGS, baseline=NumberTags())
    queries = ["a c3 and a c17", "nothing named", "c999"]
    toy = create_text_encoder("toy-text").encode_batch(queries).astype(np.float64)
    toy /= np.linalg.norm(toy, axis=1, keepdims=True)
    np.testing.assert_allclose(text.encode_batch(queries),
                               fuse_texts(toy, NumberTags().query_vectors(queries), 2.0), atol=1e-6)
    ids = {ConseTagsImage(SETTINGS, t, image_size=SIZE, texts=TEXTS).encoder_id
           for t in (TAGS, TagSignalConfig(weight=0.5), TagSignalConfig(weight=2.0, image_tags="softmax"))}
    assert len(ids) == 3 and plain.encoder_id not in ids
    assert text.encoder_id != TagsText("toy-text", TagSignalConfig(weight=0.5), baseline=NumberTags()).encoder_id


def test_the_registered_pair_shares_a_space_of_its_own() -> None:
    from xmr.encoders.base import shared_space
    from xmr.encoders.minilm import MINILM_SPACE

    image = ENCODERS.get("conse-imagenet-tags")(texts=TEXTS)
    text, stand_in = ENCODERS.get("minilm-l6-tags")(), ENCODERS.get("minilm-l6-int8-tags")()
    space = shared_space(image, text)
    assert space is not None and space.startswith(MINILM_SPACE + "+imagenet-tags-") and image.dim == 384 + 1001
    assert shared_space(image, stand_in) == space and text.query_stand_in == "minilm-l6-int8-tags"
    assert shared_space(image, create_text_encoder("minilm-l6")) is None  # the plain cosine is another space
    assert image.tags == text.tags == DAYONE_TAGS == TagSignalConfig(weight=5.0, image_tags="conse")  # tags.md
    other = TagSignalConfig(weight=DAYONE_TAGS.weight + 1)
    assert other.space(MINILM_SPACE) != space and other.space(None) is None


def test_bad_settings_are_refused_naming_the_field() -> None:
    for bad, needle in (({"weight": -1}, "weight must be a finite number >= 0"),
                        ({"weight": float("inf")}, "weight must be a finite number >= 0"),
                        ({"image_tags": "max"}, "image_tags must be 'softmax' or 'conse'"),
                        ({"tag_depth": -2}, "tag_depth must be None or an integer >= 0"),
                        ({"query_hypernym_depth": 1.5}, "query_hypernym_depth must be an integer >= 0")):
        with pytest.raises(XmrError, match=needle):
            TagSignalConfig(**bad)


class ToyTagsImage(ConseTagsImage):
    def __init__(self, **_: object) -> None:
        super().__init__(SETTINGS, TAGS, image_size=SIZE, texts=TEXTS)
        self.joint_space = "toy-tags"  # toy-text has no space of its own to build on


class ToyTagsText(TagsText):
    def __init__(self, **_: object) -> None:
        super().__init__("toy-text", TAGS, baseline=NumberTags())
        self.joint_space = "toy-tags"


@pytest.fixture
def toy_pair() -> Iterator[tuple[str, str]]:
    ENCODERS.add("conse-tags-toy-test", ToyTagsImage)
    ENCODERS.add("text-tags-toy-test", ToyTagsText)
    try:
        yield "conse-tags-toy-test", "text-tags-toy-test"
    finally:
        ENCODERS._items.pop("conse-tags-toy-test", None)
        ENCODERS._items.pop("text-tags-toy-test", None)


def test_a_pretrained_run_of_the_pair_scores_as_brute_force_through_xmr_eval(
        toy_pair: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from xmr.bench.shapes import make_shapes_dataset
    from xmr.data import read_manifest, write_manifest
    from xmr.encoders.image_io import image_to_array

    manifest = Path(make_shapes_dataset(tmp_path / "data"))
    items = read_manifest(manifest)
    enc = ConseImageNet(SETTINGS, image_size=SIZE, texts=TEXTS)
    top = library_logits(enc, [image_to_array(it.image, SIZE) for it in items]).argmax(axis=1)
    rng = np.random.default_rng(5)  # some texts name their image's top class, some a random one, some none
    named = [dataclasses.replace(it, texts=[t + ("", f" c{top[i]}", f" c{rng.integers(1000)}")[k % 3]
                                            for k, t in enumerate(it.texts)]) for i, it in enumerate(items)]
    write_manifest(named, manifest)
    run, cache = tmp_path / "run", tmp_path / "cache"
    cli_ok(["pretrained", "--out", run, "--image-encoder", toy_pair[0], "--text-encoder", toy_pair[1],
            "--manifest", manifest], capsys)
    cli_ok(["eval", run, "--split", "test", "--cache-dir", cache], capsys)
    got, test, texts, rel = evaluated_test_split(run, manifest)

    enc.use_cache_root(cache)
    logits = library_logits(enc, [image_to_array(it.image, SIZE) for it in test])
    img, tags = enc.from_logits(logits), conse_tags(logits, top_k=5, temperature=0.7)
    txt = create_text_encoder("toy-text").encode_batch(texts)
    sims = brute_scores(img, tags, txt, NumberTags().query_vectors(texts), TAGS.weight).T  # (images, texts)
    want = brute_metrics(sims, rel)
    for key in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"):
        assert got[key] == pytest.approx(want[key], abs=1e-6), key
    cosine = (img @ l2_rows(txt).T)  # the day-one score alone ranks otherwise: the tags reached the run
    alone = brute_metrics(cosine, rel)
    assert alone["rsum"] != pytest.approx(want["rsum"], abs=1e-3)
