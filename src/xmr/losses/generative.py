"""GXN's generative losses as pure functions of logits ("Look, Imagine and Match", CVPR 2018).

Image-to-text (Sec. 3.3): the caption decoder's teacher-forced cross-entropy (Eq. 4) and the
self-critical policy gradient (Eqs. 5-6) with the greedy decode's reward as the baseline; the two
are mixed as ``(1 - gamma) L_xe + gamma L_rl`` (Eq. 7) by the trainer.

Text-to-image (Sec. 3.4): the matching-aware discriminator loss (Eq. 9/11), the generator loss
(Eq. 10/12) and the conditioning-augmentation KL term. Eq. 9 is the value the discriminator
*maximises*; :func:`discriminator_loss` returns its negative, which the trainer minimises. With
``D = sigmoid(logit)``: ``-log D = softplus(-logit)`` and ``-log(1 - D) = softplus(logit)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xmr.errors import XmrError


def _check_tokens(values: torch.Tensor, mask: torch.Tensor, what: str) -> None:
    if values.shape[:2] != mask.shape:
        raise XmrError(f"{what}: per-token values {tuple(values.shape)} and mask {tuple(mask.shape)} disagree")


def caption_xe_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 4: ``-sum_t log p(w_t | w_<t, v_l)`` per caption, averaged over the batch.

    Args:
        logits: the decoder's scores of each step. Shape: (B, T, V).
        targets: the ground-truth word ids w_0..w_{T-1} (the end token included). Shape: (B, T).
        mask: True for the caption's real steps (through its end token). Shape: (B, T).

    Returns:
        Scalar: the summed negative log-likelihood per caption, mean over the B captions.
    """
    _check_tokens(logits, mask, "caption XE")
    logp = F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return -torch.where(mask, logp, torch.zeros_like(logp)).sum(dim=1).mean()


def scst_loss(token_logp: torch.Tensor, mask: torch.Tensor, reward: torch.Tensor,
              baseline: torch.Tensor) -> torch.Tensor:
    """Eqs. 5-6: the self-critical surrogate whose gradient is ``-(r(c~) - r_b) grad log p(c~)``.

    Args:
        token_logp: log-probabilities of the sampled words c~ (with gradient). Shape: (B, T).
        mask: True for the sampled caption's steps (through its end token). Shape: (B, T).
        reward: r(c~), e.g. CIDEr-D of each sample (no gradient). Shape: (B,).
        baseline: r_b, GXN's "inference process reward": CIDEr-D of the greedy decode c-bar. Shape: (B,).

    Returns:
        Scalar: ``-mean_b (r_b - b_b) * sum_t log p(c~_bt)``.
    """
    _check_tokens(token_logp, mask, "SCST")
    advantage = (reward - baseline).detach().to(token_logp.dtype)
    logp = torch.where(mask, token_logp, torch.zeros_like(token_logp))
    return -(advantage * logp.sum(dim=1)).mean()


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)), summed over the dimensions, mean over the batch.

    Closed form ``0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2)`` (conditioning augmentation, Eq. 12).
    Shapes: (B, C) each -> scalar.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, wrong: torch.Tensor, *, beta_f: float = 0.5,
                       beta_w: float = 0.5, wrong_weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Minus Eq. 9 / 11: ``-[log D(i, t_l) + beta_f log(1 - D(i^, t_l)) + beta_w log(1 - D(i, t_l'))]``.

    Args:
        real: D's logits of <real image, true caption>. Shape: (B,).
        fake: D's logits of <generated image, true caption>. Shape: (B,).
        wrong: D's logits of <real image, mismatched caption>. Shape: (B,).
        beta_f, beta_w: GXN's weights of the fake and wrong-caption terms (0.5, 0.5).
        wrong_weight: 1 for the rows whose mismatched caption really is another group's, 0 to
            leave a row out of the wrong term (None: all rows count). Shape: (B,).

    Returns:
        ``{"loss": scalar, "d_real", "d_fake", "d_wrong"}``: the three expectations as losses.
    """
    l_real = F.softplus(-real).mean()
    l_fake = F.softplus(fake).mean()
    per_wrong = F.softplus(wrong)
    if wrong_weight is None:
        l_wrong = per_wrong.mean()
    else:
        l_wrong = (per_wrong * wrong_weight).sum() / wrong_weight.sum().clamp(min=1.0)
    return {"loss": l_real + beta_f * l_fake + beta_w * l_wrong, "d_real": l_real, "d_fake": l_fake,
            "d_wrong": l_wrong}


def generator_loss(fake: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, *, beta_s: float = 2.0,
                   saturating: bool = False) -> dict[str, torch.Tensor]:
    """Eq. 12: the generator's adversarial term plus ``beta_s`` x the conditioning KL.

    Eq. 10 as printed, ``E log(1 - D(i^, t_l))`` minimised (``saturating=True``), has almost no
    gradient while D rejects the fakes easily -- the start of every run. The default is the
    non-saturating form ``-E log D(i^, t_l)`` with the same fixed point (Goodfellow et al. 2014,
    Sec. 3; what StackGAN, whose conditioning augmentation GXN takes, trains with).

    Args:
        fake: D's logits of <generated image, true caption> (gradient flowing to G and t_l). Shape: (B,).
        mu, logvar: the conditioning augmentation's Gaussian. Shape: (B, C) each.
        beta_s: the KL weight (GXN: 2).

    Returns:
        ``{"loss": scalar, "g_adv", "kl"}``.
    """
    adv = -F.softplus(fake).mean() if saturating else F.softplus(-fake).mean()
    kl = kl_standard_normal(mu, logvar)
    return {"loss": adv + beta_s * kl, "g_adv": adv, "kl": kl}
