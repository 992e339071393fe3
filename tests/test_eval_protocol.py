"""The retrieval protocol: text-query building, full and 1K-fold evaluation, the table."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from xmr.data.manifest import Item
from xmr.errors import XmrError
from xmr.evaluation.metrics import cross_modal_metrics
from xmr.evaluation.protocol import TABLE_KEYS, build_text_queries, evaluate_embeddings, format_table


def item(i: int | str, *texts: str) -> Item:
    return Item(id=str(i), image=f"/img/{i}.png", texts=tuple(texts))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def five_caption_case(rng: np.random.Generator, n_img: int,
                      d: int = 8) -> tuple[np.ndarray, np.ndarray, sparse.csr_matrix]:
    """Noisy paired embeddings with 5 unique captions per image, built via build_text_queries."""
    items = [item(i, *(f"caption {i}.{j}" for j in range(5))) for i in range(n_img)]
    texts, rel = build_text_queries(items)
    img = unit(rng.standard_normal((n_img, d)))
    owner = np.array([int(t.split()[1].split(".")[0]) for t in texts])
    txt = unit(img[owner] + 0.9 * rng.standard_normal((len(texts), d)))
    return img, txt, rel


# ---------------------------------------------------------------- build_text_queries


def test_unique_captions_give_the_standard_layout() -> None:
    items = [item(i, *(f"c{i}{j}" for j in range(5))) for i in range(3)]
    texts, rel = build_text_queries(items)
    assert texts == [f"c{i}{j}" for i in range(3) for j in range(5)]
    assert sparse.issparse(rel) and rel.dtype == bool and rel.shape == (3, 15)
    np.testing.assert_array_equal(rel.toarray(), np.kron(np.eye(3, dtype=bool), np.ones((1, 5), dtype=bool)))


def test_texts_per_item_takes_the_first_texts() -> None:
    items = [item(0, "a", "b", "c"), item(1, "d")]
    texts, rel = build_text_queries(items, texts_per_item=2)
    assert texts == ["a", "b", "d"]
    np.testing.assert_array_equal(rel.toarray(), [[1, 1, 0], [0, 0, 1]])


def test_shared_texts_are_one_query_relevant_to_all_their_items() -> None:
    items = [item("1F600/apple", "grinning face", "grin"),
             item("1F600/google", "grinning face", "grin"),
             item("1F601/apple", "beaming face", "grin", "beaming face")]  # duplicate within an item
    texts, rel = build_text_queries(items)
    assert texts == ["grinning face", "grin", "beaming face"]
    np.testing.assert_array_equal(rel.toarray(), [[1, 1, 0], [1, 1, 0], [0, 1, 1]])
    assert rel.nnz == 6


def test_build_text_queries_errors() -> None:
    with pytest.raises(XmrError, match="'b' has no texts"):
        build_text_queries([item("a", "x"), item("b")])
    with pytest.raises(XmrError, match="no items"):
        build_text_queries([])
    with pytest.raises(ValueError, match="texts_per_item"):
        build_text_queries([item("a", "x")], texts_per_item=0)


# ---------------------------------------------------------------- evaluate_embeddings


def test_full_mode_equals_metrics_of_the_similarity_matrix() -> None:
    img, txt, rel = five_caption_case(np.random.default_rng(0), 40)
    got = evaluate_embeddings(img, txt, rel)
    want = cross_modal_metrics(img @ txt.T, rel)
    assert got.pop("mode") == "full" and got.pop("n_folds") == 1
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v), k
    assert 0 < got["rsum"] < 600  # neither trivial nor perfect, so the comparison means something


def test_perfect_and_collapsed_embeddings() -> None:
    n = 20
    img = np.eye(n)
    txt = np.repeat(np.eye(n), 5, axis=0)
    rel = np.kron(np.eye(n, dtype=bool), np.ones((1, 5), dtype=bool))
    perfect = evaluate_embeddings(img, txt, rel)
    assert perfect["rsum"] == 600.0 and perfect["i2t_medr"] == 1.0 and perfect["t2i_medr"] == 1.0
    collapsed = evaluate_embeddings(np.ones((n, 4)) / 2, np.ones((5 * n, 4)) / 2, rel)
    assert collapsed["rsum"] == 0.0
    assert collapsed["i2t_medr"] == 5 * n - 5 + 1 and collapsed["t2i_medr"] == n


def brute_fold_mean(img: np.ndarray, txt: np.ndarray, rel: np.ndarray, fold_size: int,
                    n_folds: int) -> dict[str, float]:
    per_fold = []
    for f in range(n_folds):
        rows = list(range(f * fold_size, (f + 1) * fold_size))
        cols = [t for t in range(rel.shape[1]) if any(rel[i, t] for i in rows)]
        per_fold.append(cross_modal_metrics(img[rows] @ txt[cols].T, rel[np.ix_(rows, cols)]))
    return {k: float(np.mean([m[k] for m in per_fold])) for k in per_fold[0]}


def test_1k_mode_is_the_mean_of_full_mode_on_each_fold() -> None:
    img, txt, rel = five_caption_case(np.random.default_rng(1), 14, d=6)
    dense = rel.toarray()
    got = evaluate_embeddings(img, txt, rel, mode="1k", fold_size=4, n_folds=3)  # 2 images left over
    want = brute_fold_mean(img, txt, dense, 4, 3)
    assert (got["mode"], got["n_folds"], got["n_images"], got["n_texts"]) == ("1k", 3, 12, 60)
    for k in want:
        if k not in ("n_images", "n_texts"):
            assert got[k] == pytest.approx(want[k]), k
    per_fold = [cross_modal_metrics(img[a:a + 4] @ txt[5 * a:5 * a + 20].T, dense[a:a + 4, 5 * a:5 * a + 20])
                for a in (0, 4, 8)]
    assert got["rsum"] == pytest.approx(np.mean([m["rsum"] for m in per_fold]))
    assert got["rsum"] != pytest.approx(evaluate_embeddings(img, txt, rel)["rsum"])


def test_1k_mode_restricts_shared_texts_to_each_fold() -> None:
    rng = np.random.default_rng(2)
    items = [item(i, f"own {i}", f"shared {i % 3}") for i in range(8)]  # "shared k" spans folds
    texts, rel = build_text_queries(items)
    img = unit(rng.standard_normal((8, 5)))
    txt = unit(rng.standard_normal((len(texts), 5)))
    got = evaluate_embeddings(img, txt, rel, mode="1k", fold_size=4, n_folds=2)
    want = brute_fold_mean(img, txt, rel.toarray(), 4, 2)
    assert got["n_texts"] == (4 + 3) + (4 + 3)
    for k in want:
        if k not in ("n_images", "n_texts"):
            assert got[k] == pytest.approx(want[k]), k


def test_1k_mode_needs_enough_images() -> None:
    img, txt, rel = five_caption_case(np.random.default_rng(3), 9)
    with pytest.raises(XmrError, match="needs 2 folds x 5 = 10 images, got 9"):
        evaluate_embeddings(img, txt, rel, mode="1k", fold_size=5, n_folds=2)


def test_evaluate_embeddings_input_errors() -> None:
    img, txt, rel = five_caption_case(np.random.default_rng(4), 4)
    with pytest.raises(ValueError, match="mode"):
        evaluate_embeddings(img, txt, rel, mode="5k")
    with pytest.raises(XmrError, match="dimension"):
        evaluate_embeddings(img, txt[:, :3], rel)
    with pytest.raises(XmrError, match="relevance has shape"):
        evaluate_embeddings(img, txt[:-1], rel)
    bad = txt.copy()
    bad[7, 0] = np.nan
    with pytest.raises(XmrError, match="text embedding 7"):
        evaluate_embeddings(img, bad, rel)
    no_text = rel.toarray()
    no_text[2] = False
    with pytest.raises(XmrError, match="image 2 has no relevant text"):
        evaluate_embeddings(img, txt, no_text)
    no_image = rel.toarray()
    no_image[:, 3] = False
    with pytest.raises(XmrError, match="text 3 is relevant to no image"):
        evaluate_embeddings(img, txt, no_image)


# ---------------------------------------------------------------- format_table


def test_format_table_exact_layout() -> None:
    rows = {"clip-b32": {"i2t_r1": 50.04, "i2t_r5": 75.0, "i2t_r10": 83.36, "t2i_r1": 30.4,
                         "t2i_r5": 56.0, "t2i_r10": 66.8, "rsum": 361.6, "mode": "1k"},
            "x": {"i2t_r1": 1.0}}
    want = ("run       i2t R@1  i2t R@5  i2t R@10  t2i R@1  t2i R@5  t2i R@10   rsum\n"
            "clip-b32     50.0     75.0      83.4     30.4     56.0      66.8  361.6\n"
            "x             1.0        -         -        -        -         -      -")
    assert format_table(rows) == want
    assert format_table(rows, ["mode", "i2t_medr", "r5"], precision=2) == (
        "run       mode  i2t medr  R@5\n"
        "clip-b32    1k         -    -\n"
        "x            -         -    -")
    assert TABLE_KEYS[-1] == "rsum"


def test_format_table_of_evaluate_embeddings_output() -> None:
    img, txt, rel = five_caption_case(np.random.default_rng(5), 10)
    m = evaluate_embeddings(img, txt, rel)
    lines = format_table({"run-a": m, "run-b": m}).splitlines()
    assert len(lines) == 3 and len({len(line) for line in lines}) == 1
    assert lines[1].split()[-1] == f"{m['rsum']:.1f}"
