"""The one L2-normalise helper against a hand-written loop."""

from __future__ import annotations

import math

import numpy as np

from xmr.utils.arrays import l2_normalize


def test_l2_normalize_matches_a_loop() -> None:
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    x[2] = 0.0
    out = l2_normalize(x)
    for row, got in zip(x, out):
        norm = math.sqrt(sum(float(v) ** 2 for v in row))
        want = [float(v) / max(norm, 1e-12) for v in row]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    assert out.dtype == np.float32 and l2_normalize(np.array([[3, 4]])).tolist() == [[0.6, 0.8]]
