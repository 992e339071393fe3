"""What a training run returns, for every kind of model (joint space, composed queries, ...)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

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


@dataclass
class TrainState:
    """A trainer's bookkeeping between epochs, kept in ``last.pt`` for resuming.

    Attributes:
        epoch: finished epochs.
        best_score: the best validation score so far (rsum; composed: R@1 + R@10 + R@50).
        best_epoch: its epoch (0: none yet).
        bad: epochs since the best (early stopping).
        stuck: epochs the hinge has sat at 2 x margin (the collapse guard).
        history: one row per finished epoch.
        status: ``running`` | ``done`` | ``early-stopped`` | ``collapsed``.
    """

    epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = 0
    bad: int = 0
    stuck: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only, so ``last.pt`` loads with ``weights_only=True``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> TrainState:
        """The state :meth:`to_dict` wrote; resume files of older versions (``best_rsum``/``best``) too."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in saved.items() if k in known}
        for legacy in ("best_rsum", "best"):
            if legacy in saved and "best_score" not in saved:
                values["best_score"] = float(saved[legacy])
        return cls(**values)

    def finished_epoch(self, row: dict[str, Any]) -> None:
        """Count one more epoch and keep its row."""
        self.epoch += 1
        self.history.append(row)

    def improved(self, score: float) -> bool:
        """Record ``score`` for the epoch just finished; True when it is a new best."""
        if score > self.best_score:
            self.best_score, self.best_epoch, self.bad = score, self.epoch, 0
            return True
        self.bad += 1
        return False

    def result(self, model: M, best_dir: Path) -> TrainResult[M]:
        """The :class:`TrainResult` of this run, with the best epoch's validation metrics."""
        row = next((r for r in self.history if r["epoch"] == self.best_epoch), {})
        return TrainResult(model, best_dir, self.best_epoch,
                           {k[4:]: v for k, v in row.items() if k.startswith("val_")}, self.history, self.status)
