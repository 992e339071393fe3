"""One training process of ``tests/test_distributed.py`` (run as a script, with torchrun's variables set or not).

Usage: ``python tests/ddp_worker.py OUT LOSS EPOCHS [DIE_AT_EPOCH]``: trains the toy problem of
``test_training`` into OUT as the variables say (none: one process) and writes rank 0's history to
``OUT/result.json``; with DIE_AT_EPOCH, the last rank (rank 1 of two; the one process alone) exits
abruptly as that 0-based epoch starts; with
``$MICRO_BATCH`` set, each process embeds its share in micro-batches of that many pairs (GradCache). An
:class:`~xmr.errors.XmrError` prints one line to stderr and exits with status 2, like ``xmr``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from test_training import _mc, _toy_problem
from xmr.errors import XmrError
from xmr.training import TrainConfig, train_joint_model, trainer
from xmr.training.distributed import config_from_env, joined
from xmr.training.execution import ExecutionConfig


def main(out: Path, loss: str, epochs: int, die_at: int | None) -> int:
    torch.set_num_threads(1)
    pairs, val = _toy_problem()
    config = TrainConfig(loss=loss, epochs=epochs, batch_size=12, lr=1e-2, patience=0)
    with joined(config_from_env()) as world:
        if die_at is not None and world.rank == world.world_size - 1:
            run_epoch = trainer.run_epoch

            def dying(run: trainer.TrainingRun, epoch: int) -> dict[str, object]:
                if epoch == die_at:
                    os._exit(3)  # no clean-up, as a killed process
                return run_epoch(run, epoch)

            trainer.run_epoch = dying  # type: ignore[assignment]
        try:
            micro = os.environ.get("MICRO_BATCH")
            execution = ExecutionConfig(micro_batch=int(micro)) if micro else None
            res = train_joint_model(pairs, val, _mc(), config, out_dir=out, execution=execution)
        except XmrError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if world.is_main:
            (out / "result.json").write_text(json.dumps({"history": res.history, "best_epoch": res.best_epoch,
                                                         "best": res.best_metrics, "status": res.status}))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else None))
