"""Training loop of a :class:`~xmr.compose.model.ComposedModel` on cached features.

Per step a batch of (reference image, modification text, target image) triplets:

    L = L_compose(compose(psi_x, phi_q), g(psi_target))                     TIRG's loss
        + joint_weight * InfoNCE(g(psi_x), g(phi_caption))                  in Joint only (seed Eq. 2)

with L_compose the batch classification or the soft triplet loss (:mod:`xmr.compose.losses`);
targets of the same identity (scene / emoji) are not each other's negatives. Each epoch is
validated by composed R@1/10/50 on held-out triplets; the best ``rsum`` (R@1 + R@10 + R@50)
checkpoint is kept in ``best/``; ``last.pt`` makes an interrupted run resume where it stopped.
"""

from __future__ import annotations

import inspect
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xmr.compose.losses import COMPOSE_LOSSES
from xmr.compose.model import ComposedModel, ComposedModelConfig, load_composed_model
from xmr.errors import Param, XmrError
from xmr.evaluation.composed import composed_metrics
from xmr.losses import infonce_loss
from xmr.text import Vocabulary
from xmr.training.checkpoint import restore_resume_state, save_resume_state
from xmr.training.distributed import current_world
from xmr.training.folder import refuse_other_config
from xmr.training.result import TrainResult, TrainState
from xmr.training.schedule import warmup_cosine
from xmr.utils.io import load_json, matches_saved, save_json
from xmr.utils.numbers import check_finite_fields
from xmr.utils.progress import epoch_eta, progress
from xmr.utils.threads import work_threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComposedTrainConfig:
    """Optimisation settings of composed training (saved with the run).

    Attributes:
        epochs, batch_size, lr, weight_decay: AdamW with 1 warm-up epoch and cosine decay.
        patience: stop after this many epochs without a better validation rsum (0 = never).
        joint_weight: weight of the image-caption alignment term (in Joint only; seed Eq. 2: 1).
        seed: seeds initialisation and batch order.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5
    joint_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_finite_fields(self)
        checks = {"epochs": self.epochs >= 1, "batch_size": self.batch_size >= 2, "lr": self.lr > 0,
                  "weight_decay": self.weight_decay >= 0, "patience": self.patience >= 0,
                  "joint_weight": self.joint_weight >= 0}
        for name, ok in checks.items():
            if not ok:
                raise XmrError(f"invalid composed training option {name}: {getattr(self, name)!r}")


@dataclass(frozen=True)
class ComposedData:
    """Features and triplets as indices.

    Attributes:
        image_feats: pooled features of every item (the gallery and all targets). Shape: (n_items, image_dim).
        region_feats: region features of every item, for the relation composer, else None.
            Shape: (n_items, R, C).
        text_feats: features (or id rows) of every text: modification texts and captions. Shape: (n_texts, t).
        triplets: (reference item, text, target item) indices. Shape: (n, 3).
        identity: target identity code per item (equal codes = the same scene / emoji). Shape: (n_items,).
        captions: text index of each item's caption, -1 for none (in Joint's alignment term). Shape: (n_items,).
    """

    image_feats: np.ndarray
    region_feats: np.ndarray | None
    text_feats: np.ndarray
    triplets: np.ndarray
    identity: np.ndarray
    captions: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.image_feats)
        if self.triplets.ndim != 2 or self.triplets.shape[1] != 3:
            raise XmrError(f"triplets must be (n, 3) indices, got {self.triplets.shape}")
        t = self.triplets
        if len(t) and (t[:, [0, 2]].max() >= n or t[:, 1].max() >= len(self.text_feats) or t.min() < 0):
            raise XmrError("a triplet index is out of range")
        if self.identity.shape != (n,) or self.captions.shape != (n,):
            raise XmrError("identity and captions need one entry per item")

    def with_triplets(self, triplets: np.ndarray) -> ComposedData:
        return ComposedData(self.image_feats, self.region_feats, self.text_feats, triplets, self.identity,
                            self.captions)

    def reference_input(self, items: np.ndarray) -> np.ndarray:
        """What the composer reads of the reference images: region rows or pooled features."""
        return (self.region_feats if self.region_feats is not None else self.image_feats)[items]


#: the composed trainer's outcome: :class:`~xmr.training.result.TrainResult` of a composed model
ComposedResult = TrainResult[ComposedModel]


def evaluate_composed(model: ComposedModel, data: ComposedData) -> dict[str, float]:
    """Composed R@1/10/50 of ``data.triplets`` over all items as the gallery (reference excluded)."""
    t = data.triplets
    queries = model.numpy("compose", data.reference_input(t[:, 0]), data.text_feats[t[:, 1]])
    gallery = model.numpy("embed_gallery", data.image_feats)
    return composed_metrics(queries, gallery, data.identity[t[:, 2]], data.identity, exclude=t[:, 0])


def _step_loss(model: ComposedModel, data: ComposedData, batch: np.ndarray, cfg: ComposedTrainConfig
               ) -> dict[str, torch.Tensor]:
    src, txt, tgt = batch[:, 0], batch[:, 1], batch[:, 2]
    q = model.compose(torch.from_numpy(data.reference_input(src)), torch.from_numpy(data.text_feats[txt]))
    target = model.embed_gallery(torch.from_numpy(data.image_feats[tgt]))
    groups = torch.from_numpy(data.identity[tgt])
    name = model.config.loss
    fn = COMPOSE_LOSSES.get(name)
    kw = {"scale": model.scale} if "scale" in inspect.signature(fn).parameters else {}  # the loss says if it is scaled
    out = dict(fn(q, target, groups=groups, **kw))
    loss = out["loss"]
    if model.config.in_joint and cfg.joint_weight > 0:  # Eq. 2: keep g a joint image-text space
        items = np.unique(src[data.captions[src] >= 0])
        if len(items) >= 2:
            img = model.embed_gallery(torch.from_numpy(data.image_feats[items]))
            cap = model.embed_captions(torch.from_numpy(data.text_feats[data.captions[items]]))
            joint = infonce_loss(img, cap, logit_scale=model.joint_scale,
                                 groups=torch.from_numpy(data.identity[items]))["loss"]
            out["joint"] = joint
            loss = loss + cfg.joint_weight * joint
    out["compose"] = out.pop("loss")
    out["loss"] = loss
    return out


def refuse_several_processes() -> None:
    """The composed task trains in one process: refuse several (torchrun's), in one line naming the task.

    Its trainer runs whole batches of triplets with no shard, gather or gradient average (a data-parallel
    composed trainer would need :mod:`xmr.training.distributed`'s three, on its triplet batches)."""
    world = current_world()
    if world.world_size > 1:
        raise XmrError("{task} trains in one process only, not in {n}: start it without several processes",
                       task=Param("task", "composed"), n=world.world_size)


def train_composed(train: ComposedData, val: ComposedData, model_config: ComposedModelConfig,
                   config: ComposedTrainConfig, *, out_dir: str | Path, vocab: Vocabulary | None = None,
                   overwrite: bool = False) -> ComposedResult:
    """Train, validating each epoch; resume an unfinished run of the same spec in ``out_dir`` (one process)."""
    refuse_several_processes()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = {"train": config, "model": model_config, "n_train": int(len(train.triplets)),
            "n_val": int(len(val.triplets)), **({"vocab": vocab.digest()} if vocab is not None else {})}
    if overwrite:
        (out / "last.pt").unlink(missing_ok=True)
        shutil.rmtree(out / "best", ignore_errors=True)
    elif (out / "train.json").exists():
        refuse_other_config(out, matches_saved(load_json(out / "train.json"), spec), "a composed run")
    save_json(out / "train.json", spec)
    if len(train.triplets) < 2 or not len(val.triplets):
        raise XmrError(f"composed training needs >= 2 training and >= 1 validation triplets, got "
                       f"{len(train.triplets)} and {len(val.triplets)}")
    torch.manual_seed(config.seed)
    model = ComposedModel(model_config, vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = max(1, len(train.triplets) // config.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, total_steps=steps * config.epochs, warmup_steps=steps))
    st = TrainState()
    if (out / "last.pt").exists():
        st = restore_resume_state(out / "last.pt", model, opt, sched)
        log.info("resuming %s after epoch %d", out, st.epoch)
    # the composers are small modules on cached features: light work, one thread on a busy machine
    with work_threads("light" if vocab is None else "heavy"):
        while st.status == "running" and st.epoch < config.epochs:
            t0 = time.perf_counter()
            epoch = st.epoch
            order = np.random.default_rng([config.seed, epoch]).permutation(len(train.triplets))
            model.train()
            totals: dict[str, float] = {}
            for b in progress(range(steps), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch"):
                batch = train.triplets[order[b * config.batch_size:(b + 1) * config.batch_size]]
                parts = _step_loss(model, train, batch, config)
                opt.zero_grad(set_to_none=True)
                parts["loss"].backward()
                opt.step()
                sched.step()
                for k, v in parts.items():
                    totals[k] = totals.get(k, 0.0) + float(v.detach())
            metrics = evaluate_composed(model, val)
            row = {"epoch": epoch + 1, **{f"train_{k}": v / steps for k, v in totals.items()},
                   **{f"val_{k}": v for k, v in metrics.items()}, "seconds": time.perf_counter() - t0}
            st.finished_epoch(row)
            log.info("epoch %d/%d  loss %.4f  val R@1 %.1f R@10 %.1f R@50 %.1f  %s", epoch + 1, config.epochs,
                     row["train_loss"], metrics["r1"], metrics["r10"], metrics["r50"],
                     epoch_eta([float(r["seconds"]) for r in st.history], config.epochs))
            if st.improved(metrics["rsum"]):
                model.save(out / "best", extra={"epoch": epoch + 1, "val": metrics})
            elif config.patience and st.bad >= config.patience:
                st.status = "early-stopped"
            if st.status == "running" and st.epoch >= config.epochs:
                st.status = "done"
            save_json(out / "history.json", st.history)
            save_resume_state(out / "last.pt", model, opt, sched, st)
    return st.result(load_composed_model(out / "best"), out / "best")
