"""The day-one zero-shot image encoder (ConSE, ``xmr.encoders.conse``) against brute force.

The classifier is the real EfficientNet-Lite0 at a small image size (its own ``forward``, the
library's, gives the reference logits); the class texts are 1000 generated ones and the text space
``toy-text``'s, so no WordNet and no MiniLM are needed and each test takes seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conse_reference import brute_metrics, evaluated_test_split, library_logits
from xmr.encoders import ENCODERS, create_text_encoder
from xmr.encoders.conse import (
    DAYONE,
    ClassTexts,
    ConseConfig,
    ConseImageNet,
    conse_vectors,
    definition,
)
from xmr.errors import XmrError

from hostile import cli_ok

SIZE = 64  # EfficientNet-Lite0's input side here: any multiple of 32 runs, 224 is only slower
TEXTS = [ClassTexts((f"thing {i}", f"object number {i % 37}"), f"thing {i}, a kind of {['cat', 'car', 'cup'][i % 3]}")
         for i in range(1000)]
SETTINGS = ConseConfig(top_k=5, temperature=0.7, gloss_weight=0.5, text_encoder="toy-text")


def brute_table(texts: list[ClassTexts], gloss_weight: float) -> np.ndarray:
    """Each class's row by an explicit loop: normalise(normalise(mean of unit name vectors) + w * gloss)."""
    enc = create_text_encoder("toy-text")
    rows = []
    for c in texts:
        names = np.stack([v / np.linalg.norm(v) for v in enc.encode_batch(list(c.names))]).astype(np.float64)
        row = names.mean(axis=0)
        row /= np.linalg.norm(row)
        if c.gloss is not None and gloss_weight > 0:
            g = enc.encode_batch([c.gloss])[0].astype(np.float64)
            row = row + gloss_weight * g / np.linalg.norm(g)
        rows.append(row / np.linalg.norm(row))
    return np.stack(rows)


def brute_vectors(logits: np.ndarray, table: np.ndarray, top_k: int, temperature: float) -> np.ndarray:
    """ConSE Eq. 1 per image: numpy softmax, the top-k by a sort of (-p, class id), a loop over them."""
    out = []
    for z in np.asarray(logits, np.float64):
        p = np.exp(z / temperature - np.max(z / temperature))
        p /= p.sum()
        top = sorted(range(len(p)), key=lambda c: (-p[c], c))[:top_k]
        v = sum(p[c] * table[c] for c in top) / sum(p[c] for c in top)
        out.append(v / np.linalg.norm(v))
    return np.stack(out)


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(n)]


def test_conse_vectors_equal_a_loop_on_seeded_logits() -> None:
    rng = np.random.default_rng(1)
    logits, table = rng.normal(size=(6, 50)) * 3, rng.normal(size=(50, 8))
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    for k, t in ((1, 1.0), (3, 0.5), (10, 2.0), (50, 1.0)):
        np.testing.assert_allclose(conse_vectors(logits, table, top_k=k, temperature=t),
                                   brute_vectors(logits, table, k, t), atol=1e-6)
    # top-1 is the best class's own row
    np.testing.assert_allclose(conse_vectors(logits, table, top_k=1, temperature=1.0),
                               table[logits.argmax(axis=1)], atol=1e-6)


def test_the_encoder_equals_brute_force_on_real_efficientnet(tmp_path: Path) -> None:
    enc = ConseImageNet(SETTINGS, image_size=SIZE, texts=TEXTS)
    enc.use_cache_root(tmp_path)
    table = brute_table(TEXTS, SETTINGS.gloss_weight)
    np.testing.assert_allclose(enc.table, table, atol=2e-6)
    batch = images(3)
    logits = library_logits(enc, batch)
    got = enc.encode_batch(batch)
    assert got.shape == (3, enc.dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, brute_vectors(logits, table, SETTINGS.top_k, SETTINGS.temperature), atol=1e-5)


def test_the_class_table_is_cached_atomically_and_recomputed_when_damaged(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    enc = ConseImageNet(SETTINGS, image_size=SIZE, texts=TEXTS[:1000])
    enc.use_cache_root(tmp_path)
    first = enc.table
    path = enc.table_path()
    assert path.parent == tmp_path / "conse" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    again = ConseImageNet(SETTINGS, image_size=SIZE, texts=TEXTS)
    again.use_cache_root(tmp_path)
    with monkeypatch.context() as m:
        m.setattr("xmr.encoders.conse.class_table", lambda *a, **k: pytest.fail("recomputed a cached table"))
        np.testing.assert_array_equal(again.table, first)
    path.write_bytes(b"garbage")
    third = ConseImageNet(SETTINGS, image_size=SIZE, texts=TEXTS)
    third.use_cache_root(tmp_path)
    np.testing.assert_array_equal(third.table, first)
    np.testing.assert_array_equal(np.load(path), first)


def test_every_setting_changes_the_encoder_id_and_text_settings_the_table_key(tmp_path: Path) -> None:
    def made(cfg: ConseConfig, texts: list[ClassTexts] = TEXTS, size: int = SIZE) -> ConseImageNet:
        enc = ConseImageNet(cfg, image_size=size, texts=texts)
        enc.use_cache_root(tmp_path)
        return enc

    base = made(SETTINGS)
    changes = {"top_k": 7, "temperature": 1.5, "lemmas": "first", "prompts": "none", "gloss_weight": 1.0,
               "text_encoder": "minilm-l6"}
    assert set(changes) | {"image_encoder"} == {f.name for f in dataclasses.fields(ConseConfig)}
    ids = {base.encoder_id}
    for field, value in changes.items():
        other = made(dataclasses.replace(SETTINGS, **{field: value}))
        ids.add(other.encoder_id)
        table_changes = field not in ("top_k", "temperature")
        assert (other.table_path() != base.table_path()) == table_changes, field
    ids.add(made(SETTINGS, texts=[*TEXTS[:-1], ClassTexts(("something else",))]).encoder_id)
    ids.add(made(SETTINGS, size=96).encoder_id)
    assert len(ids) == len(changes) + 3
    assert made(SETTINGS).encoder_id == base.encoder_id  # and stable


def test_bad_settings_are_refused_naming_the_field() -> None:
    for bad, needle in (({"top_k": 0}, "top_k must be an integer in 1..1000"),
                        ({"temperature": 0}, "temperature must be a positive number"),
                        ({"lemmas": "some"}, "lemmas must be 'first' or 'all'"),
                        ({"prompts": "nope"}, "prompts must be one of none, photo, ensemble"),
                        ({"gloss_weight": -1}, "gloss_weight must be a number >= 0")):
        with pytest.raises(XmrError, match=needle):
            ConseConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(XmrError, match="image encoder .toy-image. has no classifier"):
        ConseImageNet(ConseConfig(image_encoder="toy-image"), texts=TEXTS)


def test_definition_drops_wordnet_examples() -> None:
    assert definition('a domestic dog; "the dog barked all night"') == "a domestic dog"
    assert definition("a large cat; found in Africa") == "a large cat; found in Africa"


def test_registered_day_one_encoder_lives_in_minilm_space() -> None:
    from xmr.encoders.base import encoder_names

    enc = ENCODERS.get("conse-imagenet")(texts=TEXTS)
    assert enc.config == DAYONE == ConseConfig() and enc.dim == 384 and enc.modality == "image"
    assert (DAYONE.top_k, DAYONE.temperature, DAYONE.lemmas, DAYONE.prompts, DAYONE.gloss_weight) == \
        (20, 2.0, "all", "photo", 1.0)  # benchmarks/results/dayone/dayone.md chose them on val
    assert {"conse-imagenet", "conse-imagenet-names"} <= set(encoder_names("image"))
    from xmr.encoders import create_text_encoder
    from xmr.encoders.base import shared_space
    from xmr.encoders.minilm import MINILM_SPACE

    # a run on it needs no training: it shares MiniLM's space (xmr pretrained, xmr index --images FOLDER)
    assert shared_space(enc, create_text_encoder("minilm-l6")) == MINILM_SPACE
    assert shared_space(enc, create_text_encoder("toy-text")) is None


class ToyConse(ConseImageNet):
    """ConSE over the generated class texts in toy-text's space (registered by the fixture below)."""

    def __init__(self, **_: object) -> None:
        super().__init__(SETTINGS, image_size=SIZE, texts=TEXTS)


@pytest.fixture
def toy_conse() -> Iterator[str]:
    ENCODERS.add("conse-toy-test", ToyConse)
    try:
        yield "conse-toy-test"
    finally:
        ENCODERS._items.pop("conse-toy-test", None)


def test_a_run_on_it_scores_as_brute_force_through_xmr_eval(toy_conse: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from xmr.bench.shapes import make_shapes_dataset
    from xmr.encoders.image_io import image_to_array

    manifest = make_shapes_dataset(tmp_path / "data")
    run, cache = tmp_path / "run", tmp_path / "cache"
    cli_ok(["train", manifest, "--out", run, "--image-encoder", toy_conse, "--text-encoder", "toy-text",
            "--head", "identity", "--embed-dim", "64", "--epochs", "1", "--batch-size", "16", "--patience", "0",
            "--cache-dir", cache], capsys)
    cli_ok(["eval", run, "--split", "test", "--cache-dir", cache], capsys)
    got, items, texts, rel = evaluated_test_split(run, manifest)

    logits = library_logits(ToyConse(), [image_to_array(it.image, SIZE) for it in items])
    img = brute_vectors(logits, brute_table(TEXTS, SETTINGS.gloss_weight), SETTINGS.top_k, SETTINGS.temperature)
    txt = create_text_encoder("toy-text").encode_batch(texts).astype(np.float64)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    want = brute_metrics(img @ txt.T, rel)
    for key in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"):
        assert got[key] == pytest.approx(want[key], abs=1e-6), key


def test_setting_up_a_day_one_run_installs_wordnet_when_missing(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`xmr pretrained` / `xmr index --images FOLDER` prepare the day-one encoder's data: Debian's WordNet
    packages through apt-get when their files are missing (never with texts given, never into a folder the
    user named with $XMR_WORDNET_DIR, which is only checked)."""
    import xmr.data.debian as debian
    from xmr.data.wordnet import WORDNET_PACKAGES
    from xmr.workflows.pretrained import pretrained_run

    calls: list[tuple[tuple[str, ...], bool]] = []
    monkeypatch.setattr(debian, "ensure_debian_packages",
                        lambda names, *, present, what: calls.append((tuple(names), bool(present()))))
    monkeypatch.delenv("XMR_WORDNET_DIR", raising=False)
    monkeypatch.setattr("xmr.data.wordnet.DEFAULT_DIRS", (str(tmp_path / "no-wordnet"),))
    ConseImageNet(SETTINGS, image_size=SIZE, texts=TEXTS).ensure_data()
    assert calls == []  # its texts were given: nothing to read
    ENCODERS.get("conse-imagenet")().ensure_data()
    assert calls == [(WORDNET_PACKAGES, False)]  # asked while the files are missing
    pretrained_run(tmp_path / "run")  # the day-one pair: both sides read WordNet (class names, query expansion)
    assert len(calls) == 3 and (tmp_path / "run" / "run.json").is_file()
    monkeypatch.setenv("XMR_WORDNET_DIR", str(tmp_path / "mine"))
    with pytest.raises(XmrError, match="WordNet 3.0 not found") as e:
        ENCODERS.get("conse-imagenet")().ensure_data()
    assert "\n" not in str(e.value) and len(calls) == 3
