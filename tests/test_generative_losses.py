"""GXN's generative losses against hand-written references (Eqs. 4-7, 9-12)."""

from __future__ import annotations

import math

import pytest
import torch

from xmr.losses.generative import caption_xe_loss, discriminator_loss, generator_loss, kl_standard_normal, scst_loss
from xmr.models.captioner import CaptionDecoder, CaptionerConfig
from xmr.models.image_gan import ConditioningAugmentation


def test_caption_xe_equals_a_loop_over_words() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7)
    targets = torch.randint(1, 7, (3, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    targets[~mask] = 0
    total = 0.0
    for b in range(3):
        for t in range(5):
            if mask[b, t]:
                p = math.exp(float(logits[b, t, targets[b, t]])) / float(logits[b, t].exp().sum())
                total -= math.log(p)
    assert float(caption_xe_loss(logits, targets, mask)) == pytest.approx(total / 3, rel=1e-5)


def test_scst_gradient_is_minus_advantage_times_grad_log_p_on_a_toy_decoder() -> None:
    torch.manual_seed(1)
    dec = CaptionDecoder(CaptionerConfig(vocab_size=9, in_dim=4, word_dim=5, hidden_dim=6, max_len=6, dropout=0.0))
    v = torch.randn(4, 4)
    torch.manual_seed(2)
    tokens, logp, mask = dec.sample(v, greedy=False)
    reward, baseline = torch.tensor([1.0, 0.2, 0.5, 0.0]), torch.tensor([0.5, 0.5, 0.1, 0.3])
    params = list(dec.parameters())
    got = torch.autograd.grad(scst_loss(logp, mask, reward, baseline), params, allow_unused=True)
    # reference: for each sample, its sequence log-probability recomputed by teacher-forcing its own
    # tokens, differentiated alone; then -(r - b) x that gradient, averaged over the batch
    expect = [torch.zeros_like(p) for p in params]
    for b in range(4):
        seq = tokens[b: b + 1, : int(mask[b].sum())]
        lp = torch.log_softmax(dec(v[b: b + 1], seq), -1).gather(-1, seq[..., None]).sum()
        for acc, g in zip(expect, torch.autograd.grad(lp, params, allow_unused=True)):
            if g is not None:
                acc -= (reward[b] - baseline[b]) * g / 4
    for g, e in zip(got, expect):
        torch.testing.assert_close(g if g is not None else torch.zeros_like(e), e, rtol=1e-4, atol=1e-6)


def test_scst_with_the_reward_equal_to_its_baseline_has_no_gradient() -> None:
    logp = torch.randn(3, 4, requires_grad=True)
    loss = scst_loss(logp, torch.ones(3, 4, dtype=torch.bool), torch.ones(3), torch.ones(3))
    (g,) = torch.autograd.grad(loss, logp)
    assert float(g.abs().max()) == 0.0


def test_kl_matches_the_closed_form_and_torch_distributions() -> None:
    torch.manual_seed(3)
    mu, logvar = torch.randn(5, 4), torch.randn(5, 4)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(5, 4), torch.ones(5, 4))
    expect = torch.distributions.kl_divergence(q, p).sum(1).mean()
    torch.testing.assert_close(kl_standard_normal(mu, logvar), expect)
    assert float(kl_standard_normal(torch.zeros(2, 3), torch.zeros(2, 3))) == 0.0


def test_reparameterised_condition_has_the_predicted_mean_and_variance() -> None:
    torch.manual_seed(4)
    ca = ConditioningAugmentation(cond_dim=6, c_dim=3)
    t = torch.randn(1, 6).expand(20000, 6)
    t_c, mu, logvar = ca(t)
    torch.testing.assert_close(t_c.mean(0), mu[0], atol=0.03, rtol=0)
    torch.testing.assert_close(t_c.var(0), logvar[0].exp(), atol=0.03, rtol=0.05)
    mean_only, _, _ = ca(t[:2], sample=False)
    torch.testing.assert_close(mean_only, mu[:2])
    # the sample is differentiable with respect to t_l (the point: G's loss shapes the text feature)
    x = torch.randn(2, 6, requires_grad=True)
    (g,) = torch.autograd.grad(ca(x)[0].sum(), x)
    assert float(g.abs().sum()) > 0


def test_discriminator_and_generator_losses_are_eqs_11_and_12_by_hand() -> None:
    real, fake, wrong = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0]), torch.tensor([1.0, 0.0])

    def sig(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    # Eq. 11, the value D maximises: E log D(real) + bf E log(1 - D(fake)) + bw E log(1 - D(wrong))
    value = (sum(math.log(sig(x)) for x in real.tolist()) / 2
             + 0.5 * sum(math.log(1 - sig(x)) for x in fake.tolist()) / 2
             + 0.5 * sum(math.log(1 - sig(x)) for x in wrong.tolist()) / 2)
    assert float(discriminator_loss(real, fake, wrong, beta_f=0.5, beta_w=0.5)["loss"]) == pytest.approx(-value)
    only_first = discriminator_loss(real, fake, wrong, wrong_weight=torch.tensor([1.0, 0.0]))
    assert float(only_first["d_wrong"]) == pytest.approx(-math.log(1 - sig(1.0)))
    mu, logvar = torch.tensor([[0.3, -0.2]]), torch.tensor([[0.1, -0.4]])
    kl = 0.5 * sum(m * m + math.exp(lv) - 1 - lv for m, lv in zip(mu[0].tolist(), logvar[0].tolist()))
    # Eq. 12 with Eq. 10 as printed (saturating): E log(1 - D(fake)) + bs KL
    sat = sum(math.log(1 - sig(x)) for x in fake.tolist()) / 2 + 2.0 * kl
    assert float(generator_loss(fake, mu, logvar, beta_s=2.0, saturating=True)["loss"]) == pytest.approx(sat)
    # the default non-saturating form: -E log D(fake) + bs KL
    nonsat = -sum(math.log(sig(x)) for x in fake.tolist()) / 2 + 2.0 * kl
    assert float(generator_loss(fake, mu, logvar, beta_s=2.0)["loss"]) == pytest.approx(nonsat)
