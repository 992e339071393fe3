"""GXN's text-to-image path: conditioning augmentation, the generator G_i and the matching-aware D_i.

"Look, Imagine and Match" (CVPR 2018), Sec. 3.4. The grounded text feature t_l is compressed by
phi to a Gaussian N(mu, sigma) (conditioning augmentation, from StackGAN, Zhang et al. ICCV 2017),
``t_c = mu + sigma * eps`` is drawn by reparameterisation so gradients reach t_l, and
``G_i(z, t_c)`` draws a 64 x 64 x 3 image in [-1, 1]. ``D_i(image, t_l)`` scores whether the
image is real *and* matches the caption (a logit; Eqs. 9-12 in :mod:`xmr.losses.generative`).

Both networks are DCGAN-style (Radford et al. 2016) and small enough for a CPU: the generator
upsamples 4 -> 8 -> 16 -> 32 -> 64 with nearest-neighbour + 3x3 convolutions, the discriminator
halves 64 -> 4 with strided 4x4 convolutions and joins the compressed caption at 4 x 4.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from xmr.errors import XmrError

IMAGE_SIZE = 64


@dataclass(frozen=True)
class GanConfig:
    """Architecture of the text-to-image path (saved in the model config).

    Attributes:
        cond_dim: size of t_l (the grounded branch: embed_dim / 2).
        c_dim: size of t_c, the augmented condition (StackGAN: 128).
        z_dim: size of the noise z.
        ngf, ndf: channel widths of G and D (the 4 x 4 stage has 8 x that many; DCGAN: 64; 16 here
            halves a t2i step's time against 24 on 2 CPU cores: 0.78 s vs 1.51 s at batch 128).
    """

    cond_dim: int
    c_dim: int = 64
    z_dim: int = 64
    ngf: int = 16
    ndf: int = 16

    def __post_init__(self) -> None:
        for name in ("cond_dim", "c_dim", "z_dim", "ngf", "ndf"):
            if int(getattr(self, name)) < 1:
                raise XmrError(f"GAN {name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class ConditioningAugmentation(nn.Module):
    """t_l -> (t_c, mu, logvar): phi (a linear map and a leaky ReLU), then mu and log sigma^2 (Eq. 12's Gaussian).

    ``forward(t, sample=True)`` draws ``t_c = mu + exp(logvar / 2) * eps``; ``sample=False``
    returns ``t_c = mu`` (the mean condition, for a repeatable picture). Shapes: (B, cond_dim) ->
    (B, c_dim) x 3.
    """

    def __init__(self, cond_dim: int, c_dim: int) -> None:
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(cond_dim, 2 * c_dim), nn.LeakyReLU(0.2))
        self.stats = nn.Linear(2 * c_dim, 2 * c_dim)
        self.c_dim = c_dim

    def forward(self, t: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.stats(self.phi(t)).chunk(2, dim=-1)
        logvar = logvar.clamp(-10.0, 10.0)
        if not sample:
            return mu, mu, logvar
        eps = _normal(mu.shape, generator, mu)
        return mu + (0.5 * logvar).exp() * eps, mu, logvar


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ImageGenerator(nn.Module):
    """G_i(z, t_c) with its conditioning augmentation: t_l (B, cond_dim) -> images (B, 3, 64, 64) in [-1, 1]."""

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        self.config = config
        g = config.ngf
        self.ca = ConditioningAugmentation(config.cond_dim, config.c_dim)
        self.fc = nn.Sequential(nn.Linear(config.z_dim + config.c_dim, 8 * g * 16, bias=False),
                                nn.BatchNorm1d(8 * g * 16), nn.ReLU(inplace=True))
        self.ups = nn.Sequential(_up(8 * g, 4 * g), _up(4 * g, 2 * g), _up(2 * g, g), _up(g, g))
        self.to_rgb = nn.Sequential(nn.Conv2d(g, 3, 3, padding=1), nn.Tanh())

    def forward(self, t_l: torch.Tensor, z: torch.Tensor | None = None, *, sample: bool = True,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``{"images": (B, 3, 64, 64), "mu", "logvar", "t_c": (B, c_dim)}``; z ~ N(0, I) unless given."""
        t_c, mu, logvar = self.ca(t_l, sample=sample, generator=generator)
        if z is None:
            z = _normal((len(t_l), self.config.z_dim), generator, t_l)
        x = self.fc(torch.cat([z, t_c], dim=1)).view(len(t_l), 8 * self.config.ngf, 4, 4)
        return {"images": self.to_rgb(self.ups(x)), "mu": mu, "logvar": logvar, "t_c": t_c}


class ImageDiscriminator(nn.Module):
    """D_i(image, t_l): images (B, 3, 64, 64) in [-1, 1] and t_l (B, cond_dim) -> logits (B,)."""

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        d = config.ndf

        def down(cin: int, cout: int, bn: bool = True) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 4, 2, 1, bias=not bn), *([nn.BatchNorm2d(cout)] if bn else []),
                    nn.LeakyReLU(0.2, inplace=True)]

        self.image = nn.Sequential(*down(3, d, bn=False), *down(d, 2 * d), *down(2 * d, 4 * d), *down(4 * d, 8 * d))
        self.cond = nn.Sequential(nn.Linear(config.cond_dim, config.c_dim), nn.LeakyReLU(0.2))
        self.joint = nn.Sequential(nn.Conv2d(8 * d + config.c_dim, 8 * d, 1, bias=False), nn.BatchNorm2d(8 * d),
                                   nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(8 * d, 1, 4))

    def forward(self, images: torch.Tensor, t_l: torch.Tensor) -> torch.Tensor:
        h = self.image(images)
        c = self.cond(t_l)[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
        return self.joint(torch.cat([h, c], dim=1)).flatten()


def _normal(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None, like: torch.Tensor
            ) -> torch.Tensor:
    """N(0, I) noise of ``shape`` drawn on the CPU (from ``generator`` when given: the same draw on every
    device), then on ``like``'s device and dtype (on the CPU at fp32: the draw itself)."""
    return torch.randn(shape, generator=generator, dtype=like.dtype if like.device.type == "cpu" else torch.float32
                       ).to(device=like.device, dtype=like.dtype)


def to_pixels(images: torch.Tensor) -> np.ndarray:
    """Generator output in [-1, 1] -> uint8 RGB. Shape: (B, 3, H, W) -> (B, H, W, 3)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def from_pixels(pixels: np.ndarray) -> torch.Tensor:
    """uint8 RGB (B, H, W, 3) -> float images in [-1, 1] (B, 3, H, W), as the discriminator reads them."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
