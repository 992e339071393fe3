"""Training objectives as pure functions of embeddings (open_clip style).

Each loss takes L2-normalised image and text embeddings of shape (B, d), where row i of each is
a matching pair, and returns a dict with a ``"loss"`` scalar plus parts worth logging.
Identity losses (batch-hard triplet, identity cross-entropy) take one embedding batch and labels
instead of a pair, so they are exported here but not registered; so is the instance loss, which
also takes the shared classifier's weight.
"""

from __future__ import annotations

from xmr.losses.batch_hard import batch_hard_triplet_loss, identity_ce_loss
from xmr.losses.contrastive import infonce_loss
from xmr.losses.instance import StageWeights, TwoStageSchedule, instance_loss
from xmr.losses.ranking import vse_loss
from xmr.losses.registry import LOSSES, create_loss
from xmr.losses.similarity import SIMILARITIES, cosine_similarity, order_similarity, two_branch_similarity

__all__ = ["LOSSES", "create_loss", "infonce_loss", "vse_loss", "batch_hard_triplet_loss", "identity_ce_loss",
           "instance_loss", "TwoStageSchedule", "StageWeights", "SIMILARITIES", "cosine_similarity",
           "order_similarity", "two_branch_similarity"]
