"""Features of every process's batch: the all-gather behind :meth:`ObjectiveComponent.gather`.

Modelled on open_clip's ``gather_features`` (``local_loss=False``): every process gathers the
features of all processes' rows, in rank order (the one-process batch's order, as the trainer cuts
the global batch into consecutive shards), and computes the loss of the whole global batch. This
process's rows keep their gradient in their slot; unlike open_clip's ``gather_with_grad=False``, the
other rows' gradients are not dropped but sent back to the process that owns them (the backward of
:class:`_GatherRows` sums the gradient of every process's copy of the global loss). With the
gradients then averaged over the processes (:func:`xmr.training.distributed.average_gradients`),
every parameter -- those before the gather (heads, per-row) and those after it (the logit scale) --
gets the gradient of the one-process step on the global batch.

Shards may differ in size (a ragged batch, a component's selection of rows): the row counts are
exchanged first and the rows padded to the largest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist


@contextlib.contextmanager
def collective() -> Iterator[None]:
    """A collective's failure as :class:`torch.distributed.DistNetworkError` (gloo raises a bare RuntimeError
    when a peer is gone), so that the trainer tells a lost process from any other error."""
    try:
        yield
    except torch.distributed.DistError:
        raise
    except RuntimeError as e:
        raise torch.distributed.DistNetworkError(str(e)) from e


def _row_counts(n: int, world_size: int, device: torch.device) -> list[int]:
    """Every process's row count (an all-gather of ``n``)."""
    counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world_size)]
    with collective():
        dist.all_gather(counts, torch.tensor([n], dtype=torch.int64, device=device))
    return [int(c) for c in counts]


def _gather_padded(x: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """All processes' rows of ``x`` stacked in rank order (no gradient). Shape: (sum(counts), *x.shape[1:])."""
    pad = max(counts)
    padded = torch.zeros((pad, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: len(x)] = x.detach()
    parts = [torch.empty_like(padded) for _ in counts]
    with collective():
        dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, counts)])


class _GatherRows(torch.autograd.Function):
    """All-gather with a backward: each process's rows get the sum over processes of their gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, rank: int, counts: list[int]) -> torch.Tensor:
        ctx.rank, ctx.counts = rank, counts
        return _gather_padded(x, counts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        grad = grad.contiguous()
        with collective():
            dist.all_reduce(grad)  # every process's copy of the global loss pulls on every row
        start = sum(ctx.counts[: ctx.rank])
        return grad[start:start + ctx.counts[ctx.rank]], None, None


def gather_rows(x: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Every process's rows of ``x``, in rank order; a tensor with a gradient keeps one (see the module).

    Args:
        x: this process's rows. Shape: (n_rank, ...).
        rank, world_size: this process and the number of processes (a process group is initialised).

    Returns:
        Shape: (sum of every process's n, ...).
    """
    counts = _row_counts(len(x), world_size, x.device)
    if x.requires_grad:
        out: torch.Tensor = _GatherRows.apply(x, rank, counts)
        return out
    return _gather_padded(x, counts)


def gather_features(features: Mapping[str, torch.Tensor], rank: int, world_size: int) -> dict[str, torch.Tensor]:
    """Each of ``features`` gathered from every process (:func:`gather_rows`), under the same names."""
    return {name: gather_rows(x, rank, world_size) for name, x in features.items()}
