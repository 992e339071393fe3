"""matches_saved: configs saved by older code still match when a field was added or an unused one removed."""

from __future__ import annotations

from dataclasses import dataclass

from xmr.utils.io import matches_saved, to_jsonable


@dataclass(frozen=True)
class _Config:
    a: int = 1
    b: str = "x"


def test_added_field_at_its_default_and_removed_empty_field_match() -> None:
    assert matches_saved({"a": 1}, _Config())  # b added later, at its default
    assert matches_saved({"a": 1, "b": "x", "gone": {}}, _Config())  # an unused field removed since
    assert not matches_saved({"a": 1, "b": "x", "gone": {"k": 1}}, _Config())  # it held something: differs
    assert not matches_saved({"a": 2}, _Config())
    assert matches_saved(to_jsonable(_Config(a=3)), _Config(a=3))


def test_train_state_round_trip_and_older_resume_files() -> None:
    import math

    from xmr.training.result import TrainState

    st = TrainState()
    st.finished_epoch({"epoch": 1, "val_rsum": 10.0})
    assert st.improved(10.0) and st.best_epoch == 1
    st.finished_epoch({"epoch": 2, "val_rsum": 9.0})
    assert not st.improved(9.0) and st.bad == 1
    assert TrainState.from_dict(st.to_dict()) == st
    old = {"epoch": 3, "best_rsum": 12.5, "best_epoch": 2, "bad": 1, "history": [], "status": "done", "stuck": 0}
    assert TrainState.from_dict(old).best_score == 12.5  # the joint trainer's older key
    assert TrainState.from_dict({"epoch": 1, "best": 7.0, "history": []}).best_score == 7.0  # the composed one's
    assert TrainState().best_score == -math.inf
    assert st.result("model", "best").best_metrics == {"rsum": 10.0}
