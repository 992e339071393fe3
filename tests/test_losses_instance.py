"""Instance loss (dual-path Eqs. 5-8), W_share and the two-stage schedule, against hand-written loops."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from xmr.errors import XmrError
from xmr.losses import TwoStageSchedule, instance_loss
from xmr.models import SharedClassifier


def _data(b: int = 6, d: int = 5, n_classes: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(b, d, generator=g, dtype=torch.float64)
    txt = torch.randn(b, d, generator=g, dtype=torch.float64)
    w = torch.randn(n_classes, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, n_classes, (b,), generator=g)
    return img, txt, w, labels


def _logits(x, w, bias=None):
    return [sum(float(wc) * float(xi) for wc, xi in zip(w[c], x)) + (float(bias[c]) if bias is not None else 0.0)
            for c in range(w.shape[0])]


def ref_branch(emb, labels, w, bias=None):
    """Mean of -log softmax(W^T f)(c) and the top-1 accuracy, one sample at a time."""
    total = correct = 0.0
    for x, c in zip(emb, labels.tolist()):
        z = _logits(x, w, bias)
        m = max(z)
        log_den = m + math.log(sum(math.exp(v - m) for v in z))
        total += log_den - z[c]
        correct += float(max(range(len(z)), key=lambda k: z[k]) == c)
    return total / len(labels), correct / len(labels)


def ref_grad_w(emb, labels, w):
    """dL/dW of the mean cross-entropy: 1/B sum_n (softmax_n - onehot_n) x_n^T."""
    grad = [[0.0] * w.shape[1] for _ in range(w.shape[0])]
    for x, c in zip(emb, labels.tolist()):
        z = _logits(x, w)
        den = sum(math.exp(v) for v in z)
        for k in range(w.shape[0]):
            coef = math.exp(z[k]) / den - (1.0 if k == c else 0.0)
            for j in range(w.shape[1]):
                grad[k][j] += coef * float(x[j]) / len(labels)
    return torch.tensor(grad, dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_instance_loss_matches_loop(seed: int) -> None:
    img, txt, w, labels = _data(seed=seed)
    out = instance_loss(img, txt, labels, w)
    li, ai = ref_branch(img, labels, w)
    lt, at = ref_branch(txt, labels, w)
    assert float(out["loss_img"]) == pytest.approx(li, rel=1e-10)
    assert float(out["loss_txt"]) == pytest.approx(lt, rel=1e-10)
    assert float(out["loss"]) == pytest.approx(li + lt, rel=1e-10)
    assert float(out["acc_img"]) == pytest.approx(ai)
    assert float(out["acc_txt"]) == pytest.approx(at)


def test_shared_weight_gets_the_gradient_of_both_branches() -> None:
    img, txt, w, labels = _data(seed=3)
    w = w.clone().requires_grad_(True)
    instance_loss(img, txt, labels, w)["loss"].backward()
    expected = ref_grad_w(img, labels, w.detach()) + ref_grad_w(txt, labels, w.detach())
    assert torch.allclose(w.grad, expected, rtol=1e-9, atol=1e-12)


def test_separate_text_labels_and_bias_match_loop() -> None:
    img, _, w, labels = _data(b=4, seed=4)
    g = torch.Generator().manual_seed(5)
    txt = torch.randn(7, w.shape[1], generator=g, dtype=torch.float64)  # more texts than images
    txt_labels = torch.tensor([0, 1, 1, 2, 3, 3, 7])
    bias = torch.randn(w.shape[0], generator=g, dtype=torch.float64)
    out = instance_loss(img, txt, labels, w, txt_labels=txt_labels, bias=bias)
    assert float(out["loss_img"]) == pytest.approx(ref_branch(img, labels, w, bias)[0], rel=1e-10)
    assert float(out["loss_txt"]) == pytest.approx(ref_branch(txt, txt_labels, w, bias)[0], rel=1e-10)


def test_perfect_classifier_has_full_accuracy_and_small_loss() -> None:
    w = torch.eye(4, dtype=torch.float64) * 20.0
    emb = torch.eye(4, dtype=torch.float64)
    out = instance_loss(emb, emb, torch.arange(4), w)
    assert float(out["acc_img"]) == 1.0 and float(out["acc_txt"]) == 1.0
    assert float(out["loss"]) < 1e-6


def test_instance_loss_errors() -> None:
    img, txt, w, labels = _data()
    with pytest.raises(XmrError, match="label 8 is outside"):
        instance_loss(img, txt, torch.tensor([0, 1, 2, 3, 4, 8]), w)
    with pytest.raises(XmrError, match=r"text embeddings must be \(B, 5\)"):
        instance_loss(img, txt[:, :3], labels, w)
    with pytest.raises(XmrError, match=r"image labels must have shape \(6,\)"):
        instance_loss(img, txt, labels[:4], w)
    with pytest.raises(XmrError, match="label_smoothing"):
        instance_loss(img, txt, labels, w, label_smoothing=1.0)


def test_shared_classifier_is_the_loss_weight() -> None:
    torch.manual_seed(0)
    clf = SharedClassifier(8, 5)
    assert clf.bias is None and [n for n, _ in clf.named_parameters()] == ["weight"]
    x = torch.randn(3, 5)
    assert torch.allclose(clf(x), x @ clf.weight.t())
    img, txt, _, labels = _data()
    out = instance_loss(img.float(), txt.float(), labels, clf.weight, bias=clf.bias)
    out["loss"].backward()
    assert clf.weight.grad is not None
    with_bias = SharedClassifier(8, 5, bias=True)
    assert with_bias.bias is not None and with_bias.bias.shape == (8,)
    with pytest.raises(XmrError, match="n_classes must be >= 1, got 0"):
        SharedClassifier(0, 5)
    with pytest.raises(XmrError, match=r"features must be \(B, 5\)"):
        clf(torch.randn(2, 4))


def test_two_stage_schedule() -> None:
    sched = TwoStageSchedule(stage1_epochs=3)
    for epoch in range(3):
        assert sched.weights(epoch) == (0.0, 1.0, 1.0, True)  # Stage I: ranking off, image side frozen
        assert sched.stage(epoch) == 1
    for epoch in (3, 4, 100):
        assert sched.weights(epoch) == (1.0, 1.0, 1.0, False)
        assert sched.stage(epoch) == 2
    assert TwoStageSchedule(stage1_epochs=0).weights(0).lambda_rank == 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        sched.stage1_epochs = 5  # type: ignore[misc]
    with pytest.raises(XmrError, match="stage1_epochs must be an int >= 0, got -1"):
        TwoStageSchedule(stage1_epochs=-1)
    with pytest.raises(XmrError, match="epoch must be >= 0"):
        sched.weights(-1)
    with pytest.raises(XmrError, match="stage2 must be three weights"):
        TwoStageSchedule(stage1_epochs=1, stage2=(1.0, 1.0))  # type: ignore[arg-type]
