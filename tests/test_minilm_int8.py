"""The int8 ONNX MiniLM: the same features as the torch model, batch- and thread-independent,
and chosen only as a query stand-in of a frozen ``minilm-l6``."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from xmr.encoders import create_text_encoder
from xmr.encoders.minilm_int8 import MiniLML6Int8
from xmr.errors import XmrError

SENTENCES = ["zombie", "a red car in the rain at night", "directions bike", "a small cat sleeping on a table",
             "two people shaking hands", "the sun over the sea", "a broken battery", "make it red",
             "an extremely long sentence " * 12 + "that runs on", "ü ñ 日本 emoji 🙂"]


@pytest.fixture(scope="module")
def int8() -> MiniLML6Int8:
    return MiniLML6Int8()


@pytest.mark.slow
def test_int8_features_match_the_torch_model(int8: MiniLML6Int8) -> None:
    exact = create_text_encoder("minilm-l6").encode_batch(SENTENCES)
    fast = int8.encode_batch(SENTENCES)
    assert fast.shape == exact.shape == (len(SENTENCES), 384) and fast.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    cos = (fast * exact).sum(axis=1)
    assert cos.min() > 0.999, cos  # DATA.md: within 1e-3 cosine
    # the ranking of the sentences against each other is the torch model's
    np.testing.assert_array_equal(np.argsort(-(fast @ fast.T), axis=1)[:, :3],
                                  np.argsort(-(exact @ exact.T), axis=1)[:, :3])


@pytest.mark.slow
def test_a_row_does_not_depend_on_its_batch_or_thread(int8: MiniLML6Int8) -> None:
    alone = np.vstack([int8.encode_batch([s]) for s in SENTENCES])
    together = int8.encode_batch(SENTENCES)  # padded to the longest: the mask keeps rows apart
    np.testing.assert_allclose(together, alone, atol=2e-3)
    assert (together * alone).sum(axis=1).min() > 0.9999
    out: dict[int, np.ndarray] = {}
    start = threading.Barrier(4)

    def run(i: int) -> None:
        start.wait()
        out[i] = int8.encode_batch(SENTENCES[i::4])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):  # four calls at once, one session: each answer is its own
        np.testing.assert_allclose(out[i], int8.encode_batch(SENTENCES[i::4]), atol=1e-6)
    assert int8.encode_batch([]).shape == (0, 384)


def test_bad_thread_count_is_refused() -> None:
    with pytest.raises(XmrError, match="threads must be >= 0"):
        MiniLML6Int8(threads=-1)


def test_the_stand_in_is_declared_by_the_torch_model_only() -> None:
    from xmr.encoders import ENCODERS

    minilm = ENCODERS.get("minilm-l6")
    assert minilm.query_stand_in == "minilm-l6-int8" and MiniLML6Int8.thread_safe  # type: ignore[union-attr]
    assert create_text_encoder("toy-text").query_stand_in is None
    assert not create_text_encoder("minilm-l6").thread_safe


def test_fast_text_swaps_the_encoder_only_when_it_has_a_stand_in(toy_run: tuple[Path, Path], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from xmr.cli import main
    from xmr.encoders import ENCODERS
    from xmr.encoders.toy import ToyTextEncoder
    from xmr.search import Searcher

    run, cache = toy_run
    assert main(["-q", "index", str(run), "--split", "test", "--out", str(tmp_path / "idx"), "--cache-dir",
                 str(cache)]) == 0
    plain = Searcher.from_run(run, tmp_path / "idx", fast_text=True)
    assert type(plain.text_encoder) is ToyTextEncoder  # no stand-in declared: the run's own

    class Faster(ToyTextEncoder):
        encoder_id = "toy-text/faster"

    monkeypatch.setitem(ENCODERS._items, "toy-text-faster", Faster)  # registered for this test only
    monkeypatch.setattr(ToyTextEncoder, "query_stand_in", "toy-text-faster")
    fast = Searcher.from_run(run, tmp_path / "idx", fast_text=True)
    exact = Searcher.from_run(run, tmp_path / "idx")
    assert type(fast.text_encoder) is Faster and type(exact.text_encoder) is ToyTextEncoder
    hits = [[h.id for h in s.search_text("a red circle", 5)] for s in (fast, exact)]
    assert hits[0] == hits[1]

