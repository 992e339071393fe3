"""xmr.index: every index against dense numpy brute force on small seeded inputs; bad inputs."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from xmr.errors import XmrError
from xmr.index import INDEXES, Index, IndexConfig, create_index

from vectors import DIM, unit_vectors  # tests/vectors.py


def brute_force(xb: np.ndarray, xq: np.ndarray, k: int,
                metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Dense exact top-k in float64. Returns (scores (nq, k), ids (nq, k)), best first."""
    xb64, xq64 = xb.astype(np.float64), xq.astype(np.float64)
    if metric == "ip":
        scores = xq64 @ xb64.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    else:
        scores = (xq64**2).sum(1)[:, None] - 2 * xq64 @ xb64.T + (xb64**2).sum(1)[None, :]
        order = np.argsort(scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each true top-k row found in the approximate row."""
    rows = zip(found, truth, strict=True)
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in rows]))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return unit_vectors(3000, seed=1), unit_vectors(100, seed=2)


# -- exact search ----------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_flat_matches_brute_force(data: tuple[np.ndarray, np.ndarray], metric: str) -> None:
    xb, xq = data
    index = create_index("flat", dim=DIM, metric=metric)
    index.add(xb)
    scores, ids = index.search(xq, 10)
    ref_scores, ref_ids = brute_force(xb, xq, 10, metric)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert scores.shape == ids.shape == (len(xq), 10)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)


def test_ivf_probing_every_list_is_exact(data: tuple[np.ndarray, np.ndarray]) -> None:
    xb, xq = data
    index = create_index("faiss", dim=DIM, factory="IVF16,Flat", nprobe=16)
    index.add(xb)
    scores, ids = index.search(xq, 10)
    ref_scores, ref_ids = brute_force(xb, xq, 10, "ip")
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)


def test_single_query_vector_gives_one_row(data: tuple[np.ndarray, np.ndarray]) -> None:
    xb, xq = data
    index = create_index("flat", dim=DIM)
    index.add(xb)
    scores, ids = index.search(xq[3], 5)
    assert scores.shape == ids.shape == (1, 5)
    np.testing.assert_array_equal(ids[0], brute_force(xb, xq[3:4], 5, "ip")[1][0])


def test_any_float_layout_gives_the_same_results(data: tuple[np.ndarray, np.ndarray]) -> None:
    xb, xq = data
    index = create_index("flat", dim=DIM)
    index.add(np.asfortranarray(xb.astype(np.float64)))
    expected = index.search(xq, 7)
    for variant in (xq.astype(np.float64), np.asfortranarray(xq), xq.tolist()):
        got = index.search(variant, 7)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])


def test_k_larger_than_ntotal_is_clipped() -> None:
    xb, xq = unit_vectors(5), unit_vectors(4, seed=9)
    index = create_index("flat", dim=DIM)
    index.add(xb)
    scores, ids = index.search(xq, 50)
    assert scores.shape == ids.shape == (4, 5)
    np.testing.assert_array_equal(ids, brute_force(xb, xq, 5, "ip")[1])


def test_custom_ids(data: tuple[np.ndarray, np.ndarray]) -> None:
    xb, xq = data
    custom = np.random.default_rng(3).choice(10**12, size=len(xb), replace=False).astype(np.int64)
    index = create_index("flat", dim=DIM)
    index.add(xb, ids=custom)
    _, ids = index.search(xq, 10)
    np.testing.assert_array_equal(ids, custom[brute_force(xb, xq, 10, "ip")[1]])
    np.testing.assert_array_equal(index.ids(), custom)


def test_default_ids_are_consecutive_and_continue_after_the_largest() -> None:
    index = create_index("flat", dim=DIM)
    index.add(unit_vectors(3))
    index.add(unit_vectors(2, seed=5), ids=np.array([10, 7]))
    index.add(unit_vectors(2, seed=6))
    np.testing.assert_array_equal(index.ids(), [0, 1, 2, 10, 7, 11, 12])
    assert len(index) == 7


# -- approximate search ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "min_recall"),
    [
        ("hnsw", {}, 0.95),
        ("hnsw", {"m": 16, "ef_search": 32}, 0.85),
        ("faiss", {"factory": "IVF16,Flat", "nprobe": 8}, 0.75),
        ("faiss", {"factory": "IVF16,SQ8", "nprobe": 16}, 0.9),
        ("faiss", {"factory": "IVF16,PQ16x4np", "nprobe": 16}, 0.4),
    ],
)
def test_approximate_recall_at_10(data: tuple[np.ndarray, np.ndarray], name: str,
                                  kwargs: dict[str, object], min_recall: float) -> None:
    xb, xq = data
    index = create_index(name, dim=DIM, **kwargs)
    index.add(xb)
    _, ids = index.search(xq, 10)
    assert recall_at_k(ids, brute_force(xb, xq, 10, "ip")[1]) >= min_recall


def test_search_params_reach_faiss() -> None:
    # the FAISS object itself (private to Index: its labels are slots, not ids): the knob must reach it
    hnsw = create_index("hnsw", dim=DIM, ef_search=123)
    assert faiss.downcast_index(hnsw._index).hnsw.efSearch == 123
    ivf = create_index("faiss", dim=DIM, factory="IVF8,Flat", nprobe=5)
    assert faiss.extract_index_ivf(ivf._index).nprobe == 5
    clipped = create_index("faiss", dim=DIM, factory="IVF8,Flat", nprobe=100)
    assert faiss.extract_index_ivf(clipped._index).nprobe == 8


@pytest.mark.parametrize("custom_ids", [False, True])
def test_missing_results_are_padded_at_the_end_and_empty_columns_dropped(custom_ids: bool) -> None:
    xb, xq = unit_vectors(40, seed=4), unit_vectors(30, seed=8)
    ids_given = np.arange(40) * 10 + 5 if custom_ids else np.arange(40)
    index = create_index("faiss", dim=DIM, factory="IVF16,Flat", nprobe=1)
    index.add(xb, ids=ids_given if custom_ids else None)
    scores, ids = index.search(xq, 40)
    missing = ids < 0
    assert missing.any(), "expected some queries to find fewer than k results"
    assert ids.shape[1] == (~missing).sum(axis=1).max() < 40
    # padding only at the end of a row, with the worst possible score
    assert np.all(np.sort(missing, axis=1, kind="stable") == missing)
    assert np.all(np.isneginf(scores[missing])) and np.all(np.isfinite(scores[~missing]))
    # every found id is right: its score is the true inner product with that vector
    rows, cols = np.nonzero(~missing)
    positions = np.searchsorted(ids_given, ids[rows, cols])
    np.testing.assert_array_equal(ids_given[positions], ids[rows, cols])
    np.testing.assert_allclose(scores[rows, cols], (xq[rows] * xb[positions]).sum(1), rtol=1e-5)


def test_ivf_trains_on_first_add() -> None:
    index = create_index("faiss", dim=DIM, factory="IVF8,Flat")
    assert not index.is_trained
    index.add(unit_vectors(400))
    assert index.is_trained and len(index) == 400


# -- registry --------------------------------------------------------------------------------

FAMILY_KWARGS: dict[str, dict[str, object]] = {
    "flat": {},
    "faiss": {"factory": "IVF4,Flat", "nprobe": 4},
    "hnsw": {"m": 8},
}


def test_every_registered_family_has_a_test_case() -> None:
    assert set(INDEXES.names()) == set(FAMILY_KWARGS)


@pytest.mark.parametrize("name", sorted(FAMILY_KWARGS))
def test_registered_family_builds_and_searches(name: str) -> None:
    xb = unit_vectors(300)
    index = create_index(name, dim=DIM, model_id="m", **FAMILY_KWARGS[name])
    assert isinstance(index, Index) and index.config.model_id == "m"
    index.add(xb)
    _, ids = index.search(xb[:5], 1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(5))


def test_unknown_family_lists_known_ones() -> None:
    with pytest.raises(XmrError, match="unknown index 'annoy'; known: faiss, flat, hnsw"):
        create_index("annoy", dim=DIM)


def test_index_package_never_imports_torch() -> None:
    code = "import sys, xmr.index; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"dim": 0}, "0"),
        ({"dim": "32"}, "'32'"),
        ({"dim": True}, "True"),
        ({"dim": DIM, "metric": "cosine"}, "'cosine'"),
        ({"dim": DIM, "nprobe": 0}, "0"),
        ({"dim": DIM, "ef_search": -3}, "-3"),
        ({"dim": DIM, "model_id": ""}, "''"),
        ({"dim": DIM, "factory": "Nope"}, "'Nope'"),
        ({"dim": DIM, "factory": "PQ7"}, "'PQ7'"),
        ({"dim": DIM, "factory": "IDMap,Flat"}, "'IDMap,Flat'"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], bad: str) -> None:
    with pytest.raises(ValueError) as info:
        IndexConfig(**kwargs)  # type: ignore[arg-type]
    assert bad in str(info.value) and "\n" not in str(info.value)


def test_config_is_frozen_and_round_trips() -> None:
    config = IndexConfig(dim=DIM, factory="HNSW16", metric="l2", model_id="m", ef_search=9)
    with pytest.raises(AttributeError):
        config.dim = 3  # type: ignore[misc]
    assert IndexConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown index config keys"):
        IndexConfig.from_dict({**config.to_dict(), "extra": 1})


# -- bad input -------------------------------------------------------------------------------


def _one_line_error(fn: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(XmrError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture()
def small_index() -> Index:
    index = create_index("flat", dim=DIM)
    index.add(unit_vectors(20))
    return index


def test_wrong_query_dimension(small_index: Index) -> None:
    assert _one_line_error(small_index.search, unit_vectors(2, dim=16), 3) == \
        "query has dim 16, index has dim 32"


def test_wrong_vector_dimension(small_index: Index) -> None:
    assert _one_line_error(small_index.add, unit_vectors(2, dim=16)) == \
        "vectors have dim 16, index has dim 32"


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_queries(small_index: Index, bad_value: float) -> None:
    xq = unit_vectors(4)
    xq[2, 5] = bad_value
    assert "query contains NaN or inf values (row 2)" in _one_line_error(small_index.search, xq, 3)


def test_nan_vectors_are_not_added(small_index: Index) -> None:
    xb = unit_vectors(4)
    xb[1, 0] = np.nan
    xb[3, 0] = np.inf
    assert "vectors contain NaN or inf values (row 1 and 1 more)" in \
        _one_line_error(small_index.add, xb)
    assert len(small_index) == 20


def test_values_overflowing_float32_count_as_inf(small_index: Index) -> None:
    xq = unit_vectors(1).astype(np.float64)
    xq[0, 0] = 1e300
    assert "NaN or inf" in _one_line_error(small_index.search, xq, 3)


def test_search_on_empty_index() -> None:
    index = create_index("flat", dim=DIM)
    assert _one_line_error(index.search, unit_vectors(1), 3) == "index is empty: add vectors first"


@pytest.mark.parametrize("shape", [(2, 3, DIM), (DIM,), ()])
def test_wrong_vector_rank(small_index: Index, shape: tuple[int, ...]) -> None:
    assert "vectors must have shape (n, 32)" in _one_line_error(small_index.add, np.zeros(shape))


def test_non_numeric_queries(small_index: Index) -> None:
    assert "dtype" in _one_line_error(small_index.search, np.full((1, DIM), "a"), 3)


@pytest.mark.parametrize("k", [0, -1, 2.5, "3"])
def test_bad_k(small_index: Index, k: object) -> None:
    assert "k must be" in _one_line_error(small_index.search, unit_vectors(1), k)


def test_ivf_with_too_few_training_vectors() -> None:
    index = create_index("faiss", dim=DIM, factory="IVF64,Flat")
    message = _one_line_error(index.add, unit_vectors(20))
    assert "64 IVF lists" in message and "only 20 vectors" in message
    assert "smaller nlist" in message and "'IVF1,Flat'" in message
    assert not index.is_trained and len(index) == 0


def test_pq_training_failure_is_one_line() -> None:
    index = create_index("faiss", dim=DIM, factory="PQ8np")
    message = _one_line_error(index.add, unit_vectors(100))
    assert message.startswith("training index 'PQ8np' on 100 vectors failed: ")


@pytest.mark.parametrize(
    ("ids", "match"),
    [
        (np.arange(3), "ids must have shape (4,)"),
        (np.arange(4.0), "ids must be integers"),
        (np.array([0, 1, -1, 2]), "ids must be >= 0"),
        (np.array([5, 6, 5, 7]), "ids contain duplicates, e.g. 5"),
        (np.array([100, 3, 101, 102]), "id 3 is already in the index"),
    ],
)
def test_bad_ids(small_index: Index, ids: np.ndarray, match: str) -> None:
    assert match in _one_line_error(small_index.add, unit_vectors(4, seed=7), ids=ids)
    assert len(small_index) == 20


def test_unnormalised_vectors_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    index = create_index("flat", dim=DIM)
    with caplog.at_level(logging.WARNING, logger="xmr.index"):
        index.add(unit_vectors(10) * 3)
        index.add(unit_vectors(10, seed=4) * 3)
    assert sum("L2-normalised" in r.message for r in caplog.records) == 1


def test_set_search_params_changes_faiss_and_config(data: tuple[np.ndarray, np.ndarray]) -> None:
    xb, xq = data
    index = create_index("faiss", dim=DIM, factory="IVF16,Flat", nprobe=1)
    index.add(xb)
    index.set_search_params(nprobe=16)
    assert index.config.nprobe == 16 and faiss.extract_index_ivf(index._index).nprobe == 16
    np.testing.assert_array_equal(index.search(xq, 10)[1], brute_force(xb, xq, 10, "ip")[1])
    hnsw = create_index("hnsw", dim=DIM)
    hnsw.set_search_params(ef_search=200)
    assert faiss.downcast_index(hnsw._index).hnsw.efSearch == 200
    with pytest.raises(ValueError, match="ef_search must be a positive integer, got 0"):
        hnsw.set_search_params(ef_search=0)
    assert hnsw.config.ef_search == 200


def test_index_search_params_are_saved_with_the_index(toy_run: tuple[Path, Path], tmp_path: Path) -> None:
    """``xmr index --factory HNSW32 --ef-search N``: every later search of the index uses N (the
    service's galleries past ~50k items want a wider beam than FAISS's default)."""
    from xmr.cli import main
    from xmr.search import Searcher

    run, cache = toy_run
    for name, extra in (("flat", []), ("hnsw", ["--factory", "HNSW32", "--ef-search", "200"])):
        assert main(["-q", "index", str(run), "--split", "test", "--out", str(tmp_path / name), "--cache-dir",
                     str(cache), *extra]) == 0
    hnsw = Searcher.from_run(run, tmp_path / "hnsw")
    assert hnsw.indexes["images"]._index.hnsw.efSearch == 200
    flat = Searcher.from_run(run, tmp_path / "flat")
    for text in ("a red circle", "a blue square"):  # a 24-image graph searched that wide is exact
        assert [h.id for h in hnsw.search_text(text, 5)] == [h.id for h in flat.search_text(text, 5)]
