"""Every metric in xmr.evaluation.metrics against a brute-force loop on small seeded inputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import sparse

from xmr.evaluation.metrics import (
    PRIMARY_METRIC,
    average_precision,
    average_precisions,
    cmc,
    cross_modal_metrics,
    cross_modal_ranks,
    cross_modal_ranks_from_embeddings,
    first_relevant_ranks,
    label_retrieval_metrics,
    mean_average_precision,
    rank_metrics,
)

# ---------------------------------------------------------------- brute-force references


def brute_first_rank(scores: np.ndarray, rel: np.ndarray) -> int:
    """Sort the gallery (score descending, non-relevant first on ties); find the first hit."""
    order = sorted(range(len(scores)), key=lambda g: (-scores[g], bool(rel[g])))
    return next(pos for pos, g in enumerate(order) if rel[g])


def brute_ranks(scores: np.ndarray, rel: np.ndarray) -> np.ndarray:
    return np.array([brute_first_rank(scores[q], rel[q]) for q in range(scores.shape[0])])


def brute_ap(scores: np.ndarray, rel: np.ndarray) -> float:
    order = sorted(range(len(scores)), key=lambda g: (-scores[g], bool(rel[g])))
    hits, total = 0, 0.0
    for pos, g in enumerate(order, start=1):
        if rel[g]:
            hits += 1
            total += hits / pos
    return total / hits


def brute_rank_metrics(ranks: list[int], ks: tuple[int, ...]) -> dict[str, float]:
    n = len(ranks)
    out = {f"r{k}": 100.0 * sum(1 for r in ranks if r + 1 <= k) / n for k in ks}
    srt = sorted(ranks)
    median = srt[n // 2] if n % 2 else (srt[n // 2 - 1] + srt[n // 2]) / 2
    out["medr"] = float(int(median) + 1)
    out["meanr"] = sum(ranks) / n + 1
    return out


def random_case(rng: np.random.Generator, n_q: int, n_g: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    """Scores (many ties if ``ties``) and a relevance matrix with >= 1 relevant item per row."""
    scores = rng.integers(0, 4, size=(n_q, n_g)).astype(float) if ties else rng.standard_normal((n_q, n_g))
    rel = rng.random((n_q, n_g)) < 0.2
    rel[np.arange(n_q), rng.integers(0, n_g, size=n_q)] = True
    return scores, rel


def vsepp_i2t_t2i(sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks as computed by VSE++ ``evaluation.py`` (5 captions per image, caption 5i+j -> image i)."""
    npts = sims.shape[0]
    i2t = np.zeros(npts)
    for index in range(npts):
        inds = np.argsort(sims[index])[::-1]
        i2t[index] = min(np.where(inds == i)[0][0] for i in range(5 * index, 5 * index + 5))
    t2i = np.zeros(5 * npts)
    for index in range(npts):
        for i in range(5):
            inds = np.argsort(sims[:, 5 * index + i])[::-1]
            t2i[5 * index + i] = np.where(inds == index)[0][0]
    return i2t, t2i


# ---------------------------------------------------------------- first_relevant_ranks


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("as_sparse", [False, True])
@pytest.mark.parametrize("chunk_rows", [None, 1, 3])
def test_first_relevant_ranks_matches_brute_force(ties: bool, as_sparse: bool, chunk_rows: int | None) -> None:
    rng = np.random.default_rng(0)
    scores, rel = random_case(rng, 11, 17, ties)
    relevance = sparse.csr_matrix(rel) if as_sparse else rel
    got = first_relevant_ranks(scores, relevance, chunk_rows=chunk_rows)
    np.testing.assert_array_equal(got, brute_ranks(scores, rel))


def test_first_relevant_ranks_hand_case() -> None:
    scores = np.array([[0.9, 0.5, 0.1, 0.7],
                       [0.2, 0.2, 0.2, 0.2],
                       [0.1, 0.4, 0.3, 0.4]])
    rel = np.array([[0, 0, 1, 0],   # 0.1 is last of 4 -> rank 3
                    [1, 1, 0, 0],   # all tied: 2 non-relevant at >= 0.2 -> rank 2
                    [0, 1, 1, 0]],  # best relevant 0.4 ties with non-relevant 0.4 -> rank 1
                   dtype=bool)
    np.testing.assert_array_equal(first_relevant_ranks(scores, rel), [3, 2, 1])


def test_constant_scores_get_no_credit() -> None:
    ranks = first_relevant_ranks(np.zeros((6, 6)), np.eye(6, dtype=bool))
    np.testing.assert_array_equal(ranks, np.full(6, 5))
    assert rank_metrics(ranks)["r5"] == 0.0


def test_first_relevant_ranks_accepts_int_scores_and_other_sparse_formats() -> None:
    scores = np.array([[3, 1, 2], [0, 5, 5]])
    rel = sparse.coo_array(np.array([[0, 0, 1], [0, 1, 0]]))
    np.testing.assert_array_equal(first_relevant_ranks(scores, rel), [1, 1])


def test_query_without_relevant_item_is_named() -> None:
    rel = np.eye(4, dtype=bool)
    rel[2, 2] = False
    with pytest.raises(ValueError, match="query 2 has no relevant"):
        first_relevant_ranks(np.zeros((4, 4)), rel, chunk_rows=2)


def test_first_relevant_ranks_rejects_nan_and_bad_shapes() -> None:
    scores = np.zeros((3, 3))
    scores[1, 0] = np.nan
    with pytest.raises(ValueError, match="query 1 contain NaN"):
        first_relevant_ranks(scores, np.eye(3, dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        first_relevant_ranks(np.zeros((3, 3)), np.eye(4, dtype=bool))
    with pytest.raises(ValueError, match="chunk_rows"):
        first_relevant_ranks(np.zeros((3, 3)), np.eye(3, dtype=bool), chunk_rows=0)


# ---------------------------------------------------------------- rank_metrics, cmc


def test_rank_metrics_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 50):
        ranks = rng.integers(0, 30, size=n)
        got = rank_metrics(ranks, ks=(1, 3, 10), prefix="x_")
        want = brute_rank_metrics(ranks.tolist(), (1, 3, 10))
        assert got.keys() == {f"x_{k}" for k in want}
        for k, v in want.items():
            assert got[f"x_{k}"] == pytest.approx(v)


def test_rank_metrics_hand_case() -> None:
    m = rank_metrics(np.array([0, 1, 0, 4]))
    assert m == {"r1": 50.0, "r5": 100.0, "r10": 100.0, "medr": 1.0, "meanr": 2.25}
    assert rank_metrics(np.array([0, 1, 2, 3]))["medr"] == 2.0  # median 1.5 -> floor 1 -> 1-based 2


@pytest.mark.parametrize("ranks", [np.array([], dtype=int), np.array([0, -1]), np.zeros((2, 2), dtype=int)])
def test_rank_metrics_rejects_bad_ranks(ranks: np.ndarray) -> None:
    with pytest.raises(ValueError):
        rank_metrics(ranks)


def test_rank_metrics_rejects_bad_k() -> None:
    with pytest.raises(ValueError, match="K must be >= 1"):
        rank_metrics(np.array([0]), ks=(0,))


def test_cmc_matches_brute_force_and_hand_case() -> None:
    np.testing.assert_allclose(cmc(np.array([0, 2, 2, 5]), 4), [0.25, 0.25, 0.75, 0.75])
    rng = np.random.default_rng(2)
    ranks = rng.integers(0, 12, size=40)
    want = [sum(1 for x in ranks if x + 1 <= r) / len(ranks) for r in range(1, 16)]
    np.testing.assert_allclose(cmc(ranks, 15), want)
    assert cmc(ranks, 1)[0] == rank_metrics(ranks)["r1"] / 100
    with pytest.raises(ValueError, match="max_rank"):
        cmc(ranks, 0)


# ---------------------------------------------------------------- cross-modal


def test_cross_modal_hand_case_3x3() -> None:
    sim = np.array([[0.9, 0.1, 0.0],
                    [0.8, 0.7, 0.1],
                    [0.1, 0.2, 0.3]])
    m = cross_modal_metrics(sim, np.eye(3, dtype=bool))
    # images: ranks 0, 1 (text 0 scores 0.8 > 0.7), 0; texts: all their image on top
    assert m["i2t_r1"] == pytest.approx(200 / 3)
    assert (m["i2t_r5"], m["i2t_r10"], m["i2t_medr"]) == (100.0, 100.0, 1.0)
    assert m["i2t_meanr"] == pytest.approx(4 / 3)
    assert (m["t2i_r1"], m["t2i_medr"], m["t2i_meanr"]) == (100.0, 1.0, 1.0)
    assert m["rsum"] == pytest.approx(200 / 3 + 500)
    assert (m["n_images"], m["n_texts"]) == (3, 3)
    assert PRIMARY_METRIC == "rsum" and PRIMARY_METRIC in m


def test_cross_modal_matches_vsepp_evaluation() -> None:
    rng = np.random.default_rng(3)
    sims = rng.standard_normal((12, 60))
    rel = np.kron(np.eye(12, dtype=bool), np.ones((1, 5), dtype=bool))
    i2t, t2i = cross_modal_ranks(sims, sparse.csr_matrix(rel), chunk_rows=5)
    want_i2t, want_t2i = vsepp_i2t_t2i(sims)
    np.testing.assert_array_equal(i2t, want_i2t)
    np.testing.assert_array_equal(t2i, want_t2i)
    m = cross_modal_metrics(sims, rel)
    for prefix, ranks in (("i2t_", want_i2t), ("t2i_", want_t2i)):
        for k, v in brute_rank_metrics(ranks.astype(int).tolist(), (1, 5, 10)).items():
            assert m[prefix + k] == pytest.approx(v)
    assert m["rsum"] == pytest.approx(sum(m[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("as_sparse", [False, True])
@pytest.mark.parametrize("chunk_rows", [None, 1, 4])
def test_cross_modal_ranks_multi_relevant_match_brute_force(ties: bool, as_sparse: bool,
                                                             chunk_rows: int | None) -> None:
    rng = np.random.default_rng(4)
    sim, rel = random_case(rng, 9, 14, ties)
    rel[rng.integers(0, 9, size=14), np.arange(14)] = True  # every text has an image too
    relevance = sparse.csr_matrix(rel) if as_sparse else rel
    i2t, t2i = cross_modal_ranks(sim, relevance, chunk_rows=chunk_rows)
    np.testing.assert_array_equal(i2t, brute_ranks(sim, rel))
    np.testing.assert_array_equal(t2i, brute_ranks(sim.T, rel.T))


def test_cross_modal_ranks_from_embeddings_equal_dense_ranks() -> None:
    rng = np.random.default_rng(5)
    img = rng.integers(-2, 3, size=(13, 4)).astype(float)  # small ints: exact dot products, many ties
    txt = rng.integers(-2, 3, size=(26, 4)).astype(float)
    rel = np.kron(np.eye(13, dtype=bool), np.ones((1, 2), dtype=bool))
    got = cross_modal_ranks_from_embeddings(img, txt, rel, chunk_rows=3)
    sim = img @ txt.T
    np.testing.assert_array_equal(got[0], brute_ranks(sim, rel))
    np.testing.assert_array_equal(got[1], brute_ranks(sim.T, rel.T))
    with pytest.raises(ValueError, match="do not match"):
        cross_modal_ranks_from_embeddings(img, txt[:, :3], rel)


def test_cross_modal_text_without_image_is_named() -> None:
    rel = np.array([[1, 0, 0], [0, 0, 1]], dtype=bool)
    with pytest.raises(ValueError, match="text 1 has no relevant"):
        cross_modal_metrics(np.zeros((2, 3)), rel)
    with pytest.raises(ValueError, match="image 1 has no relevant"):
        cross_modal_metrics(np.zeros((2, 3)), np.array([[1, 1, 1], [0, 0, 0]], dtype=bool))


# ---------------------------------------------------------------- average precision


def test_average_precision_hand_cases() -> None:
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(np.array([1.0, 1.0, 1.0]), np.array([1, 0, 0])) == pytest.approx(1 / 3)  # pessimistic
    assert average_precision(np.array([0.1, 0.5]), np.array([True, True])) == 1.0
    with pytest.raises(ValueError, match="no relevant"):
        average_precision(np.array([0.1, 0.5]), np.array([False, False]))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("as_sparse", [False, True])
def test_average_precisions_match_brute_force(ties: bool, as_sparse: bool) -> None:
    rng = np.random.default_rng(6)
    scores, rel = random_case(rng, 10, 15, ties)
    rel[[2, 7]] = False  # two queries with nothing relevant
    relevance = sparse.csr_matrix(rel) if as_sparse else rel
    aps = average_precisions(scores, relevance, chunk_rows=3)
    assert np.isnan(aps[[2, 7]]).all()
    want = [brute_ap(scores[q], rel[q]) for q in range(10) if rel[q].any()]
    np.testing.assert_allclose(aps[~np.isnan(aps)], want)
    assert mean_average_precision(scores, relevance) == pytest.approx(np.mean(want))
    for q in (0, 5):
        assert average_precision(scores[q], rel[q]) == pytest.approx(brute_ap(scores[q], rel[q]))


def test_mean_average_precision_needs_a_relevant_item() -> None:
    with pytest.raises(ValueError, match="no query"):
        mean_average_precision(np.zeros((2, 3)), np.zeros((2, 3), dtype=bool))


# ---------------------------------------------------------------- label retrieval


def brute_label_metrics(q: np.ndarray, ql: list[str], g: np.ndarray, gl: list[str], exclude_self: bool,
                        ks: tuple[int, ...]) -> dict[str, float]:
    ranks, aps, skipped = [], [], 0
    for i in range(len(q)):
        keep = [j for j in range(len(g)) if not (exclude_self and j == i)]
        s = np.array([float(q[i] @ g[j]) for j in keep])
        r = np.array([gl[j] == ql[i] for j in keep])
        if not r.any():
            skipped += 1
            continue
        ranks.append(brute_first_rank(s, r))
        aps.append(brute_ap(s, r))
    out = {"map": 100 * float(np.mean(aps))}
    out.update({f"cmc{k}": 100 * sum(1 for x in ranks if x < k) / len(ranks) for k in ks})
    out.update(n_queries=len(ranks), n_skipped=skipped)
    return out


@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("chunk_rows", [None, 2, 5])
def test_label_retrieval_matches_brute_force(exclude_self: bool, chunk_rows: int | None) -> None:
    rng = np.random.default_rng(7)
    g = rng.integers(-1, 2, size=(16, 3)).astype(float)  # exact ties
    gl = [str(x) for x in rng.choice(list("abcde"), size=16)]
    gl[0] = "only-one"  # a class with one member: skipped when exclude_self
    if exclude_self:
        q, ql = g, gl
    else:
        q = rng.integers(-1, 2, size=(9, 3)).astype(float)
        ql = [str(x) for x in rng.choice(list("abcdez"), size=9)]
    ks = (1, 2, 5)
    got = label_retrieval_metrics(q, ql, g, gl, exclude_self=exclude_self, ks=ks, chunk_rows=chunk_rows)
    want = brute_label_metrics(q, ql, g, gl, exclude_self, ks)
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v), k
    assert got["n_skipped"] >= 1


def test_label_retrieval_hand_case() -> None:
    emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
    m = label_retrieval_metrics(emb, ["a", "a", "b", "b"], emb, ["a", "a", "b", "b"], exclude_self=True, ks=(1,))
    # item 0: item 1 (0.8) beats item 3 (0.6) -> hit; item 1: item 3 (0.96) beats item 0 (0.8) -> rank 1;
    # item 2: item 3 (0.8) beats item 1 (0.6) -> hit; item 3: item 1 (0.96) beats item 2 (0.8) -> rank 1.
    assert m["cmc1"] == 50.0
    assert m["map"] == pytest.approx(100 * (1 + 0.5 + 1 + 0.5) / 4)
    assert (m["n_queries"], m["n_skipped"]) == (4, 0)


def test_label_retrieval_errors() -> None:
    emb = np.eye(3)
    with pytest.raises(ValueError, match="query 1 has no label"):
        label_retrieval_metrics(emb, ["a", None, "b"], emb, ["a", "a", "b"])
    with pytest.raises(ValueError, match="exclude_self"):
        label_retrieval_metrics(emb[:2], ["a", "a"], emb, ["a", "a", "b"], exclude_self=True)
    with pytest.raises(ValueError, match="labels"):
        label_retrieval_metrics(emb, ["a", "a"], emb, ["a", "a", "b"])
    with pytest.raises(ValueError, match="no query"):
        label_retrieval_metrics(emb, ["x", "y", "z"], emb, ["a", "a", "b"])


def test_evaluation_imports_neither_torch_nor_faiss() -> None:
    code = "import sys, xmr.evaluation; print(sorted({'torch', 'faiss'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _brute_force_chance(rel: np.ndarray, k: int) -> tuple[float, float, float, float]:
    """Mean R@K (fractions) and mean first-relevant rank (1-based) of both directions over every
    ordering of the gallery: the expectation of a uniformly random ranking, counted."""
    import itertools

    def one_side(r: np.ndarray) -> tuple[float, float]:
        hits, ranks, n = 0.0, 0.0, 0
        for perm in itertools.permutations(range(r.shape[1])):
            ordered = r[:, list(perm)]
            first = ordered.argmax(axis=1)  # every query has a relevant item
            hits += float(np.mean(first < k))
            ranks += float(np.mean(first + 1))
            n += 1
        return hits / n, ranks / n

    i2t, i2t_rank = one_side(rel)
    t2i, t2i_rank = one_side(rel.T)
    return i2t, t2i, i2t_rank, t2i_rank


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chance_metrics_equal_the_mean_over_every_ranking(seed: int) -> None:
    from xmr.evaluation.metrics import chance_cross_modal_metrics

    rng = np.random.default_rng(seed)
    n_img, n_txt = 5, 6
    rel = rng.random((n_img, n_txt)) < 0.3
    rel[np.arange(n_img), rng.integers(0, n_txt, n_img)] = True  # each image has a text
    rel[rng.integers(0, n_img, n_txt), np.arange(n_txt)] = True  # each text an image
    for k in (1, 2, 5):
        m = chance_cross_modal_metrics(rel, ks=(k,))
        i2t, t2i, i2t_rank, t2i_rank = _brute_force_chance(rel, k)
        assert m[f"i2t_r{k}"] == pytest.approx(100 * i2t, abs=1e-9)
        assert m[f"t2i_r{k}"] == pytest.approx(100 * t2i, abs=1e-9)
        assert m["rsum"] == pytest.approx(100 * (i2t + t2i), abs=1e-9)
        assert m["i2t_meanr"] == pytest.approx(i2t_rank) and m["t2i_meanr"] == pytest.approx(t2i_rank)
    assert chance_cross_modal_metrics(rel, ks=(10,))["i2t_r10"] == pytest.approx(100.0)  # K beyond the gallery


def test_chance_of_the_1k_protocol_is_the_mean_over_its_folds() -> None:
    from xmr.evaluation.metrics import chance_cross_modal_metrics
    from xmr.evaluation.protocol import chance_of_protocol

    n = 40  # 4 folds of 10 images, 2 texts each; the fold sees only its own texts
    rel = sparse.csr_matrix((np.ones(2 * n, bool), (np.repeat(np.arange(n), 2), np.arange(2 * n))), shape=(n, 2 * n))
    one_fold = chance_cross_modal_metrics(rel[:10, :20])
    got = chance_of_protocol(rel, mode="1k", fold_size=10, n_folds=4)
    assert got["rsum"] == pytest.approx(one_fold["rsum"])
    assert chance_of_protocol(rel)["rsum"] < got["rsum"]  # the whole set is a harder gallery
    assert one_fold["i2t_r1"] == pytest.approx(100 * (1 - 18 / 20))  # 1 - C(18,1)/C(20,1)
