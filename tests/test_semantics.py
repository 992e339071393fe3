"""xmr.semantics on a tiny WordNet-format fixture and a toy classifier (no packages, no model)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmr.data.imagenet_tags import TagBaseline, query_vectors, tag_scores
from xmr.data.wordnet import WordNet
from xmr.errors import XmrError
from xmr.semantics.labeller import ImageNetLabeller, grid_boxes, pseudo_text

HEADER = "  1 This is a tiny WordNet-format fixture for xmr's tests.  \n"
# name -> (lemmas, hypernym names)
NOUNS = {
    "entity": (["entity"], []),
    "animal": (["animal", "beast"], ["entity"]),
    "dog": (["dog", "domestic_dog"], ["animal"]),
    "retriever": (["retriever"], ["dog"]),
    "golden_retriever": (["golden_retriever"], ["retriever"]),
    "cat": (["cat", "true_cat"], ["animal"]),
    "mouse": (["mouse"], ["animal"]),
    "ice_cream": (["ice_cream", "icecream"], ["entity"]),
}


def write_wordnet(root: Path) -> dict[str, int]:
    """data.noun (offsets = byte positions), index.noun and noun.exc; returns name -> offset."""
    def line(name: str, offsets: dict[str, int]) -> str:
        lemmas, hypers = NOUNS[name]
        words = " ".join(f"{w} 0" for w in lemmas)
        ptrs = " ".join(f"@ {offsets[h]:08d} n 0000" for h in hypers)
        return (f"{offsets.get(name, 0):08d} 03 n {len(lemmas):02x} {words} {len(hypers):03d}"
                f"{' ' + ptrs if ptrs else ''} | gloss of {name}  \n")
    offsets = dict.fromkeys(NOUNS, 0)
    pos = len(HEADER.encode())
    for name in NOUNS:  # widths are fixed, so one pass with zeros gives the true offsets
        offsets[name] = pos
        pos += len(line(name, dict.fromkeys(NOUNS, 0)).encode())
    (root / "data.noun").write_text(HEADER + "".join(line(n, offsets) for n in NOUNS))
    senses: dict[str, list[int]] = {}
    for name, (lemmas, _) in NOUNS.items():
        for w in lemmas:
            senses.setdefault(w, []).append(offsets[name])
    rows = [f"{w} n {len(o)} 1 @ {len(o)} 0 {' '.join(f'{x:08d}' for x in o)}  \n"
            for w, o in sorted(senses.items())]
    (root / "index.noun").write_text(HEADER + "".join(rows))
    (root / "noun.exc").write_text("mice mouse\n")
    return offsets


@pytest.fixture()
def wn(tmp_path: Path) -> tuple[WordNet, dict[str, int]]:
    offsets = write_wordnet(tmp_path)
    return WordNet(tmp_path), offsets


def test_synset_lemmas_hypernyms(wn: tuple[WordNet, dict[str, int]]) -> None:
    w, off = wn
    s = w.synset(off["golden_retriever"])
    assert s.lemmas == ("golden_retriever",) and s.names == ("golden retriever",)
    assert s.wnid == f"n{off['golden_retriever']:08d}" and w.synset_from_wnid(s.wnid) == s
    assert [h.names[0] for h in w.hypernyms(s)] == ["retriever"]
    assert w.lemma_names(off["dog"]) == ("dog", "domestic dog")
    assert w.hypernym_closure(s) == {off["golden_retriever"]: 0, off["retriever"]: 1,
                                     off["dog"]: 2, off["animal"]: 3, off["entity"]: 4}
    assert set(w.hypernym_closure(s, max_depth=1)) == {off["golden_retriever"], off["retriever"]}
    assert w.synset(off["ice_cream"]).gloss == "gloss of ice_cream"


def test_morphy_and_synsets(wn: tuple[WordNet, dict[str, int]]) -> None:
    w, off = wn
    assert w.morphy("mice") == ["mouse"] and w.morphy("Dogs") == ["dog"]
    assert w.morphy("unicorns") == []
    assert [s.offset for s in w.synsets("domestic dogs")] == [off["dog"]]
    assert [s.offset for s in w.synsets("beasts")] == [off["animal"]]


def test_expand_query(wn: tuple[WordNet, dict[str, int]]) -> None:
    w, off = wn
    got = [s.offset for s in w.expand_query("Two golden retrievers and an ice cream with mice")]
    assert got == [off["golden_retriever"], off["ice_cream"], off["mouse"]]
    deeper = {s.offset for s in w.expand_query(["golden retriever"], hypernym_depth=1)}
    assert deeper == {off["golden_retriever"], off["retriever"]}


def test_missing_and_bad_offsets(tmp_path: Path, wn: tuple[WordNet, dict[str, int]]) -> None:
    with pytest.raises(XmrError, match="make data"):
        WordNet(tmp_path / "nowhere")
    with pytest.raises(XmrError, match="no WordNet synset"):
        wn[0].synset(3)
    with pytest.raises(XmrError, match="not a WordNet id"):
        wn[0].synset_from_wnid("dog")


# ---------------------------------------------------------------------------------------------
# labeller with a toy classifier: logits = 10 * mean colour of the crop (classes red/green/blue)

NAMES = ["red", "green", "blue", "grey"]


class ColourLogits:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        m = images.astype(np.float32).mean(axis=(1, 2)) / 255.0  # (B, 3)
        return 10.0 * np.concatenate([m, np.full((len(m), 1), 0.3)], axis=1)


def quadrants(size: int = 32) -> np.ndarray:
    """Top-left red, top-right green, bottom-left blue, bottom-right dark red."""
    im = np.zeros((size, size, 3), np.uint8)
    h = size // 2
    im[:h, :h] = (255, 0, 0)
    im[:h, h:] = (0, 255, 0)
    im[h:, :h] = (0, 0, 255)
    im[h:, h:] = (120, 0, 0)
    return im


def test_grid_boxes() -> None:
    assert grid_boxes(4, (2, 2)) == [(0, 0, 2, 2), (2, 0, 4, 2), (0, 2, 2, 4), (2, 2, 4, 4)]
    assert grid_boxes(10, (1, 2), window=0.8) == [(0, 1, 8, 9), (2, 1, 10, 9)]
    with pytest.raises(ValueError):
        grid_boxes(4, (0, 2))


def test_global_labels_sorted() -> None:
    lab = ImageNetLabeller(class_names=NAMES, logits_fn=ColourLogits(), image_size=16)
    (labels,) = lab.global_labels([quadrants()], top_k=3)
    probs = [p for _, p in labels]
    assert [n for n, _ in labels][0] == "red" and probs == sorted(probs, reverse=True)
    assert len(labels) == 3 and 0 < sum(probs) <= 1.0001


def test_regional_labels_ordered_by_confidence() -> None:
    lab = ImageNetLabeller(class_names=NAMES, logits_fn=ColourLogits(), image_size=16, batch_size=3)
    (labels,) = lab.regional_labels([quadrants()], grid=(2, 2), top_k=1)
    # pure red/green/blue cells are confident; the dark red cell is red again (deduplicated)
    assert sorted(n for n, _ in labels) == ["blue", "green", "red"]
    assert [p for _, p in labels] == sorted((p for _, p in labels), reverse=True)
    assert len({n for n, _ in labels}) == len(labels) == 3
    assert pseudo_text(labels) == " ".join(n for n, _ in labels)
    assert pseudo_text(labels, sep=", ", min_prob=1.1) == ""


def test_probabilities_cached(tmp_path: Path) -> None:
    paths = []
    for i, arr in enumerate([quadrants(), quadrants()[::-1]]):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    fn = ColourLogits()
    lab = ImageNetLabeller(class_names=NAMES, logits_fn=fn, image_size=16,
                           cache_dir=tmp_path / "cache")
    first = lab.regional_labels(paths + paths[:1])
    calls = fn.calls
    again = ImageNetLabeller(class_names=NAMES, logits_fn=fn, image_size=16,
                             cache_dir=tmp_path / "cache").regional_labels(paths)
    assert fn.calls == calls and again == first[:2]
    assert lab.probabilities(paths).shape == (2, 4)  # another layout: computed, cached apart
    assert lab.probabilities(paths, boxes=grid_boxes(16)).shape == (2, 4, 4)


def test_bad_logits_shape() -> None:
    lab = ImageNetLabeller(class_names=NAMES, logits_fn=lambda x: np.zeros((len(x), 3)),
                           image_size=8)
    with pytest.raises(XmrError, match="logits of shape"):
        lab.global_labels([quadrants()])


# ---------------------------------------------------------------------------------------------
# the s_g baseline


def test_tag_scores_against_loop() -> None:
    rng = np.random.default_rng(0)
    s, q = rng.random((7, 5)), (rng.random((3, 5)) > 0.5).astype(np.float32)
    ref = np.array([[sum(s[n, j] * q[m, j] for j in range(5)) for n in range(7)] for m in range(3)])
    np.testing.assert_allclose(tag_scores(s, q), ref, rtol=1e-6)
    with pytest.raises(ValueError):
        tag_scores(s, q[:, :4])


def test_query_vectors_hyponym_matching(wn: tuple[WordNet, dict[str, int]]) -> None:
    w, off = wn
    tags = [off["golden_retriever"], off["cat"], off["mouse"], off["ice_cream"]]
    q = query_vectors(["a dog", "cats and mice", "true cat", "unicorn", "a retriever"], tags, w)
    np.testing.assert_array_equal(q, [[1, 0, 0, 0], [0, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0],
                                      [1, 0, 0, 0]])
    shallow = query_vectors(["a dog"], tags, w, tag_depth=1)
    np.testing.assert_array_equal(shallow, [[0, 0, 0, 0]])  # dog is 2 steps above the tag
    base = TagBaseline(w, tags)
    s_g = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.2, 0.6, 0.1]], dtype=np.float32)
    queries = ["a dog", "cats and mice"]
    qv = base.query_vectors(queries)
    ref = [[sum(s_g[n, j] * qv[m, j] for j in range(4)) for n in range(2)] for m in range(2)]
    np.testing.assert_allclose(base.score(queries, s_g), ref, rtol=1e-6)


# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_labeller_on_an_emoji(tmp_path: Path) -> None:
    cache = Path(os.environ.get("XMR_CACHE_DIR", Path.home() / ".cache" / "xmr"))
    manifest = cache / "datasets" / "emoji" / "manifest.jsonl"
    if not manifest.is_file() or not Path("/usr/share/wordnet/data.noun").is_file():
        pytest.skip("needs the emoji dataset and WordNet (make data)")
    from xmr.data import read_manifest

    item = next(it for it in read_manifest(manifest) if it.texts[0] == "umbrella"
                and it.style == "google")
    lab = ImageNetLabeller(cache_dir=tmp_path)
    (glob,) = lab.global_labels([item.image], top_k=3)
    (reg,) = lab.regional_labels([item.image], grid=(2, 2), window=0.6)
    assert len(lab.class_names) == 1000 and lab.class_names[0] == "tench"
    assert glob[0][0] == "umbrella" and reg and pseudo_text(reg)
