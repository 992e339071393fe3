"""What a training run returns, for every kind of model (joint space, composed queries, ...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

M = TypeVar("M")


@dataclass
class TrainResult(Generic[M]):
    """Outcome of a trainer: the best (highest validation score) model and how the run went.

    Attributes:
        model: the best checkpoint, loaded.
        best_dir: its folder (``<run>/best``).
        best_epoch: its 1-based epoch.
        best_metrics: its validation metrics.
        history: one row per epoch: losses, validation metrics, lr, seconds.
        status: ``done`` | ``early-stopped`` | ``collapsed``.
    """

    model: M
    best_dir: Path
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    status: str = "done"
