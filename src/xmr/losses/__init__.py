"""Training objectives as pure functions of embeddings (open_clip style).

Each loss takes L2-normalised image and text embeddings of shape (B, d), where row i of each is
a matching pair, and returns a dict with a ``"loss"`` scalar plus parts worth logging.
"""

from __future__ import annotations

from xmr.losses.contrastive import infonce_loss
from xmr.losses.ranking import vse_loss
from xmr.losses.registry import LOSSES, create_loss

__all__ = ["LOSSES", "create_loss", "infonce_loss", "vse_loss"]
