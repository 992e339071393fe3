"""Training the joint model on cached encoder features."""

from __future__ import annotations

from xmr.training.config import TrainConfig
from xmr.training.data import EvalSet, PairSet
from xmr.training.trainer import TrainResult, train_joint_model

__all__ = ["TrainConfig", "PairSet", "EvalSet", "TrainResult", "train_joint_model"]
