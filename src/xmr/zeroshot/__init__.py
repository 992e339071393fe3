"""Zero-shot cross-modal image retrieval on heterogeneous manifolds (Yang et al., AAAI 2020).

* :mod:`xmr.zeroshot.identity` (torch): single-modal identity classifiers and the two-stream
  cross-modal model (CE + beta * batch-hard triplet) on frozen features, the P x K sampler.
* :mod:`xmr.zeroshot.manifolds` (numpy/scipy): homogeneous / heterogeneous bi-directional random
  walks (Eqs. 1-8, gallery-guided truncation), their fusion and the Rank-K / mAP evaluation.
"""

from __future__ import annotations

from xmr.zeroshot.identity import (
                                   IdentityTrainConfig,
                                   SingleModalNet,
                                   TwoStreamNet,
                                   embed,
                                   pk_batches,
                                   train_single_modal,
                                   train_two_stream,
)
from xmr.zeroshot.manifolds import WalkConfig, fuse, retrieval_metrics, walk_both_ways, with_fallback

__all__ = ["IdentityTrainConfig", "SingleModalNet", "TwoStreamNet", "embed", "pk_batches",
           "train_single_modal", "train_two_stream", "WalkConfig", "walk_both_ways", "fuse",
           "with_fallback", "retrieval_metrics"]
