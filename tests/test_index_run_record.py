"""``index_run.json`` as one typed record (:class:`xmr.index.run_record.IndexRun`): every file written
before reads, a record written and read back is the same record, a damaged file is one error naming
the file and the field; :class:`xmr.workflows.index_job.IndexJob` checks its options once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xmr.cli import cli_wording
from xmr.errors import Call, Param, XmrError
from xmr.index.run_record import (
    INDEX_RUN_FILE,
    IndexChange,
    IndexRun,
    RecallCheck,
    RerankBuilt,
    SideChoice,
    TunedRerank,
    load_index_run,
    read_index_run,
    save_index_run,
)
from xmr.utils.io import to_jsonable
from xmr.workflows.index_job import IndexJob

OLD_RUNS = Path(__file__).parent / "data" / "old_runs" / "runs"

#: what each writer of ``index_run.json`` wrote, from the first commit on (and a benchmark's synthetic index)
ERAS: dict[str, dict[str, object]] = {
    "first": {"run": "/r", "model_id": "m1", "manifest": "m.jsonl", "split": "test", "factory": "Flat",
              "n_images": 3, "n_texts": 4, "command": "xmr index /r"},
    "rerank": {"run": "/r", "model_id": "m1", "manifest": "m.jsonl", "split": None, "factory": "HNSW32",
               "n_images": 3, "n_texts": 4, "n_skipped": 1, "fingerprint": "f" * 40, "command": None,
               "rerank": {"diffusion": {"targets": ["images", "texts"], "params": {"k": 10, "alpha": 0.9}}}},
    "folder": {"run": "/r", "model_id": "m1", "images": "/photos", "recursive": True, "split": None, "factory": "Flat",
               "n_images": 3, "n_texts": 0, "n_skipped": 2, "rerank": {}, "fingerprint": "f" * 40, "command": None},
    "auto": {"run": "/r", "model_id": "m1", "manifest": "m.jsonl", "split": None, "factory": "auto",
             "chosen": {"images": {"factory": "IVF4,PQ4x4np", "auto": True, "budget": 1 << 30,
                                   "estimated_bytes": 4096, "reason": "fits"},
                        "texts": {"factory": "Flat", "auto": True, "budget": 1 << 30, "estimated_bytes": 512,
                                  "reason": "small"}},
             "checks": {"text_to_image_recall@10": 0.875, "min_recall": 0.9, "ok": False}, "texts_per_item": 1,
             "search_params": {"nprobe": 4, "refine": 64}, "n_images": 64, "n_texts": 70, "n_skipped": 0,
             "rerank": {}, "fingerprint": "f" * 40, "command": "xmr index /r --memory-budget 1GB"},
    "tuned": {"run": "/r", "model_id": "m1", "manifest": "m.jsonl", "split": "test", "factory": "Flat",
              "chosen": {"images": {"factory": "Flat"}, "texts": {"factory": "Flat"}}, "checks": {},
              "texts_per_item": None, "search_params": {}, "n_images": 8, "n_texts": 8, "n_skipped": 0,
              "rerank": {"diffusion": {"targets": ["images"], "params": {"k": 4},
                                       "tuned": {"images": {"split": "val", "params": {"k": 4, "alpha": 0.8},
                                                            "score": 120.5, "plain": 118, "helps": True}}}},
              "fingerprint": "f" * 40, "command": None},
    "edited": {"run": "/r", "model_id": "m1", "manifest": "m.jsonl", "split": None, "factory": "Flat",
               "n_images": 5, "n_texts": 6, "n_skipped": 1, "rerank": {}, "rerank_stale": ["diffusion"],
               "fingerprint": "f" * 40, "command": None,
               "edits": [{"add": "new.jsonl", "images": 3, "texts": 2, "skipped": 1, "command": "xmr index add"},
                         {"remove": ["a", "b"], "images": 2, "texts": 0, "command": None}]},
    "shards": {"run": "/r", "model_id": "m1", "shards": "/s", "split": None, "factory": "Flat",
               "chosen": {"images": {"factory": "Flat"}, "texts": {"factory": "Flat"}}, "checks": {},
               "texts_per_item": None, "search_params": {}, "n_images": 64, "n_texts": 70, "n_skipped": 0,
               "rerank": {}, "fingerprint": "f" * 40, "command": None},
    "bench-serve": {"run": "/r", "model_id": "m1", "n_images": 1000, "n_texts": 0, "synthetic": True,
                    "index_type": "hnsw", "search_params": {"ef_search": 64}, "build_seconds": 1.5, "command": "x"},
}


def _written(record: IndexRun) -> dict[str, object]:
    return json.loads(json.dumps(to_jsonable(record.to_json())))


@pytest.mark.parametrize("era", sorted(ERAS))
def test_every_old_file_reads_and_writes_back_what_it_said(era: str, tmp_path: Path) -> None:
    raw = ERAS[era]
    (tmp_path / INDEX_RUN_FILE).write_text(json.dumps(raw))
    record = load_index_run(tmp_path)
    written = _written(record)
    assert {k: written[k] for k in raw} == raw  # every key kept as it was (a key added later: its default)
    (tmp_path / "again").mkdir()
    save_index_run(tmp_path / "again", record)
    assert load_index_run(tmp_path / "again") == record


def test_the_parts_are_typed() -> None:
    auto = IndexRun.from_json(ERAS["auto"], "a.json")
    assert auto.chosen["images"] == SideChoice("IVF4,PQ4x4np", auto=True, budget=1 << 30, estimated_bytes=4096,
                                               reason="fits")
    assert auto.checks == RecallCheck(10, 0.875, 0.9, False) and auto.checks.name == "text_to_image_recall@10"
    assert auto.search_params == {"nprobe": 4, "refine": 64} and auto.texts_per_item == 1
    tuned = IndexRun.from_json(ERAS["tuned"], "t.json").rerank["diffusion"]
    assert tuned == RerankBuilt(("images",), {"k": 4}, {"images": TunedRerank("val", {"k": 4, "alpha": 0.8}, 120.5,
                                                                                   118, True)})
    edited = IndexRun.from_json(ERAS["edited"], "e.json")
    assert edited.edits == (IndexChange("add", "new.jsonl", 3, 2, skipped=1, command="xmr index add"),
                            IndexChange("remove", ("a", "b"), 2, 0))
    assert edited.edit_counts() == (3, 2) and edited.rerank_stale == ("diffusion",)
    first = IndexRun.from_json(ERAS["first"], "f.json")
    assert (first.chosen, first.checks, first.rerank, first.edits, first.n_skipped) == ({}, None, {}, (), 0)
    bench = IndexRun.from_json(ERAS["bench-serve"], "b.json")
    assert bench.extra == {"synthetic": True, "index_type": "hnsw", "build_seconds": 1.5}


@pytest.mark.skipif(not OLD_RUNS.is_dir(), reason="no old run fixtures")
def test_the_indexes_of_the_old_run_fixtures_read() -> None:
    found = sorted(OLD_RUNS.glob("*/*/" + INDEX_RUN_FILE))
    assert found
    for path in found:
        raw = json.loads(path.read_text())
        record = load_index_run(path.parent)
        written = _written(record)
        assert {k: written[k] for k in raw if raw[k] != []} == {k: v for k, v in raw.items() if v != []}, path


@pytest.mark.parametrize(("change", "field", "expected"), [
    ({"n_images": "3"}, "'n_images'", "a whole number"),
    ({"n_texts": True}, "'n_texts'", "a whole number"),
    ({"run": 5}, "'run'", "a string or null"),
    ({"chosen": {"images": {"factory": "Flat", "budget": "1GB"}}}, "'chosen.images.budget'", "a whole number"),
    ({"chosen": {"both": {"factory": "Flat"}}}, "'chosen.both'", "'images' or 'texts'"),
    ({"chosen": {"images": {}}}, "'chosen.images.factory'", "missing"),
    ({"checks": {"text_to_image_recall@10": 0.5, "min_recall": 0.9}}, "'checks.ok'", "missing"),
    ({"rerank": {"diffusion": {"targets": "images", "params": {}}}}, "'rerank.diffusion.targets'", "a list"),
    ({"rerank": {"diffusion": {"targets": ["both"], "params": {}}}}, "'rerank.diffusion.targets'", "'images'"),
    ({"search_params": {"nprobe": "4"}}, "'search_params.nprobe'", "a whole number"),
    ({"edits": [{"images": 1, "texts": 0}]}, "'edits[0]'", '"add" or "remove"'),
    ({"edits": [{"remove": [1], "images": 1, "texts": 0}]}, "'edits[0].remove'", "item ids"),
    ({"rerank_stale": [3]}, "'rerank_stale'", "method names"),
])
def test_a_damaged_file_is_one_error_naming_the_file_and_the_field(change: dict[str, object], field: str,
                                                                   expected: str, tmp_path: Path) -> None:
    (tmp_path / INDEX_RUN_FILE).write_text(json.dumps({**ERAS["auto"], **change}))
    with pytest.raises(XmrError) as e:
        load_index_run(tmp_path)
    assert str(tmp_path / INDEX_RUN_FILE) in str(e.value) and field in str(e.value) and expected in str(e.value)
    assert "\n" not in str(e.value)


def test_not_an_object_and_no_file_are_one_line(tmp_path: Path) -> None:
    (tmp_path / INDEX_RUN_FILE).write_text("[]")
    with pytest.raises(XmrError, match="not a valid index description"):
        load_index_run(tmp_path)
    with pytest.raises(XmrError, match="not found"):
        load_index_run(tmp_path / "none")


def test_the_index_of_a_run_names_the_build_that_makes_one(tmp_path: Path) -> None:
    with pytest.raises(XmrError) as e:
        read_index_run(tmp_path / "idx", "runs/a")
    assert str(e.value) == f"no index at {tmp_path / 'idx'}; build one with index_run(run_dir='runs/a')"
    assert e.value.worded(cli_wording) == f"no index at {tmp_path / 'idx'}; build one with `xmr index runs/a`"
    (tmp_path / INDEX_RUN_FILE).write_text('{"n_images": "3"}')
    with pytest.raises(XmrError) as e:
        read_index_run(tmp_path, "runs/a")
    assert str(e.value).endswith("field 'n_images' is \"3\", expected a whole number; rebuild the index with "
                                 "index_run(run_dir='runs/a')")
    assert isinstance(e.value.params()[-1], Call)


# -- the job ---------------------------------------------------------------------------------------


def test_the_job_holds_every_default() -> None:
    job = IndexJob()
    assert (job.index_factory, job.rerank_targets, job.edits, job.search_params) == ("Flat", ("images",), "refuse", {})
    assert IndexJob(memory_budget="1GB").index_factory == "auto"
    assert IndexJob(factory="HNSW32").index_factory == "HNSW32"
    listed = IndexJob(rerank=["diffusion"], rerank_targets=["images", "texts"], tune="val", tune_fixed=["k"])  # type: ignore[arg-type]  # lists given are kept as tuples
    assert (listed.rerank, listed.rerank_targets, listed.tune_fixed) == (("diffusion",), ("images", "texts"), ("k",))
    assert [r.name for r in listed.rerankers()] == ["diffusion"]
    assert IndexJob(out_dir="x").out_folder("run") == Path("x") and IndexJob().out_folder("run") == Path("run/index")


@pytest.mark.parametrize(("kw", "text", "params"), [
    ({"manifest": "m", "images": "d"}, "give a gallery manifest or an images folder, not both", ["manifest", "images"]),
    ({"tune": "val"}, "tune chooses re-ranking parameters", ["tune", "rerank"]),
    ({"memory_budget": "1GB", "factory": "HNSW32"}, "memory_budget chooses the index: give it with factory='auto', "
                                                   "not 'HNSW32'", ["memory_budget", "factory"]),
    ({"memory_budget": "lots"}, "memory budget 'lots'", []),
    ({"edits": "keep", "split": "test"}, "edits='keep' indexes the items the index holds now", ["edits", "manifest"]),
    ({"edits": "maybe"}, "edits='maybe' must be one of refuse, keep, drop", ["edits"]),
    ({"shards": "s", "rerank": ("diffusion",)}, "shards indexes the shards as encoded", ["shards", "manifest"]),
    ({"texts_per_item": 0}, "texts_per_item=0 must be >= 1", ["texts_per_item"]),
    ({"rerank_targets": ("both",)}, "re-ranking target", []),
    ({"rerank": ("nope",)}, "nope", []),
])
def test_the_job_refuses_options_that_contradict_each_other(kw: dict[str, object], text: str,
                                                            params: list[str]) -> None:
    with pytest.raises(XmrError) as e:
        IndexJob(**kw)  # type: ignore[arg-type]  # each case's values
    assert text in str(e.value)
    assert [p.name for p in e.value.params()][:len(params)] == params
    assert all(isinstance(p, Param) for p in e.value.params())
