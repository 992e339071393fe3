"""Indexes past RAM: budgeted choice, refine from the vector store, remove / add, mmap, shards,
streaming builds -- each checked against exact (flat) search on small seeded data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xmr.errors import XmrError
from xmr.index import Index, IndexConfig, create_index, load_index
from xmr.index.budget import AutoIndexConfig, choose_index, parse_bytes
from xmr.index.build import build_index, training_sample
from xmr.index.sharded import ShardedIndex, load_sharded, save_shard_set

DIM = 32


def clustered(n: int, seed: int = 0, dim: int = DIM, centres: int = 40) -> np.ndarray:
    """Seeded unit vectors around ``centres`` random directions (like real embeddings, not uniform)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


X = clustered(4000)
Q = clustered(50, seed=7)


def exact(x: np.ndarray, q: np.ndarray, k: int, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Brute force in numpy: top-k inner products. The reference for every path here."""
    s = q @ x.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    got = np.take_along_axis(s, order, axis=1)
    return got, (ids[order] if ids is not None else order)


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want, strict=True)]))


def one_line(fn: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(XmrError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    assert "\n" not in str(info.value)
    return str(info.value)


# -- the budgeted choice ---------------------------------------------------------------------


def test_budget_parsing() -> None:
    assert parse_bytes("2GB") == 2 << 30 and parse_bytes("512MB") == 512 << 20 and parse_bytes("1.5g") == 3 << 29
    assert parse_bytes(1000) == 1000
    for bad in ("lots", "-1GB", "0", "2 parsecs"):
        assert "memory budget" in one_line(parse_bytes, bad)


def test_choice_goes_from_exact_to_graph_to_compressed_as_the_gallery_grows() -> None:
    budget = parse_bytes("2GB")
    kinds = [choose_index(n, 256, budget).kind for n in (1_000, 100_000, 1_000_000, 10_000_000)]
    assert kinds == ["flat", "flat", "hnsw", "ivfpq"]
    big = choose_index(10_000_000, 256, budget)
    assert big.build_bytes <= budget and big.index_bytes <= budget
    assert big.factory.startswith("OPQ") and ",PQ" in big.factory
    # the estimate is the codes + ids of every vector, at least
    assert big.index_bytes >= 10_000_000 * (int(big.factory.rsplit("PQ", 1)[1].rstrip("np")) + 8)


def test_a_tighter_budget_takes_fewer_bytes_per_vector() -> None:
    sizes = [choose_index(10_000_000, 256, parse_bytes(b)).factory for b in ("4GB", "900MB", "700MB")]
    pq = [int(f.rsplit("PQ", 1)[1].rstrip("np")) for f in sizes]
    assert pq == sorted(pq, reverse=True) and pq[0] > pq[-1]


def test_a_budget_too_small_for_any_index_is_one_line() -> None:
    message = one_line(choose_index, 10_000_000, 256, parse_bytes("100MB"))
    assert message.startswith("memory budget 100.00 MB is too small for any index of 10000000 vectors of dim 256")
    assert "needs" in message


def test_every_factory_the_choice_writes_is_a_valid_faiss_index() -> None:
    for n in (300_000, 3_000_000, 10_000_000):
        for b in ("2GB", "600MB"):
            choice = choose_index(n, 256, parse_bytes(b), AutoIndexConfig(flat_up_to=0, hnsw_up_to=0))
            IndexConfig(dim=256, factory=choice.factory, nprobe=choice.nprobe)  # parses it


# -- refine ----------------------------------------------------------------------------------


def test_refine_gives_exact_scores_and_better_recall_than_the_codes() -> None:
    plain = create_index("faiss", dim=DIM, factory="IVF32,PQ4np", nprobe=16)
    refined = Index(IndexConfig(dim=DIM, factory="IVF32,PQ4np", nprobe=16, refine=100, store_dtype="float32"))
    for index in (plain, refined):
        index.add(X)
    want_scores, want = exact(X, Q, 10)
    got_scores, got = refined.search(Q, 10)
    r_plain, r_refined = recall(plain.search(Q, 10)[1], want), recall(got, want)
    assert r_refined >= 0.95 and r_refined > r_plain + 0.2, (r_plain, r_refined)
    # every returned score is the exact inner product of its vector, in order
    np.testing.assert_allclose(got_scores, np.einsum("qkd,qd->qk", X[got], Q), rtol=0, atol=1e-5)
    assert (np.diff(got_scores, axis=1) <= 1e-7).all()
    # where the shortlist held the true top-10, the answer is exactly it
    hit = [set(g) == set(w) for g, w in zip(got, want, strict=True)]
    np.testing.assert_allclose(got_scores[hit], want_scores[hit], atol=1e-5)


def test_refine_with_a_float16_store_is_within_its_precision() -> None:
    index = Index(IndexConfig(dim=DIM, factory="IVF32,PQ4np", nprobe=8, refine=100))
    index.add(X)
    scores, ids = index.search(Q, 10)
    np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", X[ids], Q), atol=2e-3)


def test_refine_survives_save_and_mmap_load(tmp_path: Path) -> None:
    index = Index(IndexConfig(dim=DIM, factory="IVF32,PQ4np", nprobe=8, refine=50))
    index.add(X, ids=np.arange(4000) * 2 + 1)
    before = index.search(Q, 10)
    index.save(tmp_path / "i")
    assert (tmp_path / "i" / "vectors.f16").stat().st_size == 4000 * DIM * 2
    for mmap in (False, True):
        after = load_index(tmp_path / "i", mmap=mmap).search(Q, 10)
        np.testing.assert_array_equal(after[1], before[1])
        np.testing.assert_array_equal(after[0], before[0])


def test_refine_is_refused_where_it_means_nothing() -> None:
    assert "compressed IVF" in one_line(IndexConfig, dim=DIM, factory="HNSW16", refine=10)
    index = create_index("faiss", dim=DIM, factory="IVF8,PQ4np")
    assert "no exact vectors" in one_line(index.set_search_params, refine=10)


# -- remove and add ---------------------------------------------------------------------------


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF16,Flat", "IVF16,PQ4np"])
def test_remove_then_add_equals_a_rebuild_on_the_same_items(factory: str) -> None:
    ids = np.arange(4000) * 3
    index = create_index("faiss", dim=DIM, factory=factory, nprobe=16, ef_search=200)
    index.add(X[:3000], ids=ids[:3000])
    gone = ids[np.random.default_rng(1).choice(3000, 500, replace=False)]
    assert index.remove(gone) == 500
    index.add(X[3000:], ids=ids[3000:])
    keep = ~np.isin(ids, gone)
    assert len(index) == int(keep.sum()) and sorted(index.ids()) == sorted(ids[keep])
    got = index.search(Q, 10)[1]
    assert not np.isin(got, gone).any()  # a removed id never comes back
    # the same items indexed from scratch (trained on the same first 3000 for IVF)
    fresh = create_index("faiss", dim=DIM, factory=factory, nprobe=16, ef_search=200)
    if not fresh.is_trained:
        fresh.train(X[:3000])
    fresh.add(X[keep], ids=ids[keep])
    want = fresh.search(Q, 10)[1]
    if factory.startswith("IVF"):  # same codes, same lists: identical
        np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(want, axis=1))
    else:
        _, truth = exact(X[keep], Q, 10, ids[keep])
        assert recall(got, truth) >= 0.97 and recall(want, truth) >= 0.97


def test_removed_ids_are_not_reused_and_survive_a_save(tmp_path: Path) -> None:
    index = create_index("faiss", dim=DIM, factory="IVF16,Flat", nprobe=16)
    index.add(X[:1000])
    index.remove(np.array([999, 5]))
    index.save(tmp_path / "i")
    loaded = load_index(tmp_path / "i")
    assert len(loaded) == 998 and loaded.n_slots == 1000
    loaded.add(X[1000:1002])
    assert loaded.ids()[-2:].tolist() == [1000, 1001]  # 999 was removed: not handed out again
    np.testing.assert_array_equal(loaded.search(X[1001:1002], 1)[1], [[1001]])


def test_removing_an_id_that_is_not_there_changes_nothing() -> None:
    index = create_index("flat", dim=DIM)
    index.add(X[:100])
    assert one_line(index.remove, np.array([3, 100, 101])) == "id 100 is not in the index (2 of 3 missing)"
    assert len(index) == 100
    index.remove(np.array([3]))
    assert "id 3 is not in the index" in one_line(index.remove, np.array([3]))


def test_a_memory_mapped_index_refuses_changes(tmp_path: Path) -> None:
    index = create_index("faiss", dim=DIM, factory="IVF16,Flat")
    index.add(X[:1000])
    index.save(tmp_path / "i")
    mapped = load_index(tmp_path / "i", mmap=True)
    np.testing.assert_array_equal(mapped.search(Q, 5)[1], index.search(Q, 5)[1])
    assert "memory-mapped" in one_line(mapped.add, X[:2])
    assert "memory-mapped" in one_line(mapped.remove, np.array([1]))


def test_mmap_loading_keeps_the_codes_out_of_resident_memory(tmp_path: Path) -> None:
    """A fresh process loads a 64 MB flat index: read fully, RSS grows by it; mapped, it does not."""
    n = 64 * 1024 * 1024 // (DIM * 4)
    index = create_index("flat", dim=DIM)
    index.add(clustered(n, seed=3))
    index.save(tmp_path / "i")
    code = ("import sys; from xmr.index import load_index\n"
            "def rss_mb(): return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
            "before = rss_mb(); i = load_index(sys.argv[1], mmap=sys.argv[2] == '1'); print(rss_mb() - before)")
    grew = {m: float(subprocess.run([sys.executable, "-c", code, str(tmp_path / "i"), m], check=True,
                                    capture_output=True, text=True).stdout) for m in ("0", "1")}
    assert grew["0"] > 50 and grew["1"] < 10, grew


# -- shards ----------------------------------------------------------------------------------


def test_shards_searched_as_one_equal_one_index_over_the_union(tmp_path: Path) -> None:
    ids = np.arange(4000) * 7
    cut = [0, 900, 2500, 4000]
    for i in range(3):
        shard = create_index("flat", dim=DIM, model_id="m")
        shard.add(X[cut[i]:cut[i + 1]], ids=ids[cut[i]:cut[i + 1]])
        shard.save(tmp_path / f"s{i}")
    save_shard_set(tmp_path / "all", [tmp_path / f"s{i}" for i in range(3)])
    sharded = load_sharded(tmp_path / "all", expect_model_id="m")
    want_scores, want = exact(X, Q, 10, ids)
    scores, got = sharded.search(Q, 10)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert len(sharded) == 4000


def test_shards_of_another_model_or_with_shared_ids_are_refused() -> None:
    a = create_index("flat", dim=DIM, model_id="m")
    a.add(X[:10])
    b = create_index("flat", dim=DIM, model_id="other")
    b.add(X[10:20], ids=np.arange(10, 20))
    assert "model 'other'" in one_line(ShardedIndex, [a, b])
    c = create_index("flat", dim=16, model_id="m")
    c.add(X[:5, :16] / np.linalg.norm(X[:5, :16], axis=1, keepdims=True))
    assert "dim 16" in one_line(ShardedIndex, [a, c])
    d = create_index("flat", dim=DIM, model_id="m")
    d.add(X[:10])
    assert one_line(ShardedIndex, [a, d]) == "id 0 is in shard 0 and shard 1: shards must hold disjoint ids"


# -- streaming build -------------------------------------------------------------------------


def _chunks(size: int):  # type: ignore[no-untyped-def]
    return lambda: ((X[a:a + size], np.arange(a, min(a + size, 4000)) + 10_000) for a in range(0, 4000, size))


def test_the_training_sample_does_not_depend_on_the_chunking() -> None:
    a = training_sample(_chunks(1000)(), 500, DIM, seed=3)
    b = training_sample(_chunks(250)(), 500, DIM, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (500, DIM) and len({r.tobytes() for r in a}) == 500
    assert not np.array_equal(a, training_sample(_chunks(1000)(), 500, DIM, seed=4))


def test_a_streaming_build_equals_one_add_of_everything(tmp_path: Path) -> None:
    config = IndexConfig(dim=DIM, factory="IVF32,PQ8np", nprobe=8, refine=40)
    streamed = build_index(_chunks(700), config, n_train=2000, seed=0, spill_to=tmp_path / ".spill")
    whole = Index(config)
    whole.train(training_sample(_chunks(4000)(), 2000, DIM, seed=0))
    whole.add(X, ids=np.arange(4000) + 10_000)
    np.testing.assert_array_equal(streamed.search(Q, 10)[1], whole.search(Q, 10)[1])
    streamed.save(tmp_path / "i")
    (tmp_path / ".spill").unlink()  # saving hard-linked it; the index keeps its own link
    np.testing.assert_array_equal(load_index(tmp_path / "i").search(Q, 10)[1], whole.search(Q, 10)[1])


def test_a_bad_chunk_is_named() -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield X[:100], None
        yield X[:10, :16], None

    assert one_line(build_index, chunks, IndexConfig(dim=DIM)).startswith("chunk 1: vectors have dim 16")


def test_refine_reads_only_the_rows_it_scores(tmp_path: Path) -> None:
    """A 64 MB float16 store, 200 queries re-scoring 50 rows each (10k of 131k rows): the search
    process's file-backed memory grows by far less than the store (a memory map faults in ~16
    pages around each random row, which would map all of it)."""
    dim, n = 256, 131_072
    x = clustered(n, seed=5, dim=dim)
    index = Index(IndexConfig(dim=dim, factory="IVF64,PQ8x4np", nprobe=4, refine=50))
    index.add(x)
    index.save(tmp_path / "i")
    np.save(tmp_path / "q.npy", clustered(200, seed=6, dim=dim))
    code = ("import sys, numpy as np; from xmr.index import load_index\n"
            "def rss(): return {l.split(':')[0]: int(l.split()[1]) / 1024 for l in open('/proc/self/status')"
            " if l.startswith('RssFile')}['RssFile']\n"
            "i = load_index(sys.argv[1], mmap=True); q = np.load(sys.argv[2]); before = rss()\n"
            "for a in range(0, 200, 20): i.search(q[a:a + 20], 10)\n"
            "print(rss() - before)")
    grew = float(subprocess.run([sys.executable, "-c", code, str(tmp_path / "i"), str(tmp_path / "q.npy")],
                                check=True, capture_output=True, text=True).stdout)
    assert (tmp_path / "i" / "vectors.f16").stat().st_size == n * dim * 2
    assert grew < 16, grew


def test_reconstruct_gives_the_stored_vectors_and_leaves_removal_possible() -> None:
    flat = create_index("flat", dim=DIM)
    flat.add(X[:100], ids=np.arange(100) + 7)
    np.testing.assert_array_equal(flat.reconstruct(np.array([7, 50])), X[[0, 43]])
    ivf = create_index("faiss", dim=DIM, factory="IVF8,Flat")
    ivf.add(X[:500])
    np.testing.assert_allclose(ivf.reconstruct(np.array([3, 9])), X[[3, 9]], atol=1e-6)
    assert ivf.remove(np.array([3])) == 1  # the direct map reconstruct needed is gone again


def test_exact_top_k_over_chunks_equals_one_sort_of_everything() -> None:
    from xmr.index.exact import exact_top_k, recall_at_k

    ids = np.arange(4000) * 5
    scores, got = exact_top_k(((X[a:a + 700], ids[a:a + 700]) for a in range(0, 4000, 700)), Q, 10)
    want_scores, want = exact(X, Q, 10, ids)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(scores, want_scores, atol=1e-6)
    assert recall_at_k(got, want) == 1.0 and recall_at_k(got[:, :5], want) == 0.5
