"""Composed queries: an image plus a modification text retrieves a target image.

A composition module f_compose(psi_x, phi_t) -> psi_xt (``modules``) moves the reference image's
feature along a direction given by the text, into the image space where it is compared with the
target images; the losses (``losses``) pull psi_xt to its target and away from the other targets.
The seed paper ("Learning a joint image-text embedding manifold", Sec. 3.3 and 4.4) runs this
"in Joint": compose *after* the joint-space projection heads g, Eq. 2,

    L = L(g(psi_x), g(phi_t)) + L(psi_xt, g(psi_x_target)),  psi_xt = f_compose(g(psi_x), g(phi_t^query))

so both inputs of the composer (and the targets) are joint-space features; with the ``add``
composer and image_dim == text_dim the text then simply translates the image in that space.
"""

from __future__ import annotations

from xmr.compose.losses import COMPOSE_LOSSES, batch_classification_loss, soft_triplet_loss
from xmr.compose.modules import (
    COMPOSERS,
    AddComposer,
    ConcatComposer,
    RelationComposer,
    TIRGComposer,
    create_composer,
)

__all__ = ["COMPOSERS", "create_composer", "TIRGComposer", "RelationComposer", "ConcatComposer", "AddComposer",
           "COMPOSE_LOSSES", "soft_triplet_loss", "batch_classification_loss"]
