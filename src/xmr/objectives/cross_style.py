"""The cross-style term: each training image against another image of its group, added to the objective.

:func:`xmr.losses.cross_style.cross_style_loss` (an image-image InfoNCE) between each batch image and
a partner drawn afresh each epoch from its group (another art style of the same emoji; an icon is
its own group and takes no part), weighted by ``weight``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xmr.errors import XmrError
from xmr.losses.cross_style import cross_style_loss
from xmr.objectives.base import EpochData, ObjectiveComponent, Setup, Step, Terms, register_component
from xmr.utils.numbers import check_finite_fields


@dataclass(frozen=True)
class CrossStyleConfig:
    """The cross-style term (present when it is on).

    Attributes:
        weight: its weight in the objective (> 0).
    """

    weight: float

    def __post_init__(self) -> None:
        check_finite_fields(self)
        if not self.weight > 0:
            raise XmrError("invalid {field}: {value}", field="cross_style", value=repr(self.weight))


def group_partners(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each image, another image of its group drawn uniformly (-1 if it is its group's only one).

    Args:
        groups: group id per image. Shape: (n_images,).

    Returns:
        Partner index per image, never the image itself. Shape: (n_images,), int64.
    """
    order = np.argsort(groups, kind="stable")
    _, start, count = np.unique(groups[order], return_index=True, return_counts=True)
    first = np.repeat(start, count)  # per sorted position: where its group starts
    size = np.repeat(count, count)
    offset = rng.integers(1, np.maximum(size, 2))  # 1..size-1: never the image itself
    pos = np.arange(len(order))
    partner_pos = first + (pos - first + offset) % size
    out = np.full(len(groups), -1, dtype=np.int64)
    out[order] = np.where(size > 1, order[partner_pos], -1)
    return out


@register_component
class CrossStyleTerm(ObjectiveComponent):
    """``out["loss"] + weight x`` the cross-style term over the batch's images that have a partner."""

    name = "cross_style"
    config_field = "cross_style"
    about = "the cross-style term"
    reads_epoch_features = True  # a partner image's features, from the whole epoch's
    config_type = CrossStyleConfig
    flat_fields = {"cross_style": "weight"}

    def __init__(self, setup: Setup, config: CrossStyleConfig) -> None:
        super().__init__(setup, config)
        self.config = config
        self.model = setup.model
        self.seed = setup.train.seed
        self.partners = torch.zeros(0, dtype=torch.int64)
        self.image_feats = torch.zeros(0)
        self.groups = torch.zeros(0, dtype=torch.int64)

    @classmethod
    def config_from_flat(cls, flat: Mapping[str, Any], loss: str, inputs: Collection[str]) -> CrossStyleConfig | None:
        """Its config from the flat ``cross_style`` weight of older files and of the CLI (0: off)."""
        weight = flat.get("cross_style", 0.0)
        return None if weight == 0 else CrossStyleConfig(weight)

    def begin_epoch(self, epoch: EpochData) -> None:
        """This epoch's partner per training image (-1: none), from its own seeded stream."""
        rng = np.random.default_rng([self.seed, epoch.epoch, 3])
        self.partners = torch.from_numpy(group_partners(epoch.groups.cpu().numpy(), rng)).to(epoch.groups.device)
        self.image_feats, self.groups = epoch.image_feats, epoch.groups

    def add_terms(self, step: Step, out: Terms) -> Terms:
        images = step.batch.images
        p = self.partners[images]
        has = p >= 0
        if int(has.sum()) < 2:  # one row has no negatives: nothing to contrast this batch
            return {**out, "cross_style": torch.zeros((), device=step.img.device)}
        f = self.gather({"img": step.img[has], "partner": self.model.embed_images(self.image_feats[p[has]]),
                         "groups": self.groups[images[has]]})
        term = cross_style_loss(f["img"], f["partner"], f["groups"], logit_scale=self.model.logit_scale)
        return {**out, "loss": out["loss"] + self.config.weight * term, "cross_style": term}
