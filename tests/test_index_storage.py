"""xmr.index save/load: identical results after a round trip, refusal of mismatches, atomicity."""

from __future__ import annotations

import gc
import json
import logging
import os
from pathlib import Path

import faiss
import numpy as np
import pytest

from xmr.errors import XmrError
from xmr.index import Index, create_index, load_index

from vectors import DIM, unit_vectors  # tests/vectors.py


def built(name: str = "flat", n: int = 500, seed: int = 0, **kwargs: object) -> Index:
    index = create_index(name, dim=DIM, **kwargs)
    index.add(unit_vectors(n, seed=seed), ids=np.arange(n) * 3 + 11)
    return index


def one_line_error(fn: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(XmrError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    assert "\n" not in str(info.value)
    return str(info.value)


QUERIES = unit_vectors(20, seed=99)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("flat", {"model_id": "clip-b32"}),
        ("flat", {"metric": "l2"}),
        ("hnsw", {"m": 8, "ef_search": 20}),
        ("faiss", {"factory": "IVF8,Flat", "nprobe": 3}),
    ],
)
def test_round_trip_gives_identical_results(tmp_path: Path, name: str,
                                            kwargs: dict[str, object]) -> None:
    index = built(name, **kwargs)
    before = index.search(QUERIES, 10)
    index.save(tmp_path / "idx")
    loaded = load_index(tmp_path / "idx")
    config = index.config
    del index
    gc.collect()  # the loaded FAISS index must not depend on anything but ``loaded``
    assert loaded.config == config and len(loaded) == 500
    after = loaded.search(QUERIES, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(loaded.ids(), np.arange(500) * 3 + 11)


def test_loaded_index_keeps_search_params_and_next_id(tmp_path: Path) -> None:
    built("faiss", factory="IVF8,Flat", nprobe=3).save(tmp_path)
    loaded = Index.load(tmp_path)
    assert faiss.extract_index_ivf(loaded._index).nprobe == 3
    loaded.add(unit_vectors(2, seed=5))
    assert loaded.ids()[-2:].tolist() == [499 * 3 + 12, 499 * 3 + 13]


@pytest.mark.parametrize("custom_ids", [False, True])
def test_saved_faiss_file_is_a_plain_faiss_index_labelled_by_slot(tmp_path: Path, custom_ids: bool) -> None:
    index = built() if custom_ids else create_index("flat", dim=DIM)
    if not custom_ids:
        index.add(unit_vectors(300))
    index.save(tmp_path)
    plain = faiss.read_index(str(tmp_path / "index.faiss"))
    assert not isinstance(plain, faiss.IndexIDMap) and plain.ntotal == len(index)
    labels = plain.search(QUERIES, 10)[1]
    ids = np.load(tmp_path / "ids.npy") if custom_ids else np.arange(300)
    assert (tmp_path / "ids.npy").exists() == custom_ids  # no id file while every id is its slot
    np.testing.assert_array_equal(ids[labels], index.search(QUERIES, 10)[1])


def test_a_version_1_index_still_loads(tmp_path: Path) -> None:
    """Version 1 kept the ids in an IndexIDMap inside index.faiss; such folders still load."""
    from xmr.index.storage import file_fingerprint

    index = built()
    wrapper = faiss.IndexIDMap(faiss.IndexFlatIP(DIM))
    wrapper.add_with_ids(unit_vectors(500, seed=0), np.arange(500) * 3 + 11)
    faiss.write_index(wrapper, str(tmp_path / "index.faiss"))
    meta = {"format": "xmr.index", "version": 1, "config": index.config.to_dict(), "ntotal": 500,
            "faiss_file": file_fingerprint(tmp_path / "index.faiss")}
    (tmp_path / "index.json").write_text(json.dumps(meta))
    loaded = load_index(tmp_path)
    np.testing.assert_array_equal(loaded.search(QUERIES, 10)[1], index.search(QUERIES, 10)[1])
    np.testing.assert_array_equal(loaded.ids(), index.ids())


def test_ids_survive_mixed_adds_and_reload(tmp_path: Path) -> None:
    index = create_index("flat", dim=DIM)
    index.add(unit_vectors(5))
    index.save(tmp_path / "a")
    loaded = load_index(tmp_path / "a")
    loaded.add(unit_vectors(2, seed=1), ids=np.array([40, 30]))
    loaded.save(tmp_path / "b")
    again = load_index(tmp_path / "b")
    np.testing.assert_array_equal(again.ids(), [0, 1, 2, 3, 4, 40, 30])
    assert "id 3 is already in the index" in one_line_error(again.add, unit_vectors(1), ids=[3])
    again.add(unit_vectors(1, seed=2))
    assert again.ids()[-1] == 41


def test_saved_files(tmp_path: Path) -> None:
    built(model_id="m").save(tmp_path / "a" / "b")
    files = sorted(p.name for p in (tmp_path / "a" / "b").iterdir())
    assert files == ["ids.npy", "index.faiss", "index.json"]  # no temporaries left behind
    meta = json.loads((tmp_path / "a" / "b" / "index.json").read_text())
    assert meta["config"]["model_id"] == "m" and meta["ntotal"] == 500


# -- refusing a mismatch ---------------------------------------------------------------------


def test_load_refuses_another_model(tmp_path: Path) -> None:
    create_index("flat", dim=256, model_id="a").save(tmp_path)
    message = one_line_error(load_index, tmp_path, expect_dim=128, expect_model_id="b")
    assert message == (f"index at {tmp_path} was built with model 'a' (dim 256) "
                       "but the query model is 'b' (dim 128)")
    assert one_line_error(load_index, tmp_path, expect_dim=128) == (
        f"index at {tmp_path} was built with model 'a' (dim 256) but the query model has dim 128")
    assert "query model is 'b'" in one_line_error(load_index, tmp_path, expect_model_id="b")
    assert len(load_index(tmp_path, expect_dim=256, expect_model_id="a")) == 0


def test_load_warns_when_the_index_records_no_model(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    built().save(tmp_path)
    with caplog.at_level(logging.WARNING, logger="xmr.index"):
        load_index(tmp_path, expect_model_id="b", expect_dim=DIM)
    assert "records no model id" in caplog.text
    assert "an unnamed model (dim 32)" in one_line_error(load_index, tmp_path, expect_dim=8)


# -- missing and corrupt files ---------------------------------------------------------------


def test_missing_folder(tmp_path: Path) -> None:
    message = one_line_error(load_index, tmp_path / "nope")
    assert message == f"{tmp_path / 'nope'}: no such index folder"


@pytest.mark.parametrize("name", ["index.json", "index.faiss"])
def test_missing_file_is_named(tmp_path: Path, name: str) -> None:
    built().save(tmp_path)
    (tmp_path / name).unlink()
    message = one_line_error(load_index, tmp_path)  # "index.json: JSON file not found", "index.faiss: file not found"
    assert message.startswith(f"{tmp_path / name}: ") and message.endswith("file not found"), message


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": "other"}', "not an xmr index description"),
    ],
)
def test_corrupt_json_is_named(tmp_path: Path, text: str, match: str) -> None:
    built().save(tmp_path)
    (tmp_path / "index.json").write_text(text)
    message = one_line_error(load_index, tmp_path)
    assert message.startswith(str(tmp_path / "index.json")) and match in message


def test_invalid_config_in_json_is_named(tmp_path: Path) -> None:
    built().save(tmp_path)
    meta = json.loads((tmp_path / "index.json").read_text())
    meta["config"]["metric"] = "cosine"
    (tmp_path / "index.json").write_text(json.dumps(meta))
    message = one_line_error(load_index, tmp_path)
    assert message.startswith(f"{tmp_path / 'index.json'}: invalid index config")
    assert "'cosine'" in message


def test_truncated_faiss_file_is_refused(tmp_path: Path) -> None:
    built().save(tmp_path)
    path = tmp_path / "index.faiss"
    path.write_bytes(path.read_bytes()[:1000])
    message = one_line_error(load_index, tmp_path)
    assert message.startswith(f"{path} does not match") and "interrupted save" in message


def test_unreadable_faiss_file_is_named(tmp_path: Path) -> None:
    from xmr.index.storage import file_fingerprint

    built().save(tmp_path)
    path = tmp_path / "index.faiss"
    path.write_bytes(b"garbage" * 100)
    meta = json.loads((tmp_path / "index.json").read_text())
    meta["faiss_file"] = file_fingerprint(path)  # pretend the JSON agrees, to reach FAISS
    (tmp_path / "index.json").write_text(json.dumps(meta))
    assert one_line_error(load_index, tmp_path).startswith(f"{path}: not a readable FAISS index")


# -- atomic save -----------------------------------------------------------------------------


def _assert_previous_index_intact(directory: Path, expected: tuple[np.ndarray, np.ndarray]) -> None:
    assert sorted(p.name for p in directory.iterdir()) == ["ids.npy", "index.faiss", "index.json"]
    got = load_index(directory).search(QUERIES, 10)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])


def test_failed_faiss_write_leaves_previous_index_intact(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    old = built(seed=0)
    old.save(tmp_path)
    expected = old.search(QUERIES, 10)

    def half_write(index: faiss.Index, path: str) -> None:
        Path(path).write_bytes(b"half an index")
        raise OSError("No space left on device")

    monkeypatch.setattr(faiss, "write_index", half_write)
    with pytest.raises(OSError, match="No space left"):
        built(seed=1, n=700).save(tmp_path)
    _assert_previous_index_intact(tmp_path, expected)


def test_failed_json_write_leaves_previous_index_intact(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    old = built(seed=0)
    old.save(tmp_path)
    expected = old.search(QUERIES, 10)

    def crash(*args: object, **kwargs: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dumps", crash)
    with pytest.raises(KeyboardInterrupt):
        built(seed=1, n=700).save(tmp_path)
    monkeypatch.undo()
    _assert_previous_index_intact(tmp_path, expected)


def test_crash_between_renames_is_detected_not_served(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    built(seed=0).save(tmp_path)
    real_replace = os.replace
    calls: list[object] = []

    def replace_then_die(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == 2:  # index.faiss is in place, index.json is not yet
            raise OSError("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(OSError, match="power cut"):
        built(seed=1, n=700).save(tmp_path)
    monkeypatch.undo()
    assert "interrupted save" in one_line_error(load_index, tmp_path)
    fresh = built(seed=1, n=700)
    fresh.save(tmp_path)  # saving again repairs it
    np.testing.assert_array_equal(load_index(tmp_path).search(QUERIES, 5)[1],
                                  fresh.search(QUERIES, 5)[1])
