"""CIDEr-D (xmr's, for rewards) against pycocoevalcap's Cider; BLEU/CIDEr through pycocoevalcap."""

from __future__ import annotations

import math
import random

import pytest

from xmr.errors import XmrError
from xmr.evaluation.captions import CiderD, caption_scores, caption_tokens, ngram_counts

Cider = pytest.importorskip("pycocoevalcap.cider.cider").Cider
WORDS = "a an the red blue green small large circle square triangle left right top bottom in at of".split()


def _fixture(seed: int, n_images: int = 30) -> tuple[dict[str, list[str]], dict[str, str]]:
    rng = random.Random(seed)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))

    refs = {f"im{i}": [sentence() for _ in range(rng.randint(1, 5))] for i in range(n_images)}
    cands = {k: (rng.choice(v) if rng.random() < 0.3 else sentence()) for k, v in refs.items()}
    return refs, cands


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cider_d_equals_pycocoevalcap_when_both_use_the_same_references(seed: int) -> None:
    refs, cands = _fixture(seed)
    mean, per_image = Cider().compute_score(refs, {k: [v] for k, v in cands.items()})
    ours = CiderD(list(refs.values())).scores(list(cands.values()), list(refs.values()))
    # the same arithmetic in another order: equal to 1e-9 relative (observed ~1e-15)
    assert ours == pytest.approx(list(per_image), rel=1e-9, abs=1e-12)
    assert sum(ours) / len(ours) == pytest.approx(mean, rel=1e-9)


def test_cider_d_by_hand_on_one_image_pair() -> None:
    # two images; the candidate repeats a reference of image 0. IDF of a gram in 1 of 2 docs = log 2,
    # in both = 0; the score is the mean over n of the cosine of the tf-idf vectors, x 10
    corpus = [["red circle"], ["blue circle"]]
    cider = CiderD(corpus)
    # 1-grams: "red" (idf log 2), "circle" (idf 0) -> vectors (log2, 0) both: cosine 1. 2-gram "red circle":
    # idf log 2 -> cosine 1. 3-, 4-grams: none (0). Mean over n = (1 + 1 + 0 + 0) / 4; x 10 = 5
    assert cider.score("red circle", ["red circle"]) == pytest.approx(5.0)
    # the length penalty: one more word, exp(-1 / 72) on every n
    longer = cider.score("red circle circle", ["red circle"])
    assert longer < 5.0 and longer > 0


def test_training_document_frequencies_make_a_reward_independent_of_the_batch() -> None:
    refs, cands = _fixture(3)
    corpus = list(refs.values())
    fixed = CiderD(corpus)
    keys = list(refs)[:4]
    alone = fixed.scores([cands[k] for k in keys], [refs[k] for k in keys])
    again = CiderD(corpus).scores([cands[k] for k in reversed(keys)], [refs[k] for k in reversed(keys)])
    assert alone == list(reversed(again))
    # per-batch document frequencies (pycocoevalcap's corpus mode) change the same captions' scores
    _, batch = Cider().compute_score({k: refs[k] for k in keys}, {k: [cands[k]] for k in keys})
    assert any(not math.isclose(a, b, rel_tol=1e-6) for a, b in zip(alone, batch))


def test_ngrams_and_tokens() -> None:
    assert caption_tokens("A Red-circle, in the TOP left!") == "a red circle in the top left"
    counts = ngram_counts("a a b")
    assert counts[("a",)] == 2 and counts[("a", "a")] == 1 and counts[("a", "a", "b")] == 1
    with pytest.raises(XmrError, match="non-empty"):
        CiderD([])
    with pytest.raises(XmrError, match="without reference"):
        CiderD([["a"]]).score("a", [])


def test_caption_scores_bleu_and_cider() -> None:
    refs = {"a": ["a red circle on the left", "one red circle at the left"],
            "b": ["a large blue square in the centre", "a big blue block in the middle"]}
    perfect = caption_scores({"a": "a red circle on the left", "b": "a large blue square in the centre"}, refs)
    assert set(perfect) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr"}
    assert perfect["BLEU-1"] == pytest.approx(100.0) and perfect["BLEU-4"] == pytest.approx(100.0)
    poor = caption_scores({"a": "a green triangle", "b": "a small red circle"}, refs)
    assert poor["BLEU-4"] < 1.0 and poor["CIDEr"] < perfect["CIDEr"]
    with pytest.raises(XmrError, match="one candidate for every image"):
        caption_scores({"a": "x"}, refs)
