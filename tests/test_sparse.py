"""Sparse parallel corpora (A3VSE Sec. 4.1): spec parsing, exact counts, determinism."""

from __future__ import annotations

import pytest

from xmr.data.manifest import Item
from xmr.data.sparse import SparseSpec, sparsify
from xmr.errors import XmrError


def _items(n_train: int = 40, n_test: int = 5, texts: int = 5) -> list[Item]:
    out = [Item(id=f"tr{i:03d}", image=f"/img/{i}.png", texts=tuple(f"t{i}-{j}" for j in range(texts)),
                group=f"g{i // 4}", split="train") for i in range(n_train)]
    out += [Item(id=f"te{i}", image=f"/img/te{i}.png", texts=("a", "b"), split="test")
            for i in range(n_test)]
    return out


@pytest.mark.parametrize("text, fraction, k", [("0.1x1", 0.1, 1), ("0.2x2", 0.2, 2),
                                               ("0.5xall", 0.5, None), (" 1 x ALL ", 1.0, None),
                                               (".25x3", 0.25, 3)])
def test_parse(text: str, fraction: float, k: int | None) -> None:
    spec = SparseSpec.parse(text)
    assert spec == SparseSpec(fraction, k)
    assert SparseSpec.parse(str(spec)) == spec


@pytest.mark.parametrize("text", ["", "0.1", "x1", "0.1x", "0.1x0", "0x1", "1.5x1", "0.1xsome",
                                  "-0.1x1", "0.1x1x2"])
def test_parse_errors(text: str) -> None:
    with pytest.raises(XmrError, match="bad sparse spec"):
        SparseSpec.parse(text)


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="fraction"):
        SparseSpec(0.0, 1)
    with pytest.raises(ValueError, match="texts_per_image"):
        SparseSpec(0.5, 0)


@pytest.mark.parametrize("spec, n_kept, per_image", [("0.1x1", 4, 1), ("0.2x2", 8, 2),
                                                      ("0.5xall", 20, 5), ("0.01x1", 1, 1),
                                                      ("0.0125x1", 1, 1), ("1xall", 40, 5)])
def test_exact_counts(spec: str, n_kept: int, per_image: int) -> None:
    items = _items()
    out = sparsify(items, spec, seed=3)
    assert len(out.items) == len(items)
    assert len(out.annotated) == n_kept and len(out.annotated) + len(out.unannotated) == 40
    for before, after in zip(items, out.items, strict=True):
        assert before.id == after.id and before.image == after.image
        if before.split != "train":
            assert after == before  # other splits untouched
        elif after.id in out.annotated:
            assert len(after.texts) == per_image and set(after.texts) <= set(before.texts)
            assert list(after.texts) == [t for t in before.texts if t in after.texts]  # order kept
        else:
            assert after.texts == ()
    assert out.n_pairs == n_kept * per_image


def test_round_half_up() -> None:
    assert SparseSpec(0.5, 1).n_kept(5) == 3  # 2.5 -> 3 (Python's round() would give 2)
    assert SparseSpec(0.1, 1).n_kept(0) == 0


def test_deterministic_and_order_independent() -> None:
    items = _items()
    a = sparsify(items, "0.2x2", seed=7)
    b = sparsify(list(reversed(items)), "0.2x2", seed=7)
    c = sparsify(items, "0.2x2", seed=8)
    assert a.annotated == b.annotated and a.items == sparsify(items, "0.2x2", seed=7).items
    assert {it.id: it.texts for it in a.items} == {it.id: it.texts for it in b.items}
    assert a.annotated != c.annotated


def test_by_group_keeps_whole_groups() -> None:
    out = sparsify(_items(), "0.2x1", seed=0, by_group=True)  # 10 groups of 4 -> 2 groups
    groups = {it.group for it in out.items if it.id in out.annotated}
    assert len(groups) == 2 and len(out.annotated) == 8


def test_split_none_and_summary() -> None:
    out = sparsify(_items(n_train=10, n_test=10), SparseSpec(0.5, None), seed=1, split=None)
    assert len(out.annotated) == 10
    s = out.summary()
    assert s["spec"] == "0.5xall" and s["annotated"] == 10 and len(s["annotated_ids"]) == 10
