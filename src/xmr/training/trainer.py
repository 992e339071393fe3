"""The training loop: AdamW, warm-up + cosine, validation rsum each epoch, early stopping,
best checkpoint as safetensors + JSON, resumable from the last finished epoch.

The objective is the run's list of components (:mod:`xmr.objectives`): the loop hands each batch
to them -- their steps before the rank update, then their terms of it -- and knows no paper.

Run folder layout::

    <out>/train.json        TrainConfig + ModelConfig (a resume with another config is refused)
    <out>/best/             model.safetensors + model.json of the best validation epoch
    <out>/last.pt           weights/optimizer/step/component state after the last finished epoch (resume)
    <out>/history.json      one row per epoch: losses, validation metrics, lr, seconds
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from xmr.errors import Param, XmrError
from xmr.evaluation.metrics import cross_modal_metrics
from xmr.evaluation.similarity import score_fn
from xmr.models import JointModel, ModelConfig, load_model
from xmr.objectives import (
    Batch,
    EpochData,
    GenerativeData,
    ObjectiveComponent,
    Setup,
    Step,
    build_components,
    epoch_order,
)
from xmr.objectives.base import ExtraStep
from xmr.runtime.device import CPU_FP32, Runtime
from xmr.text import Vocabulary
from xmr.training.checkpoint import TrainedModules, restore_resume_state, save_resume_state
from xmr.training.config import TrainConfig
from xmr.training.data import EvalSet, PairSet, weighted_epoch
from xmr.training.distributed import (
    World,
    average_gradients,
    check_shared_folder,
    current_world,
    join_components,
    lost_process_stops,
    seed_rank,
)
from xmr.training.ema import WeightAverage
from xmr.training.execution import (
    ExecutionConfig,
    cached_embeddings,
    check_batch_statistics,
    check_execution,
    enable_checkpointing,
    streamed_rows,
    streams,
)
from xmr.training.folder import refuse_other_config
from xmr.training.result import TrainResult, TrainState
from xmr.training.schedule import warmup_cosine
from xmr.utils.io import load_json, matches_saved, save_json
from xmr.utils.progress import epoch_eta, progress
from xmr.utils.threads import work_threads

if TYPE_CHECKING:
    from xmr.encoders.finetune import EncoderTail

log = logging.getLogger(__name__)

__all__ = ["TrainingRun", "epoch_order", "run_epoch", "start_run", "train_joint_model", "validate"]


def validate(model: JointModel, data: EvalSet) -> dict[str, float]:
    """Cross-modal metrics of ``model`` on ``data`` (rsum and friends), scored by its similarity."""
    img = model.embed_numpy(data.image_feats, "image")
    txt = model.embed_numpy(data.text_feats, "text")
    return cross_modal_metrics(score_fn(model.config.similarity)(img, txt), data.relevance)


def _check_run_dir(out: Path, spec: dict[str, object], overwrite: bool) -> bool:
    """True when ``out`` holds a resumable run of the same spec; refuse a different one.

    With ``overwrite`` any earlier run there is discarded and training starts afresh.
    """
    if overwrite:
        for name in ("last.pt", "history.json"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "best", ignore_errors=True)
        return False
    spec_file = out / "train.json"
    if not spec_file.exists():
        return False
    refuse_other_config(out, matches_saved(_upgraded_spec(load_json(spec_file)), spec))
    return True


def _upgraded_spec(saved: Any) -> Any:
    """A ``train.json`` of today's form: its flat ``train`` of older runs nested, knowing whether the run
    had pseudo pairs (:meth:`TrainConfig.upgrade_saved`)."""
    if not (isinstance(saved, dict) and isinstance(saved.get("train"), dict)):
        return saved
    inputs = ("sparse",) if "n_pseudo_pairs" in saved else ()
    return {**saved, "train": TrainConfig.upgrade_saved(saved["train"], inputs=inputs)}


@dataclass
class TrainingRun:
    """One run being trained: what every epoch reads and updates.

    Attributes:
        model: the joint model.
        components: its objective, in build order (the primary first).
        trained: the model's and the components' modules (the optimiser's, the average's, ``last.pt``'s).
        opt, sched: AdamW and its per-step schedule.
        ema: the weight average (None: off).
        config: the training settings.
        train, val: the training pairs and the validation set.
        out: the run folder.
        st: the bookkeeping (epochs, best, status).
        runtime: the device and precision it trains at (the weights on that device, fp32).
        scaler: fp16's loss scaling of the rank update (disabled at other precisions: a plain step).
        world: the training processes (:mod:`xmr.training.distributed`; one process: ``World()``).
        execution: how the steps run (micro-batches, checkpointing, streamed rows; not the results).
    """

    model: JointModel
    components: list[ObjectiveComponent]
    trained: TrainedModules
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    ema: WeightAverage | None
    config: TrainConfig
    train: PairSet
    val: EvalSet
    out: Path
    st: TrainState = dataclasses.field(default_factory=TrainState)
    runtime: Runtime = CPU_FP32
    scaler: torch.amp.GradScaler = dataclasses.field(
        default_factory=lambda: torch.amp.GradScaler("cuda", enabled=False))
    world: World = dataclasses.field(default_factory=World)
    execution: ExecutionConfig = dataclasses.field(default_factory=ExecutionConfig)

    @property
    def primary(self) -> ObjectiveComponent:
        """The component that trains the run's loss (its objective names the epochs)."""
        return self.components[0]

    def checkpoint(self) -> None:
        save_resume_state(self.out / "last.pt", self.trained, self.opt, self.sched, self.st,
                          components=self.components, ema=self.ema, scaler=self.scaler)

    def resume(self) -> None:
        self.st = restore_resume_state(self.out / "last.pt", self.trained, self.opt, self.sched,
                                       components=self.components, ema=self.ema, map_location=self.runtime.device,
                                       scaler=self.scaler)


def _epoch_batches(data: PairSet, cfg: TrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """This epoch's order of the pair indices and its number of batches."""
    if data.weights is not None:  # per-source weights: a fresh weighted draw of the pairs each epoch
        draws = weighted_epoch(data.weights, rng)
        n_batches = cfg.steps_per_epoch or max(1, data.pairs_per_epoch // cfg.batch_size)  # as the schedule counts
        return draws[epoch_order(len(draws), n_batches, cfg.batch_size, rng)], n_batches
    if cfg.steps_per_epoch is None:
        order = rng.permutation(len(data.pairs))
        return order, len(order) // cfg.batch_size or 1  # drop the ragged last batch
    return epoch_order(len(data.pairs), cfg.steps_per_epoch, cfg.batch_size, rng), cfg.steps_per_epoch


def _rank_update(run: TrainingRun, batch: Batch) -> dict[str, torch.Tensor]:
    """One optimiser step on the run's objective: every component's terms on the batch's embeddings
    (GXN's "Match": Eq. 3 with a two-branch ranking loss).

    The embeddings are computed under the run's autocast; the terms (the loss and its logit scale) in fp32.
    With ``run.execution.micro_batch`` they are computed micro-batch by micro-batch, and the gradient is
    accumulated exactly (GradCache: :func:`~xmr.training.execution.cached_embeddings`)."""
    model, micro = run.model, run.execution.micro_batch
    replay = None
    if micro is not None and micro < len(batch.images):
        img, txt, replay = cached_embeddings(model, batch, micro, run.runtime)
    else:
        with run.runtime.autocast():
            img, txt = model.embed_images(batch.image_feats), model.embed_texts(batch.text_feats)
    step = Step(batch, img.float(), txt.float(), run.sched.last_epoch)  # fp32 tensors as they are
    out: dict[str, torch.Tensor] = {}
    for component in run.components:
        out = component.add_terms(step, out)
    run.opt.zero_grad(set_to_none=True)
    if out["loss"].requires_grad:  # False when nothing the loss sees is trainable (identity heads)
        run.scaler.scale(out["loss"]).backward()
        if replay is not None:  # the embeddings' gradients through each micro-batch's graph
            replay()
        if run.world.world_size > 1:  # the step on the global batch (xmr.training.distributed)
            average_gradients(run.trained.parameters(), run.world)
        if run.config.grad_clip > 0:
            run.scaler.unscale_(run.opt)
            torch.nn.utils.clip_grad_norm_([p for g in run.opt.param_groups for p in g["params"]],
                                           run.config.grad_clip)
    run.scaler.step(run.opt)  # parameters without a gradient are left as they are
    run.scaler.update()
    return out


def run_epoch(run: TrainingRun, epoch: int) -> dict[str, Any]:
    """Train one 0-based epoch; returns its history row (mean losses and parts, lr, ...).

    Each batch runs the components' steps before the rank update, each followed by one rank update
    (GXN's Algorithm 1: Gen_i2t then Match, Gen_t2i then Match), or the rank update alone.
    The epoch's feature rows are moved to the device once, or -- streamed (:func:`~xmr.training.execution.streams`:
    big rows on an accelerator, or asked) -- each batch's rows as it starts; the batches are the same.
    """
    cfg, data, device = run.config, run.train, run.runtime.device
    order, n_batches = _epoch_batches(data, cfg, np.random.default_rng([cfg.seed, epoch]))
    img_np = data.epoch_image_feats(cfg.seed, epoch)
    stream = streams(run.execution, run.runtime, (img_np, data.text_feats), run.components)
    img_all, txt_all = torch.from_numpy(img_np), torch.from_numpy(data.text_feats)  # on the host when streamed
    if not stream:
        img_all, txt_all = img_all.to(device), txt_all.to(device)
    groups_all = torch.from_numpy(data.image_groups).to(device)
    # this process's share of each batch's (image, text) indices
    pairs = [run.world.shard(torch.from_numpy(data.pairs[order[b * cfg.batch_size:(b + 1) * cfg.batch_size]]))
             for b in range(n_batches)]
    rows = streamed_rows(img_np, data.text_feats, pairs, run.runtime) if stream else None
    for component in run.components:
        component.begin_epoch(EpochData(epoch, n_batches, img_all, txt_all, groups_all))
    # each round: a component's step (None: none) then a rank update
    rounds: list[ExtraStep | None] = [s for c in run.components for s in c.steps_before_rank()] or [None]
    run.trained.train()
    check_batch_statistics(run.model, run.execution)
    totals: dict[str, torch.Tensor] = {}  # summed on the device, read once after the epoch (no per-step sync)
    total_dtype = torch.float32 if device.type == "mps" else torch.float64  # float64: the sum of Python floats
    for b in progress(range(n_batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch"):
        idx = pairs[b].to(device)
        images, texts = idx[:, 0], idx[:, 1]
        img_rows, txt_rows = next(rows) if rows is not None else (img_all[images], txt_all[texts])
        batch = Batch(b, images, texts, groups_all[images], img_rows, txt_rows)
        out: dict[str, torch.Tensor] = {}
        for before in rounds:
            if before is not None:
                with run.runtime.autocast() if run.runtime.precision == "bf16" else contextlib.nullcontext():
                    out.update(before(batch, run.opt))  # its own optimiser step: no loss scaling, so fp16 runs it fp32
            out.update(_rank_update(run, batch))
        run.sched.step()
        if run.ema is not None:
            run.ema.update(run.trained)
        for k, v in out.items():
            part = v.detach().to(total_dtype)
            totals[k] = totals[k] + part if k in totals else part
    row: dict[str, Any] = {f"train_{k}": float(v) / n_batches for k, v in totals.items()}  # + "loss_name": str
    row.update(epoch=epoch + 1, loss_name=run.primary.objective_name, lr=float(run.sched.get_last_lr()[0]),
               logit_scale=float(run.model.logit_scale.detach()))
    return row


def _optimizer(trained: TrainedModules, model: JointModel, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the heads group (the model's and the components' modules; possibly empty: a model with
    nothing to train still validates and saves), then a fine-tuned encoder tail's group at ``finetune_lr``
    (one group per tail depth with ``layer_lr_decay`` < 1: :func:`tail_groups`)."""
    tail = [p for t in (model.image_tail, model.text_tail) if t is not None for p in t.parameters() if p.requires_grad]
    in_tail = {id(p) for p in tail}
    groups: list[dict[str, Any]] = [{"params": [p for p in trained.parameters()
                                                if p.requires_grad and id(p) not in in_tail]}]
    if tail and config.layer_lr_decay != 1.0:
        groups += tail_groups(model, config.finetune_lr, config.layer_lr_decay)
    elif tail:
        groups.append({"params": tail, "lr": config.finetune_lr})
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def tail_groups(model: JointModel, lr: float, decay: float) -> list[dict[str, Any]]:
    """Layer-wise lr decay: each tail's :meth:`~xmr.encoders.finetune.EncoderTail.layer_groups`, group k
    from the top (k = 0: the last) at ``lr * decay**k``; the image tail's groups, then the text tail's."""
    out: list[dict[str, Any]] = []
    for module in (model.image_tail, model.text_tail):
        if module is None:
            continue
        layers = [[p for p in g if p.requires_grad] for g in cast("EncoderTail", module).layer_groups()]
        out += [{"params": g, "lr": lr * decay ** (len(layers) - 1 - j)} for j, g in enumerate(layers) if g]
    return out


def _scheduler(opt: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int,
               frozen_tail_epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + cosine per step for the heads; a tail's groups wait ``frozen_tail_epochs`` first."""
    total = steps_per_epoch * config.epochs
    warm = int(config.warmup_epochs * steps_per_epoch)
    frozen = frozen_tail_epochs * steps_per_epoch

    def heads_lr(s: int) -> float:
        return warmup_cosine(s, total_steps=total, warmup_steps=warm)

    def tail_lr(s: int) -> float:
        return 0.0 if s < frozen else warmup_cosine(s - frozen, total_steps=total - frozen, warmup_steps=warm)

    return torch.optim.lr_scheduler.LambdaLR(opt, [heads_lr, *[tail_lr] * (len(opt.param_groups) - 1)])


def train_joint_model(train: PairSet, val: EvalSet, model_config: ModelConfig, config: TrainConfig, *,
                      out_dir: str | Path, overwrite: bool = False, vocab: Vocabulary | None = None,
                      pseudo: PairSet | None = None, caption_vocab: Vocabulary | None = None,
                      generative: GenerativeData | None = None, runtime: Runtime | None = None,
                      execution: ExecutionConfig | None = None) -> TrainResult[JointModel]:
    """Train a joint model; resume if ``out_dir`` holds an unfinished run of the same config.

    ``vocab`` is the word-level text model's vocabulary (``model_config.text_model``); the text
    features are then its id rows. The objective is ``config``'s components
    (:mod:`xmr.objectives`); some read data beside the pairs: ``pseudo`` holds un-annotated images
    paired with their pseudo-texts (A3VSE's ``sparse`` component, default settings when
    ``config.components.sparse`` is None), ``generative`` GXN's captions and images (a
    :class:`~xmr.objectives.GenerativeData`; the caption decoder's vocabulary is ``caption_vocab``).
    ``runtime`` is the device and precision it trains at (None: the CPU at fp32); validation and the
    checkpoints go through CPU numpy whatever it is, and the model returned is on the CPU.
    ``execution``: how the steps run (:class:`~xmr.training.execution.ExecutionConfig`: micro-batches,
    gradient checkpointing, streamed rows; None: its defaults); not part of the run's config, so a
    resumed run may change it.
    Returns the best (highest validation rsum) model. A finished run is loaded, not retrained.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if generative is not None and generative.caption_vocab is None:
        generative = dataclasses.replace(generative, caption_vocab=caption_vocab)
    inputs: Mapping[str, object] = {k: v for k, v in (("sparse", pseudo), ("generative", generative)) if v is not None}
    config = dataclasses.replace(config, components=config.components.with_inputs(inputs))
    spec = {"train": config, "model": model_config, "n_pairs": int(len(train.pairs)),
            "n_train_images": int(len(train.image_feats)),
            **({"vocab": vocab.digest()} if vocab is not None else {}),
            **({"caption_vocab": caption_vocab.digest()} if caption_vocab is not None else {}),
            **({"n_pseudo_pairs": int(len(pseudo.pairs))} if pseudo is not None else {})}
    world = current_world()  # several processes: rank 0 alone reads and writes the folder
    resumable = _check_run_dir(out, spec, overwrite) if world.is_main else False
    if world.is_main and not resumable:  # a run of the same spec keeps its file as it was written (an older one: flat)
        save_json(out / "train.json", spec)
    resumable = world.broadcast(resumable)
    check_shared_folder(world, out / "train.json")  # several machines: the run folder must be shared
    run = start_run(train, val, model_config, config, out_dir=out, vocab=vocab, inputs=inputs, runtime=runtime,
                    world=world, execution=execution)
    if resumable and (out / "last.pt").exists():
        run.resume()
        log.info("resuming %s after epoch %d", out, run.st.epoch)
    with work_threads(model_config.training_work) as threads, lost_process_stops(world, out):  # heads: one thread
        log.debug("training on %d thread(s) (%s work)", threads, model_config.training_work)
        while run.st.status == "running" and run.st.epoch < config.epochs:
            seed_rank(world, config.seed, run.st.epoch)
            if world.is_main:
                _epoch_and_bookkeeping(run)
                run.checkpoint()
            else:  # the others train their shards and wait for rank 0's validation and bookkeeping
                run_epoch(run, run.st.epoch)
            run.st = world.broadcast(run.st)
    if run.st.status == "running":
        run.st.status = "done"
        if world.is_main:
            run.checkpoint()
    world.barrier()
    if not (out / "best" / "model.safetensors").exists():
        raise XmrError("training in {out} produced no checkpoint (status {status})", out=str(out), status=run.st.status)
    return run.st.result(load_model(out / "best"), out / "best")


def start_run(train: PairSet, val: EvalSet, model_config: ModelConfig, config: TrainConfig, *, out_dir: str | Path,
              vocab: Vocabulary | None = None, inputs: Mapping[str, object] | None = None,
              runtime: Runtime | None = None, world: World | None = None,
              execution: ExecutionConfig | None = None) -> TrainingRun:
    """A run before its first epoch: the seeded model, its components (their modules drawn in build order),
    optimiser, schedule and weight average (``inputs``: the components' data, as :class:`Setup` holds it),
    drawn on the CPU and moved to ``runtime``'s device (None: the CPU at fp32); ``world``: the training
    processes (:func:`~xmr.training.distributed.current_world` when None); ``execution``: how the steps run
    (None: :class:`~xmr.training.execution.ExecutionConfig`'s defaults)."""
    inputs = inputs or {}
    runtime = runtime or CPU_FP32
    execution = execution or ExecutionConfig()
    torch.manual_seed(config.seed)
    model = JointModel(model_config, vocab).to(runtime.device)
    steps_per_epoch = config.steps_per_epoch or max(1, train.pairs_per_epoch // config.batch_size)
    setup = Setup(model, config, train.image_groups, steps_per_epoch, steps_per_epoch * config.epochs, inputs)
    components = build_components(config, config.components, setup)
    _refuse_cpu_only(components, runtime)
    check_execution(execution, components)
    enable_checkpointing(model, execution.checkpointing)
    world = world or current_world()
    join_components(components, world, config.batch_size)
    trained = TrainedModules(model, components)
    for module in trained.parts.values():
        module.to(runtime.device)
    opt = _optimizer(trained, model, config)
    sched = _scheduler(opt, config, steps_per_epoch, max(c.frozen_tail_epochs for c in components))
    ema = WeightAverage(trained, config.ema_decay) if config.ema_decay > 0 else None
    scaler = torch.amp.GradScaler("cuda", enabled=runtime.precision == "fp16")
    return TrainingRun(model, components, trained, opt, sched, ema, config, train, val, Path(out_dir),
                       runtime=runtime, scaler=scaler, world=world, execution=execution)


def _refuse_cpu_only(components: list[ObjectiveComponent], runtime: Runtime) -> None:
    """Refuse a device or precision other than the CPU at fp32 to a component that trains only there."""
    for component in components:
        if component.cpu_only and not runtime.is_cpu_fp32:
            raise XmrError("{about} trains on the CPU at fp32 only, not on {device} at {precision}",
                           about=component.about or component.name, device=Param("device", str(runtime.device)),
                           precision=Param("precision", runtime.precision))


def _save_beside(components: list[ObjectiveComponent], folder: Path) -> None:
    """What the components keep beside the model in a best checkpoint (GXN's generative heads)."""
    for component in components:
        component.save_beside(folder)


def _epoch_and_bookkeeping(run: TrainingRun) -> None:
    """One epoch, its validation, the best checkpoint and the stopping rules; updates ``run.st``."""
    t0 = time.perf_counter()
    st, config = run.st, run.config
    epoch = st.epoch
    row = run_epoch(run, epoch)
    averaged = run.ema.applied(run.trained) if run.ema is not None else contextlib.nullcontext()
    with averaged:  # validate and keep the best with the averaged weights
        metrics = validate(run.model, run.val)
        row.update({f"val_{k}": float(v) for k, v in metrics.items()}, seconds=time.perf_counter() - t0)
        st.finished_epoch(row)
        # warm-up epochs (VSE0 before VSE++, Stage I before instance+rank) train but are not
        # candidates: the checkpoint of a VSE++ run must come from VSE++ training
        if row["loss_name"] == run.primary.final_name and st.improved(metrics["rsum"]):
            run.model.save(run.out / "best", extra={"epoch": epoch + 1, "val": metrics, "train": config},
                           beside=functools.partial(_save_beside, run.components))
    log.info("epoch %d/%d  %s %.4f  val rsum %.1f  %s", epoch + 1, config.epochs, row["loss_name"],
             row["train_loss"], metrics["rsum"], epoch_eta([float(r["seconds"]) for r in st.history], config.epochs))
    save_json(run.out / "history.json", st.history)
    for component in run.components:
        component.after_epoch(row, st)
    if st.status == "running" and config.patience and st.bad >= config.patience:
        log.info("early stop after epoch %d (best %d)", epoch + 1, st.best_epoch)
        st.status = "early-stopped"
