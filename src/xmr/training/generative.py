"""GXN's "imagine" updates (Algorithm 1): Gen_i2t and Gen_t2i, each followed by the trainer's rank update.

"Look, Imagine and Match" (CVPR 2018), Secs. 3.3-3.4 and Algorithm 1:

* **Gen_i2t** -- the caption decoder reads the grounded image feature v_l; the teacher-forced
  cross-entropy with scheduled sampling (Eq. 4), and after the XE-only epochs the mixed loss
  ``(1 - gamma) L_xe + gamma L_rl`` (Eq. 7), L_rl self-critical: a sampled caption's CIDEr-D
  reward minus the greedy decode's (Eqs. 5-6). CIDEr-D's document frequencies are the training
  references' (:class:`~xmr.evaluation.captions.CiderD`).
* **Gen_t2i** -- conditioning augmentation of the grounded text feature t_l, the generator
  G_i(z, t_c) and the matching-aware discriminator D_i: first D's update on <real, true>,
  <fake, true> and <real, wrong caption> (Eq. 11), then G's (Eq. 12), whose gradient reaches t_l
  through the condition and through D's caption input.

The discriminator and its optimiser live here (and in ``last.pt``), not in the saved model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xmr.errors import XmrError
from xmr.evaluation.captions import CiderD, caption_tokens
from xmr.losses.generative import caption_xe_loss, discriminator_loss, generator_loss, scst_loss
from xmr.models import JointModel
from xmr.models.captioner import decode_ids
from xmr.models.image_gan import GanConfig, ImageDiscriminator, from_pixels
from xmr.training.config import TrainConfig


@dataclass(frozen=True)
class GenerativeData:
    """What the generative paths read beside the training pairs.

    Attributes:
        caption_ids: each training text's caption-vocabulary ids, end token included, 0-padded
            (:func:`~xmr.models.captioner.caption_ids`). Shape: (n_texts, max_len), int64.
        references: per training image, its captions tokenised (:func:`caption_tokens`): the
            SCST rewards' references and CIDEr-D's document frequencies. Length: n_images.
        images: the training images at 64 x 64, RGB uint8 (the discriminator's real images).
            Shape: (n_images, 64, 64, 3); None without the t2i path.
    """

    caption_ids: torch.Tensor | None = None
    references: Sequence[Sequence[str]] | None = None
    images: np.ndarray | None = None


def image_references(relevance_rows: Sequence[Sequence[int]], texts: Sequence[str]) -> list[list[str]]:
    """Per image, its texts tokenised for CIDEr-D (``relevance_rows[i]``: the text indices of image i)."""
    tokens = [caption_tokens(t) for t in texts]
    return [[tokens[j] for j in row] for row in relevance_rows]


class GenerativePaths:
    """The generative half of Algorithm 1 for one run (built once, called per batch)."""

    def __init__(self, model: JointModel, cfg: TrainConfig, data: GenerativeData, n_images: int) -> None:
        self.cfg = cfg
        self.i2t = "i2t" in cfg.generative
        self.t2i = "t2i" in cfg.generative
        self.data = data
        self.cider: CiderD | None = None
        self.disc: ImageDiscriminator | None = None
        self.d_opt: torch.optim.Optimizer | None = None
        if self.i2t:
            if model.captioner is None or data.caption_ids is None or data.references is None:
                raise XmrError("the i2t path needs a captioner, the captions' ids and each image's references")
            if len(data.references) != n_images:
                raise XmrError(f"{len(data.references)} reference sets for {n_images} training images")
            self.cider = CiderD(data.references)
        if self.t2i:
            if model.image_generator is None or data.images is None:
                raise XmrError("the t2i path needs an image generator and the training images at 64 x 64")
            if data.images.shape[0] != n_images or data.images.shape[1:] != (64, 64, 3):
                raise XmrError(f"the t2i path's images must be ({n_images}, 64, 64, 3), got {data.images.shape}")
            self.disc = ImageDiscriminator(GanConfig(**model.image_generator.config.to_dict()))  # type: ignore[arg-type]
            self.d_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.gan_lr, betas=(0.5, 0.999))

    def update_i2t(self, model: JointModel, opt: torch.optim.Optimizer, image_feats: torch.Tensor,
                   images: torch.Tensor, texts: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """Gen_i2t lines 1-7: one optimiser step on the decoder's loss (Eq. 4, or Eq. 7 once mixed).

        Args:
            image_feats: the batch's image features. Shape: (B, image_dim).
            images, texts: the batch's image and text indices. Shape: (B,) each.
        """
        assert model.captioner is not None and self.data.caption_ids is not None and self.cider is not None
        v_l = model.embed_grounded(image_feats, "image")
        targets = self.data.caption_ids[texts]
        targets = targets[:, : int((targets != 0).sum(1).max())]
        mask = targets != 0
        xe = caption_xe_loss(model.captioner(v_l, targets, ss_prob=self.cfg.sampling_prob(epoch)), targets, mask)
        parts = {"i2t_xe": xe}
        loss = xe
        gamma = self.cfg.caption_gamma(epoch)
        if gamma > 0:
            rl, reward, baseline = self._self_critical(model, v_l, images)
            loss = (1.0 - gamma) * xe + gamma * rl
            parts.update(i2t_rl=rl, i2t_reward=reward.mean(), i2t_baseline=baseline.mean(),
                         i2t_gamma=torch.tensor(gamma))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self._clip(opt)
        opt.step()
        return parts

    def _self_critical(self, model: JointModel, v_l: torch.Tensor, images: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L_rl of Eq. 6 for a batch: a sampled caption c~ per image, the greedy c-bar as the baseline."""
        assert model.captioner is not None and model.caption_vocab is not None and self.cider is not None
        assert self.data.references is not None
        tokens, logp, mask = model.captioner.sample(v_l, greedy=False)
        model.captioner.eval()  # the baseline is the inference-time decode (no dropout)
        with torch.no_grad():
            greedy, _, _ = model.captioner.sample(v_l.detach(), greedy=True)
        model.captioner.train()
        vocab = model.caption_vocab
        refs = [self.data.references[int(i)] for i in images]
        reward = torch.tensor(self.cider.scores([decode_ids(vocab, row) for row in tokens.tolist()], refs))
        baseline = torch.tensor(self.cider.scores([decode_ids(vocab, row) for row in greedy.tolist()], refs))
        return scst_loss(logp, mask, reward, baseline), reward, baseline

    def update_t2i(self, model: JointModel, opt: torch.optim.Optimizer, text_feats: torch.Tensor,
                   images: torch.Tensor, groups: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gen_t2i lines 1-5: D's step on Eq. 11, then one step of G (and t_l) on Eq. 12.

        Args:
            text_feats: the batch's text features. Shape: (B, text_dim).
            images: the batch's image indices (the real images). Shape: (B,).
            groups: the batch's image groups: a row's wrong caption is the next row's, and counts
                only where that row's image is of another group. Shape: (B,).
        """
        assert model.image_generator is not None and self.disc is not None and self.d_opt is not None
        assert self.data.images is not None
        cfg = self.cfg
        t_l = model.embed_grounded(text_feats, "text")
        gen = model.image_generator(t_l)
        real = from_pixels(self.data.images[images.numpy()])
        shift = torch.roll(torch.arange(len(images)), 1)
        wrong_weight = (groups != groups[shift]).float()
        cond = t_l.detach()
        d = discriminator_loss(self.disc(real, cond), self.disc(gen["images"].detach(), cond),
                               self.disc(real, cond[shift]), beta_f=cfg.gan_beta_f, beta_w=cfg.gan_beta_w,
                               wrong_weight=wrong_weight)
        self.d_opt.zero_grad(set_to_none=True)
        d["loss"].backward()
        self.d_opt.step()
        g = generator_loss(self.disc(gen["images"], t_l), gen["mu"], gen["logvar"], beta_s=cfg.gan_beta_s)
        opt.zero_grad(set_to_none=True)
        g["loss"].backward()
        self._clip(opt)
        opt.step()
        self.d_opt.zero_grad(set_to_none=True)  # G's backward also reached D's weights: drop those gradients
        return {"t2i_d": d["loss"].detach(), "t2i_g": g["g_adv"].detach(), "t2i_kl": g["kl"].detach()}

    def _clip(self, opt: torch.optim.Optimizer) -> None:
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for grp in opt.param_groups for p in grp["params"]], self.cfg.grad_clip)

    def state_dict(self) -> dict[str, Any]:
        """The discriminator and its optimiser (what ``last.pt`` needs beside the model)."""
        if self.disc is None or self.d_opt is None:
            return {}
        return {"disc": self.disc.state_dict(), "d_opt": self.d_opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.disc is not None and self.d_opt is not None:
            self.disc.load_state_dict(state["disc"])
            self.d_opt.load_state_dict(state["d_opt"])
