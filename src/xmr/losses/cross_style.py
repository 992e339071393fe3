"""Cross-style image-image InfoNCE: another style of the same item is the positive.

For B training images with embeddings v_i and, for each, the embedding p_i of another image of
its group (another art style of the same emoji), the loss is the symmetric InfoNCE of
:func:`xmr.losses.contrastive.infonce_loss` over the (v_i, p_i) pairs, other images of the same
group removed from the denominators: every image is pulled toward its other styles and pushed
from the other items of the batch. This is the in-batch counterpart of the dual-path paper's
instance loss (``../shared/papers/003``, Sec. III-B: all images of one instance are one class),
which needs a classifier over every training group and converged slowly on ~30k groups here;
it is the supervised-contrastive form of Khosla et al. 2020 with one positive per row.

Example::

    >>> import torch, torch.nn.functional as F
    >>> v = F.normalize(torch.randn(6, 8), dim=-1); p = F.normalize(torch.randn(6, 8), dim=-1)
    >>> float(cross_style_loss(v, p, torch.tensor([0, 1, 2, 3, 4, 5]), logit_scale=10.0)) > 0
    True
"""

from __future__ import annotations

import torch

from xmr.losses.contrastive import infonce_loss


def cross_style_loss(img: torch.Tensor, partner: torch.Tensor, groups: torch.Tensor, *,
                     logit_scale: torch.Tensor | float) -> torch.Tensor:
    """The image-image InfoNCE between each image and another image of its group.

    Args:
        img: image embeddings. Shape: (B, d), L2-normalised.
        partner: row i is another image of ``img[i]``'s group. Shape: (B, d).
        groups: group id per row. Shape: (B,). Rows of one group are not each other's negatives.
        logit_scale: 1/temperature (the model's, shared with the pair loss).

    Returns:
        The scalar loss (mean of both directions).
    """
    return infonce_loss(img, partner, logit_scale=logit_scale, groups=groups)["loss"]
