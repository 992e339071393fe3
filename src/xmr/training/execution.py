"""How a run's steps execute: memory and speed, never the results.

These settings are not :class:`~xmr.training.TrainConfig` fields (not in ``train.json``): a resumed run
may change them, and a run trained with them is the run trained without them.

* **Exact gradient accumulation** (``micro_batch``; GradCache, Gao et al. 2021, "Scaling Deep
  Contrastive Learning Batch Size under Memory Limited Setup", Sec. 3; open_clip's ``accum_freq``):
  a contrastive loss couples every pair of the batch, so the batch cannot be cut into independent
  halves. Instead (:func:`cached_embeddings`): (1) embed every micro-batch without a graph; (2) the
  components' terms on the whole batch's embeddings, held as leaves, and their backward, which stops at
  the leaves (d loss / d embeddings, plus the gradients of what the terms use directly: the logit
  scale, W_share); (3) each micro-batch embedded again with its graph, from the RNG state of its first
  pass (the same dropout masks), and its stored embedding gradients pushed through it. Peak memory:
  one micro-batch's activations, not the batch's. The gradients are those of the batch whose
  embeddings were drawn micro-batch by micro-batch (with dropout, each micro-batch draws its own masks).
* **Gradient checkpointing** (``checkpointing``): a fine-tuned encoder tail that can recompute its
  blocks' activations in the backward pass instead of keeping them (``tail.set_checkpointing(True)``).
* **Streamed batch rows** (``stream_batches``): each batch's feature rows gathered on the host and
  copied to the device (pinned memory, ``non_blocking``) instead of the whole epoch's rows moved there
  first; automatic on an accelerator when a row is ``stream_row_bytes`` or more (a trunk's
  activations, pixels: hundreds of KB per image).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from xmr.errors import Param, XmrError
from xmr.models import JointModel
from xmr.objectives import Batch, ObjectiveComponent
from xmr.runtime.device import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecutionConfig:
    """How the steps run (the single source of these defaults).

    Attributes:
        micro_batch: embed each batch (this process's share) in micro-batches of this many pairs and
            accumulate the exact gradient (GradCache); None: the whole batch at once.
        checkpointing: gradient checkpointing of the fine-tuned encoder tails that support it.
        stream_batches: copy each batch's feature rows to the device as it starts (pinned memory); None:
            when the device is an accelerator and a row is ``stream_row_bytes`` or more; False: never.
        stream_row_bytes: the row size from which ``stream_batches`` None streams. 256 KiB: an
            EfficientNet-Lite0 trunk row at 3 blocks is 75 KiB (kept on the device), a 224-px pixel row 588 KiB.
    """

    micro_batch: int | None = None
    checkpointing: bool = False
    stream_batches: bool | None = None
    stream_row_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        if self.micro_batch is not None and (isinstance(self.micro_batch, bool) or self.micro_batch < 1):
            raise XmrError("{micro_batch} must be a whole number >= 1 (or None: off)",
                           micro_batch=Param("micro_batch", self.micro_batch))
        if self.stream_row_bytes < 1:
            raise XmrError(f"stream_row_bytes must be >= 1, got {self.stream_row_bytes}")


def check_execution(execution: ExecutionConfig, components: Sequence[ObjectiveComponent]) -> None:
    """Refuse settings a component cannot run with: micro-batches for one whose terms need more than the
    batch's embeddings, streamed rows for one that keeps the epoch's features."""
    for c in components:
        if execution.micro_batch is not None and not c.micro_batches:
            raise XmrError("{about} cannot train in micro-batches; leave {micro_batch} off",
                           about=c.about or c.name, micro_batch=Param("micro_batch"))
        if execution.stream_batches and c.reads_epoch_features:
            raise XmrError("{about} reads the whole epoch's features on the device; leave {stream} off",
                           about=c.about or c.name, stream=Param("stream_batches"))


def enable_checkpointing(model: JointModel, on: bool) -> int:
    """Turn gradient checkpointing on in the model's encoder tails that support it; returns how many did."""
    if not on:
        return 0
    n = 0
    for tail in (model.image_tail, model.text_tail):
        switch = getattr(tail, "set_checkpointing", None)
        if tail is not None and callable(switch):
            switch(True)
            n += 1
    if n == 0:
        log.warning("gradient checkpointing asked for, but no fine-tuned encoder tail of this model supports it")
    return n


def streams(execution: ExecutionConfig, runtime: Runtime, rows: Sequence[np.ndarray],
            components: Sequence[ObjectiveComponent]) -> bool:
    """Whether this epoch's batch rows are streamed to the device (see :class:`ExecutionConfig`)."""
    if execution.stream_batches is not None:
        return execution.stream_batches
    if runtime.device.type == "cpu" or any(c.reads_epoch_features for c in components):
        return False
    return max(a.dtype.itemsize * int(np.prod(a.shape[1:])) for a in rows) >= execution.stream_row_bytes


class _BatchRows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``dataset[b]``: batch ``b``'s image and text feature rows, gathered on the host. Shapes: (B, ...) each."""

    def __init__(self, image_feats: np.ndarray, text_feats: np.ndarray, pairs: Sequence[torch.Tensor]) -> None:
        self.image_feats, self.text_feats, self.pairs = image_feats, text_feats, pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.pairs[b].numpy()
        return torch.from_numpy(self.image_feats[idx[:, 0]]), torch.from_numpy(self.text_feats[idx[:, 1]])


def streamed_rows(image_feats: np.ndarray, text_feats: np.ndarray, pairs: Sequence[torch.Tensor],
                  runtime: Runtime) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Each batch's (image rows, text rows) on the runtime's device, in batch order, through a DataLoader
    (pinned on CUDA, copied ``non_blocking``). ``pairs``: each batch's (image, text) indices, (B, 2)."""
    loader = DataLoader(_BatchRows(image_feats, text_feats, pairs), batch_size=None, shuffle=False,
                        pin_memory=runtime.pin_memory)
    for img, txt in loader:
        yield img.to(runtime.device, non_blocking=True), txt.to(runtime.device, non_blocking=True)


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The CPU generator's state and the device's (what dropout draws from)."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(device: torch.device, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def cached_embeddings(model: JointModel, batch: Batch, micro: int, runtime: Runtime
                      ) -> tuple[torch.Tensor, torch.Tensor, Callable[[], None]]:
    """GradCache's first pass: the batch's embeddings, micro-batch by micro-batch, without a graph.

    Returns:
        (img, txt): float32 leaves that require grad, (B, embed_dim) each: the components' terms are
            computed on them and their backward stops there.
        replay: after that backward, embeds each micro-batch again with its graph (the same RNG state as
            its first pass: the same dropout masks) and back-propagates the leaves' gradients through it
            (any scaling the loss had included); the RNG is then where it was when ``replay`` was called
            (after the first pass and whatever the terms drew).
    """
    device, n = runtime.device, len(batch.images)
    chunks = [slice(i, min(i + micro, n)) for i in range(0, n, micro)]
    states, imgs, txts = [], [], []
    with torch.no_grad():
        for c in chunks:
            states.append(_rng_state(device))
            with runtime.autocast():
                imgs.append(model.embed_images(batch.image_feats[c]).float())
                txts.append(model.embed_texts(batch.text_feats[c]).float())
    img, txt = torch.cat(imgs).requires_grad_(), torch.cat(txts).requires_grad_()

    def replay() -> None:
        after = _rng_state(device)
        for c, state in zip(chunks, states):
            _set_rng_state(device, state)
            with runtime.autocast():
                out = (model.embed_images(batch.image_feats[c]).float(), model.embed_texts(batch.text_feats[c]).float())
            pairs = [(e, leaf.grad[c]) for e, leaf in zip(out, (img, txt)) if e.requires_grad and leaf.grad is not None]
            if pairs:
                torch.autograd.backward([e for e, _ in pairs], [g for _, g in pairs])
        _set_rng_state(device, after)

    return img, txt, replay


def check_batch_statistics(model: JointModel, execution: ExecutionConfig) -> None:
    """Refuse micro-batches when a BatchNorm layer of the model trains its statistics (each micro-batch would
    normalise by its own statistics, and each pass would update the running ones)."""
    if execution.micro_batch is None:
        return
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules()):
        raise XmrError("micro-batches cannot train BatchNorm statistics (each would normalise by its own); "
                       "leave {micro_batch} off or keep the statistics frozen", micro_batch=Param("micro_batch"))
