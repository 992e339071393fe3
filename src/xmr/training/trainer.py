"""The training loop: AdamW, warm-up + cosine, validation rsum each epoch, early stopping,
best checkpoint as safetensors + JSON, resumable from the last finished epoch.

Run folder layout::

    <out>/train.json        TrainConfig + ModelConfig (a resume with another config is refused)
    <out>/best/             model.safetensors + model.json of the best validation epoch
    <out>/last.pt           model/optimizer/step state after the last finished epoch (resume)
    <out>/history.json      one row per epoch: losses, validation metrics, lr, seconds
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmr.errors import XmrError
from xmr.evaluation.metrics import cross_modal_metrics
from xmr.evaluation.similarity import is_inner_product, score_fn
from xmr.losses import TwoStageSchedule, create_loss, instance_loss
from xmr.losses.cross_style import cross_style_loss
from xmr.losses.registry import LossFn
from xmr.losses.registry import capabilities as loss_capabilities
from xmr.models import JointModel, ModelConfig, grl_schedule, load_model, make_a3vse_discriminators
from xmr.text import Vocabulary
from xmr.training.config import INSTANCE, INSTANCE_RANK, TrainConfig
from xmr.training.data import EvalSet, PairSet, group_partners, weighted_epoch
from xmr.training.ema import WeightAverage
from xmr.training.generative import GenerativeData, GenerativePaths
from xmr.training.result import TrainResult, TrainState
from xmr.training.schedule import warmup_cosine
from xmr.training.sparse_objective import PAIR_NAMES, sparse_alignment_loss
from xmr.utils.io import atomic_save_file, load_json, matches_saved, save_json
from xmr.utils.progress import epoch_eta, progress
from xmr.utils.threads import work_threads

log = logging.getLogger(__name__)


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
    if matches_saved(load_json(spec_file), spec):
        return True
    raise XmrError(f"{out} holds a run with another config; "
                   "pick a new output folder or pass --overwrite (Python: overwrite=True) to start again")


ObjectiveFn = Callable[[JointModel, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                      dict[str, torch.Tensor]]


def _pair_loss(name: str, cfg: TrainConfig, similarity: str) -> LossFn:
    """The registered loss ``name`` with its hyper-parameters; ranking losses score by ``similarity``."""
    kwargs: dict[str, object] = dict(cfg.loss_kwargs(name))
    if not is_inner_product(similarity):
        if loss_capabilities(name).inner_product_only:
            raise XmrError(f"similarity {similarity!r} needs a ranking loss; {name} scores by the inner product")
        kwargs["similarity"] = similarity
    return create_loss(name, **kwargs)  # type: ignore[arg-type]  # margin (float) and similarity (str)


def objective_for_epoch(cfg: TrainConfig, epoch: int, similarity: str = "cosine") -> tuple[ObjectiveFn, str]:
    """The objective of this 0-based epoch and its name.

    * a registered pair loss (VSE0 instead during the warm-up of a hardest-negative loss);
    * ``instance``: the dual-path paper's instance loss, the shared classifier W_share over the
      training groups applied to both embeddings (Eqs. 5-8);
    * ``instance+rank``: Stage II, lam1 L_rank + lam2 L_img + lam3 L_txt (Eq. 9, all weights 1).
      The paper's Stage I also freezes the image CNN; xmr's encoders are always frozen (cached
      features), so both heads train in both stages.
    """
    if cfg.uses_instances:
        w = TwoStageSchedule(cfg.stage1_epochs if cfg.then else cfg.epochs).weights(epoch)
        rank = _pair_loss(cfg.rank_loss, cfg, similarity) if w.lambda_rank > 0 else None

        def instance(model: JointModel, img: torch.Tensor, txt: torch.Tensor, groups: torch.Tensor,
                     text_ids: torch.Tensor) -> dict[str, torch.Tensor]:
            assert model.classifier is not None  # checked when training starts
            out = instance_loss(img, txt, groups, model.classifier.weight)
            total = w.lambda_img * out["loss_img"] + w.lambda_txt * out["loss_txt"]
            parts = {"instance_img": out["loss_img"], "instance_txt": out["loss_txt"],
                     "acc_img": out["acc_img"], "acc_txt": out["acc_txt"]}
            if rank is not None:
                r = rank(img, txt, logit_scale=model.logit_scale, groups=groups, text_ids=text_ids)
                total = total + w.lambda_rank * r["loss"]
                parts["rank"] = r["loss"]
            return {"loss": total, **parts}

        return instance, INSTANCE if rank is None else INSTANCE_RANK
    name = "vse0" if cfg.hardest_negative and epoch < cfg.vse0_warmup_epochs else cfg.loss
    loss_fn = _pair_loss(name, cfg, similarity)

    def pair(model: JointModel, img: torch.Tensor, txt: torch.Tensor, groups: torch.Tensor,
             text_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return loss_fn(img, txt, logit_scale=model.logit_scale, groups=groups, text_ids=text_ids)

    return pair, name


def epoch_order(n: int, steps: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``steps`` batches over ``n`` items: back-to-back permutations, cut to length."""
    reps = -(-steps * batch_size // n)  # ceil
    return np.concatenate([rng.permutation(n) for _ in range(max(1, reps))])[: steps * batch_size]


@dataclass
class _Extras:
    """What a sparse-annotation run adds to the plain pair loss (A3VSE): pseudo pairs and discriminators."""

    pseudo: PairSet | None
    discriminators: torch.nn.ModuleDict | None
    total_steps: int

    @property
    def active(self) -> bool:
        return self.pseudo is not None or self.discriminators is not None

    def pseudo_order(self, n_batches: int, cfg: TrainConfig, epoch: int) -> np.ndarray | None:
        """This epoch's order of the pseudo pairs (their own seeded stream), or None without them."""
        if self.pseudo is None:
            return None
        rng = np.random.default_rng([cfg.seed, epoch, 1])
        return epoch_order(len(self.pseudo.pairs), n_batches, cfg.batch_size, rng)

    def add_terms(self, model: JointModel, out: dict[str, torch.Tensor], img: torch.Tensor, txt: torch.Tensor,
                  batch: int, pseudo_order: np.ndarray | None, step: int, cfg: TrainConfig
                  ) -> dict[str, torch.Tensor]:
        """A3VSE Eq. 9 around the pair loss ``out``: the pseudo-pair hinge and the GRL discriminators.

        Args:
            out: the pair objective's output (``"loss"`` and its parts).
            img, txt: the batch's joint embeddings. Shape: (B, embed_dim) each.
            batch: the batch's position in the epoch (which pseudo pairs go with it).
            step: the scheduler's step count (the GRL schedule's progress).
        """
        emb = {"v": img, "t": txt}
        if self.pseudo is not None and pseudo_order is not None:
            pidx = self.pseudo.pairs[pseudo_order[batch * cfg.batch_size:(batch + 1) * cfg.batch_size]]
            emb["vu"] = model.embed_images(torch.from_numpy(self.pseudo.image_feats[pidx[:, 0]]))
            emb["s"] = model.embed_texts(torch.from_numpy(self.pseudo.text_feats[pidx[:, 1]]))
        coeff = grl_schedule(min(1.0, step / self.total_steps), eta=cfg.grl_eta)
        weights = dict(zip(PAIR_NAMES, cfg.adv_weights))
        extra = sparse_alignment_loss(emb, out["loss"], beta=cfg.pseudo_beta, pseudo_margin=cfg.pseudo_margin,
                                      discriminators=self.discriminators, weights=weights, coeff=coeff)
        return {**out, "pair_loss": out["loss"], **extra, "grl_gamma": torch.tensor(coeff)}


def _add_cross_style(model: JointModel, out: dict[str, torch.Tensor], img: torch.Tensor, images: torch.Tensor,
                     partners: torch.Tensor, img_all: torch.Tensor, groups_all: torch.Tensor, weight: float
                     ) -> dict[str, torch.Tensor]:
    """``out`` plus ``weight`` x the cross-style term over the batch's images that have a partner.

    Args:
        img: the batch's image embeddings. Shape: (B, embed_dim).
        images: the batch's image indices. Shape: (B,).
        partners: this epoch's partner per training image, -1 for none. Shape: (n_images,).
    """
    p = partners[images]
    has = p >= 0
    if int(has.sum()) < 2:  # one row has no negatives: nothing to contrast this batch
        return {**out, "cross_style": torch.zeros(())}
    term = cross_style_loss(img[has], model.embed_images(img_all[p[has]]), groups_all[images[has]],
                            logit_scale=model.logit_scale)
    return {**out, "loss": out["loss"] + weight * term, "cross_style": term}


def run_epoch(model: JointModel, data: PairSet, cfg: TrainConfig, epoch: int,
               opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LambdaLR,
               extras: _Extras | None = None, ema: WeightAverage | None = None,
               gen: GenerativePaths | None = None) -> dict[str, float]:
    objective, loss_name = objective_for_epoch(cfg, epoch, model.config.similarity)
    rng = np.random.default_rng([cfg.seed, epoch])
    if data.weights is not None:  # per-source weights: a fresh weighted draw of the pairs each epoch
        draws = weighted_epoch(data.weights, rng)
        n_batches = cfg.steps_per_epoch or max(1, data.pairs_per_epoch // cfg.batch_size)  # as the schedule counts
        order = draws[epoch_order(len(draws), n_batches, cfg.batch_size, rng)]
    elif cfg.steps_per_epoch is None:
        order = rng.permutation(len(data.pairs))
        n_batches = len(order) // cfg.batch_size or 1  # drop the ragged last batch
    else:
        n_batches = cfg.steps_per_epoch
        order = epoch_order(len(data.pairs), n_batches, cfg.batch_size, rng)
    img_all = torch.from_numpy(data.epoch_image_feats(cfg.seed, epoch))
    txt_all = torch.from_numpy(data.text_feats)
    groups_all = torch.from_numpy(data.image_groups)
    partners = (torch.from_numpy(group_partners(data.image_groups, np.random.default_rng([cfg.seed, epoch, 3])))
                if cfg.cross_style > 0 else None)
    pseudo_order = extras.pseudo_order(n_batches, cfg, epoch) if extras is not None else None
    params = [p for g in opt.param_groups for p in g["params"]]
    model.train()
    totals: dict[str, float] = {}

    def rank_update(b: int, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimiser step on the run's objective (GXN's "Match": Eq. 3 with a two-branch ranking loss)."""
        img = model.embed_images(img_all[idx[:, 0]])
        txt = model.embed_texts(txt_all[idx[:, 1]])
        out = objective(model, img, txt, groups_all[idx[:, 0]], idx[:, 1])
        if partners is not None:
            out = _add_cross_style(model, out, img, idx[:, 0], partners, img_all, groups_all, cfg.cross_style)
        if extras is not None and extras.active:  # A3VSE Eq. 9 around the pair loss
            out = extras.add_terms(model, out, img, txt, b, pseudo_order, sched.last_epoch, cfg)
        opt.zero_grad(set_to_none=True)
        if out["loss"].requires_grad:  # False when nothing the loss sees is trainable (identity heads)
            out["loss"].backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()  # parameters without a gradient are left as they are
        return out

    for b in progress(range(n_batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch"):
        idx = torch.from_numpy(data.pairs[order[b * cfg.batch_size:(b + 1) * cfg.batch_size]])
        if gen is None:
            out = rank_update(b, idx)
        else:  # Algorithm 1: Gen_i2t then Match, Gen_t2i then Match
            out = {}
            if gen.i2t:
                out.update(gen.update_i2t(model, opt, img_all[idx[:, 0]], idx[:, 0], idx[:, 1], epoch))
                out.update(rank_update(b, idx))
            if gen.t2i:
                out.update(gen.update_t2i(model, opt, txt_all[idx[:, 1]], idx[:, 0], groups_all[idx[:, 0]]))
                out.update(rank_update(b, idx))
        sched.step()
        if ema is not None:
            ema.update(model)
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + float(v.detach())
    row: dict[str, Any] = {f"train_{k}": v / n_batches for k, v in totals.items()}  # + "loss_name": str
    row.update(epoch=epoch + 1, loss_name=loss_name, lr=float(sched.get_last_lr()[0]),
               logit_scale=float(model.logit_scale.detach()))
    return row


def save_resume_state(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                      sched: torch.optim.lr_scheduler.LRScheduler, st: TrainState,
                      discriminators: torch.nn.Module | None = None, ema: WeightAverage | None = None,
                      gen: GenerativePaths | None = None) -> None:
    """Write what resuming after this epoch needs (``last.pt``): weights, optimiser, schedule, RNG, bookkeeping."""
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
             "torch_rng": torch.get_rng_state(), "st": st.to_dict(),
             **({"discriminators": discriminators.state_dict()} if discriminators is not None else {}),
             **({"ema": ema.state_dict()} if ema is not None else {}),
             **({"generative": gen.state_dict()} if gen is not None else {})}
    atomic_save_file(path, lambda tmp: torch.save(state, tmp))


def restore_resume_state(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                         sched: torch.optim.lr_scheduler.LRScheduler,
                         discriminators: torch.nn.Module | None = None, ema: WeightAverage | None = None,
                         gen: GenerativePaths | None = None) -> TrainState:
    """Load the state :func:`save_resume_state` wrote; returns the bookkeeping dict."""
    try:
        saved = torch.load(path, weights_only=True)  # tensors and plain containers only: no pickled code runs
        model.load_state_dict(saved["model"])
        if discriminators is not None:
            discriminators.load_state_dict(saved["discriminators"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        torch.set_rng_state(saved["torch_rng"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        if gen is not None:
            gen.load_state_dict(saved["generative"])
        return TrainState.from_dict(saved["st"])
    except Exception as e:  # torch raises many types for a damaged file
        raise XmrError(f"cannot resume from {path} ({type(e).__name__}); delete it or pass --overwrite "
                       "to start again") from None


def train_joint_model(train: PairSet, val: EvalSet, model_config: ModelConfig, config: TrainConfig, *,
                      out_dir: str | Path, overwrite: bool = False, vocab: Vocabulary | None = None,
                      pseudo: PairSet | None = None, caption_vocab: Vocabulary | None = None,
                      generative: GenerativeData | None = None) -> TrainResult[JointModel]:
    """Train a joint model; resume if ``out_dir`` holds an unfinished run of the same config.

    ``vocab`` is the word-level text model's vocabulary (``model_config.text_model``); the text
    features are then its id rows. ``pseudo`` holds un-annotated images paired with their
    pseudo-texts (A3VSE): each step then also draws a batch of them and adds their hinge
    (weight ``1 - config.pseudo_beta``); ``config.adversarial`` adds the domain discriminators
    (:func:`~xmr.training.sparse_objective.sparse_alignment_loss`), which are trained with the
    model and kept in ``last.pt`` but not in the saved model. ``config.generative`` adds GXN's
    generative paths (:class:`~xmr.training.generative.GenerativePaths`, reading ``generative``;
    the caption decoder's vocabulary is ``caption_vocab``): each step then runs Gen_i2t and / or
    Gen_t2i, each followed by a rank update (Algorithm 1). Returns the best (highest
    validation rsum) model. A finished run is loaded, not retrained.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = {"train": config, "model": model_config, "n_pairs": int(len(train.pairs)),
            "n_train_images": int(len(train.image_feats)),
            **({"vocab": vocab.digest()} if vocab is not None else {}),
            **({"caption_vocab": caption_vocab.digest()} if caption_vocab is not None else {}),
            **({"n_pseudo_pairs": int(len(pseudo.pairs))} if pseudo is not None else {})}
    resumable = _check_run_dir(out, spec, overwrite)
    save_json(out / "train.json", spec)
    if config.uses_instances and model_config.n_instances <= int(train.image_groups.max()):
        raise XmrError(f"the instance loss needs a classifier over {int(train.image_groups.max()) + 1} training "
                       f"groups; the model config has n_instances={model_config.n_instances}")
    torch.manual_seed(config.seed)
    if (pseudo is not None or config.adversarial) and not is_inner_product(model_config.similarity):
        raise XmrError("pseudo pairs and the adversarial terms score by cosine; train them with --similarity cosine")
    model = JointModel(model_config, vocab, caption_vocab=caption_vocab)
    gen = GenerativePaths(model, config, generative or GenerativeData(), len(train.image_feats)) \
        if config.generative else None
    discs = make_a3vse_discriminators(model_config.embed_dim, hidden_dim=config.disc_hidden) \
        if config.adversarial else None
    trainable = [*model.parameters(), *(discs.parameters() if discs is not None else [])]
    tail = [p for t in (model.image_tail, model.text_tail) if t is not None for p in t.parameters() if p.requires_grad]
    in_tail = {id(p) for p in tail}
    # the heads' group, possibly empty (a model with nothing to train still validates and saves), then
    # a fine-tuned image tail's own group at its lower learning rate
    groups: list[dict[str, Any]] = [{"params": [p for p in trainable if p.requires_grad and id(p) not in in_tail]}]
    if tail:
        groups.append({"params": tail, "lr": config.finetune_lr})
    opt = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = config.steps_per_epoch or max(1, train.pairs_per_epoch // config.batch_size)
    total = steps_per_epoch * config.epochs
    warm = int(config.warmup_epochs * steps_per_epoch)
    frozen = config.stage1_epochs * steps_per_epoch if config.then is not None else 0  # Stage I: the tail waits

    def heads_lr(s: int) -> float:
        return warmup_cosine(s, total_steps=total, warmup_steps=warm)

    def tail_lr(s: int) -> float:
        return 0.0 if s < frozen else warmup_cosine(s - frozen, total_steps=total - frozen, warmup_steps=warm)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, [heads_lr, tail_lr] if tail else heads_lr)
    st = TrainState()
    ema = WeightAverage(model, config.ema_decay) if config.ema_decay > 0 else None
    if resumable and (out / "last.pt").exists():
        st = restore_resume_state(out / "last.pt", model, opt, sched, discs, ema, gen)
        log.info("resuming %s after epoch %d", out, st.epoch)

    def checkpoint() -> None:
        save_resume_state(out / "last.pt", model, opt, sched, st, discs, ema, gen)

    extras = _Extras(pseudo, discs, total)
    with work_threads(model_config.training_work) as threads:  # heads alone: one thread (busy machines)
        log.debug("training on %d thread(s) (%s work)", threads, model_config.training_work)
        while st.status == "running" and st.epoch < config.epochs:
            _epoch_and_bookkeeping(model, train, val, config, st, opt, sched, out, extras, ema, gen)
            checkpoint()
    if st.status == "running":
        st.status = "done"
        checkpoint()
    if not (out / "best" / "model.safetensors").exists():
        raise XmrError(f"training in {out} produced no checkpoint (status {st.status})")
    return st.result(load_model(out / "best"), out / "best")


def _epoch_and_bookkeeping(model: JointModel, train: PairSet, val: EvalSet, config: TrainConfig, st: TrainState,
                           opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LambdaLR, out: Path,
                           extras: _Extras | None = None, ema: WeightAverage | None = None,
                           gen: GenerativePaths | None = None) -> None:
    """One epoch, its validation, the best checkpoint and the stopping rules; updates ``st``."""
    t0 = time.perf_counter()
    epoch = st.epoch
    row = run_epoch(model, train, config, epoch, opt, sched, extras, ema, gen)
    averaged = ema.applied(model) if ema is not None else contextlib.nullcontext()
    with averaged:  # validate and keep the best with the averaged weights
        metrics = validate(model, val)
        row.update({f"val_{k}": float(v) for k, v in metrics.items()}, seconds=time.perf_counter() - t0)
        st.finished_epoch(row)
        # warm-up epochs (VSE0 before VSE++, Stage I before instance+rank) train but are not
        # candidates: the checkpoint of a VSE++ run must come from VSE++ training
        if row["loss_name"] == config.final_objective and st.improved(metrics["rsum"]):
            model.save(out / "best", extra={"epoch": epoch + 1, "val": metrics, "train": config})
    log.info("epoch %d/%d  %s %.4f  val rsum %.1f  %s", epoch + 1, config.epochs, row["loss_name"],
             row["train_loss"], metrics["rsum"], epoch_eta([float(r["seconds"]) for r in st.history], config.epochs))
    save_json(out / "history.json", st.history)
    if config.hardest_negative and row["loss_name"] == config.loss:
        pair_loss = row.get("train_pair_loss", row["train_loss"])  # the hinge alone, without A3VSE's terms
        stuck = abs(pair_loss - 2 * config.margin) <= 0.01 * config.margin
        st.stuck = st.stuck + 1 if stuck else 0
        if st.stuck >= config.collapse_epochs:
            log.error("COLLAPSE: the %s loss has sat at 2 x margin = %.3f for %d epochs — every embedding "
                      "is (nearly) the same point. Stopping; the best checkpoint is from epoch %d. Try a longer "
                      "vse0 warm-up, a lower lr or the infonce loss.", config.loss, 2 * config.margin,
                      st.stuck, st.best_epoch)
            st.status = "collapsed"
    if st.status == "running" and config.patience and st.bad >= config.patience:
        log.info("early stop after epoch %d (best %d)", epoch + 1, st.best_epoch)
        st.status = "early-stopped"
