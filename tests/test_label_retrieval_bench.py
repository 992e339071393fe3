"""The label-retrieval study (xmr.bench.label_retrieval): its fast path against label_retrieval."""

from __future__ import annotations

import numpy as np
import pytest

import xmr.bench.label_retrieval as label_retrieval_study
from xmr.rerank.geodesic import procrustes_align
from xmr.rerank.manifold_eval import n_way_k_shot_retrieval


@pytest.fixture(scope="module")
def bench():  # noqa: ANN201 - the study's module
    return label_retrieval_study


def clusters(seed: int, n_classes: int = 6, per_class: int = 12, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    pts = centres[labels] + 0.6 * rng.normal(size=(len(labels), dim))
    return pts / np.linalg.norm(pts, axis=1, keepdims=True), labels.astype(str)


@pytest.mark.parametrize("with_text", [False, True])
@pytest.mark.parametrize("epv", [1.0, 3.0, 10.0])
def test_fast_path_equals_label_retrieval(bench, with_text: bool, epv: float) -> None:
    pts, labels = clusters(0)
    extra = clusters(1, per_class=2)[0] if with_text else None
    graph, _ = bench.manifold_graph(pts, extra, epv)
    for seed in range(4):
        for n_way, k_shot in ((3, 1), (5, 3)):
            ref = n_way_k_shot_retrieval(pts, labels, n_way=n_way, k_shot=k_shot, edges_per_vertex=epv,
                                  extra_points=extra, seed=seed)
            fast = bench.score_database(pts, graph, labels, n_way, k_shot, seed)
            for key, value in ref.items():
                np.testing.assert_equal(fast[key], value, err_msg=f"{key} seed {seed} epv {epv}")


def test_pools_align_images_to_text_and_keep_unit_norm(bench) -> None:
    rng = np.random.default_rng(2)
    txt = rng.normal(size=(20, 5))
    rot, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    img = (txt - 0.3) @ rot  # a rotated, shifted copy: alignment must undo it
    align = procrustes_align(img, txt)
    data = {"val": img[:10], "test": img[10:]}
    pools = bench.make_pools(data, data, {"val": txt[:10], "test": txt[10:]},
                             {"val": np.zeros(10), "test": np.ones(10)}, align)
    points, extra = pools["test"].spaces["image+text"]
    np.testing.assert_allclose(points, bench.unit(txt[10:]), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(extra, axis=1), 1.0)
    assert pools["test"].spaces["image"][1] is None and pools["val"].spaces["pretrained"][1] is None


def test_choose_epv_prefers_sparser_graph_on_ties(bench) -> None:
    pts, labels = clusters(3, n_classes=5, per_class=10)
    pool = bench.Pool(labels, {"image": (pts, None)})
    epv, curve = bench.choose_epv(pool, "image", [0, 1], ((3, 1),))
    eu = curve.pop("euclidean")
    assert set(curve) == {f"{e:g}" for e in bench.EPV_GRID} and 0 <= eu <= 100
    best = max(curve.values())
    assert curve[f"{epv:g}"] == best
    assert epv == min(float(k) for k, v in curve.items() if v == best)
