"""Objective components: the base pair objective and each paper's addition, each owning its config,
modules, state, schedule and ``gather`` hook (:mod:`xmr.objectives.base`).

Registered in :data:`COMPONENTS`: ``pair`` (InfoNCE, VSE0, VSE++ with its warm-up and collapse
watch), ``instance`` (the dual-path instance loss, two stages, W_share), ``cross_style``,
``generative`` (GXN's Gen_i2t / Gen_t2i) and ``sparse`` (A3VSE's pseudo pairs and discriminators).
"""

from __future__ import annotations

from xmr.objectives.base import (
    COMPONENTS,
    Batch,
    EpochData,
    Fit,
    ObjectiveComponent,
    Setup,
    Step,
    epoch_order,
    register_component,
)
from xmr.objectives.components import (
    ComponentConfigs,
    build_components,
    check_fit,
    configs_from_flat,
    primary_component,
    train_loss_names,
)
from xmr.objectives.cross_style import CrossStyleConfig, CrossStyleTerm, group_partners
from xmr.objectives.generative import GENERATIVE_PATHS, GenerativeConfig, GenerativeData, GenerativePaths
from xmr.objectives.instance import INSTANCE, INSTANCE_RANK, InstanceConfig, InstanceObjective
from xmr.objectives.pair import HardestConfig, PairObjective
from xmr.objectives.sparse import SparseAlignment, SparseAlignmentConfig

__all__ = ["COMPONENTS", "Batch", "EpochData", "Fit", "ObjectiveComponent", "Setup", "Step", "epoch_order",
           "register_component", "ComponentConfigs", "build_components", "check_fit", "configs_from_flat",
           "primary_component", "train_loss_names", "CrossStyleConfig", "CrossStyleTerm", "group_partners",
           "GENERATIVE_PATHS", "GenerativeConfig", "GenerativeData", "GenerativePaths", "INSTANCE", "INSTANCE_RANK",
           "InstanceConfig", "InstanceObjective", "HardestConfig", "PairObjective", "SparseAlignment",
           "SparseAlignmentConfig"]
