"""Symmetric InfoNCE (the joint-embedding-manifold paper, Eq. 1; also CLIP).

For a batch of B matching pairs (psi_i, phi_i),

    L_i2t = -1/B sum_i log( exp(<psi_i, phi_i>/tau) / sum_j exp(<psi_i, phi_j>/tau) )

i.e. a softmax over the in-batch texts for each image, and L_t2i the same over the in-batch
images for each text; the loss is their mean. ``logit_scale`` is 1/tau (learnable or fixed; the
trainer owns it). Paper: "Learning a joint image-text embedding manifold", Sec. 3.1, Eq. 1.

Example::

    >>> import torch, torch.nn.functional as F
    >>> img = F.normalize(torch.randn(8, 16), dim=-1); txt = F.normalize(torch.randn(8, 16), dim=-1)
    >>> out = infonce_loss(img, txt, logit_scale=torch.tensor(14.3))
    >>> sorted(out)
    ['i2t', 'loss', 't2i']
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xmr.losses._masks import check_pair, extra_positives
from xmr.losses.registry import LOSSES, declare


@LOSSES.register("infonce")
@declare(inner_product_only=True, takes_margin=False)
def infonce_loss(img: torch.Tensor, txt: torch.Tensor, *, logit_scale: torch.Tensor | float = 1 / 0.07,
                 groups: torch.Tensor | None = None,
                 text_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Symmetric InfoNCE over in-batch negatives.

    Args:
        img: image embeddings. Shape: (B, d), L2-normalised.
        txt: text embeddings; row i matches ``img[i]``. Shape: (B, d).
        logit_scale: 1/temperature, a scalar tensor (may require grad) or float.
        groups: optional group id per pair. Shape: (B,).
        text_ids: optional text id per pair. Shape: (B,). Off-diagonal pairs with the same group or
            the same text are removed from the denominators (they are not negatives).

    Returns:
        ``{"loss", "i2t", "t2i"}``, each a scalar tensor.
    """
    check_pair(img, txt)
    logits = logit_scale * img @ txt.t()
    mask = extra_positives(img.shape[0], img.device, groups, text_ids)
    if mask.any():
        logits = logits.masked_fill(mask, float("-inf"))
    target = torch.arange(img.shape[0], device=img.device)
    i2t = F.cross_entropy(logits, target)
    t2i = F.cross_entropy(logits.t(), target)
    return {"loss": (i2t + t2i) / 2, "i2t": i2t, "t2i": t2i}
