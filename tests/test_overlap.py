"""Overlap indicator S (dual-path Eq. 10) against a brute-force histogram, and the pair similarities."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import sparse

from xmr.errors import XmrError
from xmr.evaluation import overlap_indicator, plot_overlap_histogram, positive_negative_sims


def brute_force_overlap(pos, neg, bins, lo=-1.0, hi=1.0):
    """Integral of min(P, Q) with P, Q density histograms, bin by bin and value by value."""
    width = (hi - lo) / bins
    total = 0.0
    for b in range(bins):
        left, right = lo + b * width, lo + (b + 1) * width
        last = b == bins - 1

        def density(values):
            inside = sum(1 for v in values if left <= v < right or (last and v == right))
            return inside / len(values) / width

        total += min(density(pos), density(neg)) * width
    return total


@pytest.mark.parametrize("bins", [1, 7, 50])
@pytest.mark.parametrize("seed", [0, 1])
def test_overlap_matches_brute_force(bins: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pos = np.clip(rng.normal(0.4, 0.2, 300), -1, 1)
    neg = np.clip(rng.normal(0.0, 0.25, 700), -1, 1)
    s = overlap_indicator(pos, neg, bins=bins)
    assert s == pytest.approx(brute_force_overlap(pos.tolist(), neg.tolist(), bins), abs=1e-12)
    assert 0.0 <= s <= 1.0


def test_identical_distributions_overlap_fully_and_disjoint_not_at_all() -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, 1000)
    assert overlap_indicator(x, x.copy()) == pytest.approx(1.0)
    assert overlap_indicator(x, np.concatenate([x, x])) == pytest.approx(1.0)  # sizes differ, shapes equal
    assert overlap_indicator(rng.uniform(0.5, 1.0, 200), rng.uniform(-1.0, 0.4, 500), bins=20) == 0.0
    assert overlap_indicator([1.0], [1.0 + 1e-9]) == pytest.approx(1.0)  # rounding noise past 1 is clipped in


def test_overlap_errors() -> None:
    with pytest.raises(XmrError, match="positive similarities are empty"):
        overlap_indicator([], [0.1])
    with pytest.raises(XmrError, match="negative similarity 1.5 is outside"):
        overlap_indicator([0.1], [0.2, 1.5])
    with pytest.raises(XmrError, match="bins must be an int >= 1, got 0"):
        overlap_indicator([0.1], [0.2], bins=0)
    with pytest.raises(XmrError, match="NaN"):
        overlap_indicator([np.nan], [0.2])
    assert overlap_indicator([3.0], [3.5], value_range=(0.0, 4.0), bins=2) == 1.0


def ref_pairs(img, txt, rel):
    pos, neg = [], []
    for i in range(img.shape[0]):
        for t in range(txt.shape[0]):
            c = float(img[i] @ txt[t] / np.linalg.norm(img[i]) / np.linalg.norm(txt[t]))
            (pos if rel[i, t] else neg).append(c)
    return np.array(pos), np.array(neg)


@pytest.mark.parametrize("as_sparse", [False, True])
def test_positive_negative_sims_match_loop(as_sparse: bool) -> None:
    rng = np.random.default_rng(3)
    img, txt = rng.normal(size=(6, 4)), rng.normal(size=(9, 4))
    rel = rng.random((6, 9)) < 0.25
    pos, neg = positive_negative_sims(img, txt, sparse.csr_matrix(rel) if as_sparse else rel, chunk_rows=4)
    ref_pos, ref_neg = ref_pairs(img, txt, rel)
    np.testing.assert_allclose(pos, ref_pos, rtol=1e-12)
    np.testing.assert_allclose(np.sort(neg), np.sort(ref_neg), rtol=1e-12)


def test_sampled_negatives_are_a_subset_of_negatives() -> None:
    rng = np.random.default_rng(4)
    img, txt = rng.normal(size=(10, 3)), rng.normal(size=(12, 3))
    rel = np.zeros((10, 12), dtype=bool)
    rel[np.arange(10), np.arange(10)] = True
    _, all_neg = positive_negative_sims(img, txt, rel)
    _, some = positive_negative_sims(img, txt, rel, max_negatives=30, seed=1)
    assert 0 < len(some) <= 30
    assert np.isin(np.round(some, 12), np.round(all_neg, 12)).all()
    _, again = positive_negative_sims(img, txt, rel, max_negatives=30, seed=1)
    np.testing.assert_array_equal(some, again)
    with pytest.raises(XmrError, match=r"relevance has shape \(10, 11\)"):
        positive_negative_sims(img, txt, rel[:, :11])


def test_plot_writes_a_png_and_returns_s(tmp_path) -> None:
    rng = np.random.default_rng(5)
    pos, neg = rng.uniform(-0.2, 1.0, 200), rng.uniform(-1.0, 0.4, 800)
    path = tmp_path / "overlap.png"
    s = plot_overlap_histogram(pos, neg, path, bins=40)
    assert s == pytest.approx(overlap_indicator(pos, neg, bins=40))
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (640, 400)
    assert [p.name for p in tmp_path.iterdir()] == ["overlap.png"]  # no temporary left behind


def test_overlap_module_does_not_import_torch() -> None:
    code = "import sys, xmr.evaluation.overlap; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
