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

The component contributes these updates as steps before the rank update (Algorithm 1: Gen_i2t
then Match, Gen_t2i then Match); the discriminator and its optimiser are its state in ``last.pt``.
It trains on the run's device (the model's: the decoder, generator and discriminator there, the
real images and rewards moved to it) and precision (the trainer runs its steps under bf16 autocast;
at fp16 they run fp32, having no loss scaling); CIDEr-D rewards are computed on the CPU.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xmr.errors import Param, XmrError
from xmr.evaluation.captions import CiderD, caption_tokens
from xmr.losses.generative import caption_xe_loss, discriminator_loss, generator_loss, scst_loss
from xmr.models import JointModel
from xmr.models.captioner import decode_ids
from xmr.models.generative import GenerativeHeads
from xmr.models.image_gan import GanConfig, ImageDiscriminator, from_pixels
from xmr.objectives.base import (
    Batch,
    EpochData,
    ExtraStep,
    Fit,
    ObjectiveComponent,
    Setup,
    TrainSettings,
    register_component,
)
from xmr.text import Vocabulary
from xmr.utils.numbers import check_finite_fields

#: GXN's generative training paths (Algorithm 1): caption decoding from v_l, image generation from t_l
GENERATIVE_PATHS = ("i2t", "t2i")


@dataclass(frozen=True)
class GenerativeConfig:
    """GXN's generative paths on the grounded branch (present when a path is on).

    Attributes:
        paths: ``"i2t"`` decodes the caption from v_l (Sec. 3.3), ``"t2i"`` generates the image
            from t_l (Sec. 3.4); each step runs a path's update and then the rank update of Eq. 3.
        caption_rl: after ``caption_xe_epochs`` XE-only epochs, train the decoder on the mixed loss
            (1 - gamma) L_xe + gamma L_rl (Eq. 7), L_rl self-critical with a CIDEr-D reward and the
            greedy decode's reward as baseline (Eqs. 5-6); False: cross-entropy throughout ("i2t, xe").
        caption_xe_epochs: XE-only epochs before the mixed loss.
        rl_gamma: gamma of Eq. 7 at the first and last mixed epoch, linear in between (GXN: 0.05 -> 0.95).
        scheduled_sampling: the highest probability that a decoder step reads its own sampled
            word instead of the ground truth (Algorithm 1, Gen_i2t line 2).
        scheduled_sampling_step: that probability's rise per epoch (0, step, 2 step, ... up to the highest).
        gan_beta_f, gan_beta_w: weights of the fake-image and wrong-caption terms of D's loss (Eq. 11; GXN 0.5, 0.5).
        gan_beta_s: weight of the conditioning-augmentation KL in G's loss (Eq. 12; GXN 2).
        gan_lr: Adam learning rate of the discriminator (betas 0.5, 0.999; GXN: 2e-4).
    """

    paths: tuple[str, ...]
    # Gen_i2t: the caption decoder's schedule (Sec. 3.3)
    caption_rl: bool = True
    caption_xe_epochs: int = 1
    rl_gamma: tuple[float, float] = (0.05, 0.95)
    scheduled_sampling: float = 0.25
    scheduled_sampling_step: float = 0.05
    # Gen_t2i: the GAN's losses and D's optimiser (Sec. 3.4)
    gan_beta_f: float = 0.5
    gan_beta_w: float = 0.5
    gan_beta_s: float = 2.0
    gan_lr: float = 2e-4

    def __post_init__(self) -> None:
        check_finite_fields(self)
        object.__setattr__(self, "paths", tuple(self.paths))  # JSON lists too
        object.__setattr__(self, "rl_gamma", tuple(float(g) for g in self.rl_gamma))
        bad = [p for p in self.paths if p not in GENERATIVE_PATHS]
        if not self.paths or bad or len(set(self.paths)) != len(self.paths):
            raise XmrError("generative paths must be distinct names of {known}, got {paths}",
                           known=", ".join(GENERATIVE_PATHS), paths=",".join(self.paths) or "none")
        checks = {
            "caption_xe_epochs": self.caption_xe_epochs >= 0,
            "rl_gamma": len(self.rl_gamma) == 2 and all(0.0 <= g <= 1.0 for g in self.rl_gamma),
            "scheduled_sampling": 0.0 <= self.scheduled_sampling <= 1.0,
            "scheduled_sampling_step": self.scheduled_sampling_step >= 0,
            "gan_beta_f": self.gan_beta_f >= 0, "gan_beta_w": self.gan_beta_w >= 0, "gan_beta_s": self.gan_beta_s >= 0,
            "gan_lr": self.gan_lr > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise XmrError("invalid {field}: {value}", field=name, value=repr(getattr(self, name)))

    def caption_gamma(self, epoch: int, epochs: int) -> float:
        """Eq. 7's gamma in 0-based ``epoch`` of ``epochs``: 0 in the XE-only epochs (and without
        ``caption_rl``), then linear from ``rl_gamma[0]`` at the first mixed epoch to ``rl_gamma[1]`` at the last."""
        if not self.caption_rl or epoch < self.caption_xe_epochs:
            return 0.0
        span = max(1, epochs - 1 - self.caption_xe_epochs)
        lo, hi = self.rl_gamma
        return lo + (hi - lo) * min(1.0, (epoch - self.caption_xe_epochs) / span)

    def sampling_prob(self, epoch: int) -> float:
        """Scheduled sampling's probability in 0-based ``epoch``: ``step x epoch``, capped at ``scheduled_sampling``."""
        return min(self.scheduled_sampling, self.scheduled_sampling_step * epoch)


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
        caption_vocab: the caption decoder's vocabulary (with a captioner).
    """

    caption_ids: torch.Tensor | None = None
    references: Sequence[Sequence[str]] | None = None
    images: np.ndarray | None = None
    caption_vocab: Vocabulary | None = None


def image_references(relevance_rows: Sequence[Sequence[int]], texts: Sequence[str]) -> list[list[str]]:
    """Per image, its texts tokenised for CIDEr-D (``relevance_rows[i]``: the text indices of image i)."""
    tokens = [caption_tokens(t) for t in texts]
    return [[tokens[j] for j in row] for row in relevance_rows]


#: the flat ``TrainConfig`` field of older files and of the CLI -> the GenerativeConfig field
_FLAT = {"generative": "paths", "caption_rl": "caption_rl", "caption_xe_epochs": "caption_xe_epochs",
         "rl_gamma": "rl_gamma", "scheduled_sampling": "scheduled_sampling",
         "scheduled_sampling_step": "scheduled_sampling_step", "gan_beta_f": "gan_beta_f",
         "gan_beta_w": "gan_beta_w", "gan_beta_s": "gan_beta_s", "gan_lr": "gan_lr"}


@register_component
class GenerativePaths(ObjectiveComponent):
    """The generative half of Algorithm 1 for one run (built once, its steps called per batch)."""

    name = "generative"
    config_field = "generative"
    about = "GXN's generative paths"
    needs_two_branch = True
    micro_batches = False  # its own updates before the rank update embed whole batches
    config_type = GenerativeConfig
    flat_fields = _FLAT

    def __init__(self, setup: Setup, config: GenerativeConfig) -> None:
        super().__init__(setup, config)
        data = setup.inputs.get(self.name) or GenerativeData()
        if not isinstance(data, GenerativeData):
            raise XmrError("the generative paths read a GenerativeData, got {kind}", kind=type(data).__name__)
        model, n_images = setup.model, len(setup.image_groups)
        self.cfg, self.model, self.data = config, model, data
        self.device = model.logit_scale.device  # the run's device: the trainer moved the model there
        self.caption_ids = data.caption_ids.to(self.device) if data.caption_ids is not None else None
        self.epochs, self.grad_clip = setup.train.epochs, setup.train.grad_clip
        self.i2t, self.t2i = "i2t" in config.paths, "t2i" in config.paths
        self.epoch = 0
        self.heads = GenerativeHeads(model.config, data.caption_vocab)  # the model config's decoder and generator
        self.cider: CiderD | None = None
        self.disc: ImageDiscriminator | None = None
        self.d_opt: torch.optim.Optimizer | None = None
        if self.i2t:
            if self.heads.captioner is None or data.caption_ids is None or data.references is None:
                raise XmrError("the i2t path needs a captioner, the captions' ids and each image's references")
            if len(data.references) != n_images:
                raise XmrError("{refs} reference sets for {n} training images", refs=len(data.references), n=n_images)
            self.cider = CiderD(data.references)
        if self.t2i:
            if self.heads.image_generator is None or data.images is None:
                raise XmrError("the t2i path needs an image generator and the training images at 64 x 64")
            if data.images.shape[0] != n_images or data.images.shape[1:] != (64, 64, 3):
                raise XmrError("the t2i path's images must be ({n}, 64, 64, 3), got {shape}", n=n_images,
                               shape=data.images.shape)
            gan = GanConfig(**self.heads.image_generator.config.to_dict())  # type: ignore[arg-type]  # its own fields
            self.disc = ImageDiscriminator(gan).to(self.device)
            self.d_opt = torch.optim.Adam(self.disc.parameters(), lr=config.gan_lr, betas=(0.5, 0.999))

    @classmethod
    def config_from_flat(cls, flat: Mapping[str, Any], loss: str, inputs: Collection[str]) -> GenerativeConfig | None:
        """Its config from the flat ``TrainConfig`` fields of older files and of the CLI (no paths: None)."""
        if not flat.get("generative"):
            return None
        return GenerativeConfig(**{field: flat[key] for key, field in cls.flat_fields.items() if key in flat})

    @classmethod
    def check_fit(cls, config: GenerativeConfig, fit: Fit, train: TrainSettings) -> None:
        if not fit.two_branch:
            raise XmrError("the generative paths ({paths}) read GXN's grounded branch: give {fix} a lambda "
                           "(GXN: 0.5)", paths=",".join(config.paths), fix=Param("two_branch"))

    def modules(self) -> dict[str, nn.Module]:
        """The caption decoder and the image generator (named as they were inside the model before)."""
        return self.heads.parts

    def save_beside(self, directory: Path) -> None:
        """The heads go beside the model in each best checkpoint (``xmr caption`` / ``xmr imagine`` read them)."""
        self.heads.save(directory)

    def begin_epoch(self, epoch: EpochData) -> None:
        self.epoch = epoch.epoch

    def steps_before_rank(self) -> list[ExtraStep]:
        """Algorithm 1: Gen_i2t (then Match), Gen_t2i (then Match), for the paths the run trains."""
        return [*([self.i2t_step] if self.i2t else []), *([self.t2i_step] if self.t2i else [])]

    def i2t_step(self, batch: Batch, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        return self.update_i2t(self.model, opt, batch.image_feats, batch.images, batch.texts, self.epoch)

    def t2i_step(self, batch: Batch, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        return self.update_t2i(self.model, opt, batch.text_feats, batch.images, batch.groups)

    def update_i2t(self, model: JointModel, opt: torch.optim.Optimizer, image_feats: torch.Tensor,
                   images: torch.Tensor, texts: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """Gen_i2t lines 1-7: one optimiser step on the decoder's loss (Eq. 4, or Eq. 7 once mixed).

        Args:
            image_feats: the batch's image features. Shape: (B, image_dim).
            images, texts: the batch's image and text indices. Shape: (B,) each.
        """
        captioner = self.heads.captioner
        assert captioner is not None and self.caption_ids is not None and self.cider is not None
        v_l = model.embed_grounded(image_feats, "image")
        targets = self.caption_ids[texts]
        targets = targets[:, : int((targets != 0).sum(1).max())]
        mask = targets != 0
        xe = caption_xe_loss(captioner(v_l, targets, ss_prob=self.cfg.sampling_prob(epoch)), targets, mask)
        parts = {"i2t_xe": xe}
        loss = xe
        gamma = self.cfg.caption_gamma(epoch, self.epochs)
        if gamma > 0:
            rl, reward, baseline = self._self_critical(v_l, images)
            loss = (1.0 - gamma) * xe + gamma * rl
            parts.update(i2t_rl=rl, i2t_reward=reward.mean(), i2t_baseline=baseline.mean(),
                         i2t_gamma=torch.tensor(gamma, device=xe.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self._clip(opt)
        opt.step()
        return parts

    def _self_critical(self, v_l: torch.Tensor, images: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L_rl of Eq. 6 for a batch: a sampled caption c~ per image, the greedy c-bar as the baseline."""
        captioner, vocab = self.heads.captioner, self.heads.caption_vocab
        assert captioner is not None and vocab is not None and self.cider is not None
        assert self.data.references is not None
        tokens, logp, mask = captioner.sample(v_l, greedy=False)
        captioner.eval()  # the baseline is the inference-time decode (no dropout)
        with torch.no_grad():
            greedy, _, _ = captioner.sample(v_l.detach(), greedy=True)
        captioner.train()
        refs = [self.data.references[int(i)] for i in images]
        reward = torch.tensor(self.cider.scores([decode_ids(vocab, row) for row in tokens.tolist()], refs),
                              device=logp.device)
        baseline = torch.tensor(self.cider.scores([decode_ids(vocab, row) for row in greedy.tolist()], refs),
                                device=logp.device)
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
        generator = self.heads.image_generator
        assert generator is not None and self.disc is not None and self.d_opt is not None
        assert self.data.images is not None
        cfg = self.cfg
        t_l = model.embed_grounded(text_feats, "text")
        gen = generator(t_l)
        real = from_pixels(self.data.images[images.cpu().numpy()]).to(self.device)
        shift = torch.roll(torch.arange(len(images), device=images.device), 1)
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
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for grp in opt.param_groups for p in grp["params"]], self.grad_clip)

    def state_dict(self) -> dict[str, Any]:
        """The discriminator and its optimiser (what ``last.pt`` needs beside the trained modules)."""
        if self.disc is None or self.d_opt is None:
            return {}
        return {"disc": self.disc.state_dict(), "d_opt": self.d_opt.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.disc is not None and self.d_opt is not None:
            self.disc.load_state_dict(state["disc"])
            self.d_opt.load_state_dict(state["d_opt"])
