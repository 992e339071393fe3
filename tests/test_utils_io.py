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
