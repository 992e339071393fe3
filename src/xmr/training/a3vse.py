"""A3VSE: visual-semantic embedding from sparse annotations plus pseudo-texts, on cached features.

Huang et al., "Annotation Efficient Cross-Modal Retrieval with Adversarial Attentive Alignment"
(A3VSE, ACM MM 2019), Secs. 3-4. Four domains of embedded inputs (see
:mod:`xmr.models.discriminator`):

    "v"   G^v(v)    annotated training images (their region features)
    "t"   G^t(t)    the real texts of the annotated images
    "vu"  G^v(v^u)  un-annotated training images
    "s"   G^t(s)    the pseudo-texts of the un-annotated images (e.g. ImageNet labels of their
                    regions, :mod:`xmr.semantics.labeller`), encoded like any text

Objective per mini-batch of annotated pairs (v, t) and pseudo pairs (v^u, s) (Eq. 9):

    l = beta * l_p(v, t; alpha_vt) + (1 - beta) * l_p(v^u, s; alpha_vs)      triplet, Eq. 3
        + sum_pairs lambda_pair * BCE_pair  behind a GRL with gamma(p)         adversarial, Eqs. 4-8

with l_p the VSE++ hardest-negative hinge of Eq. 2 (:func:`xmr.losses.vse_loss`), beta = 0.8,
alpha_vt = 0.2, alpha_vs = 0.3, the six lambdas of Sec. 4 and gamma(p) = 2 / (1 + exp(-10 p)) - 1
(:func:`xmr.models.grl.grl_schedule`), p the training progress, here per step.

The model (:class:`A3VSEModel`):

* image branch G^v: each region feature -> Linear (F^v's trainable FC) -> K-head context
  attention pooling (Eq. 1, :class:`xmr.models.ContextAttentionPool`) projected to the joint
  dimension; with ``attention=False`` the mean of the projected regions instead (the paper's
  "w/o attention" ablation). L2-normalised.
* text branch G^t: a head (:func:`xmr.models.heads.create_head`) over the MiniLM sentence
  feature. Real texts and pseudo-texts share it.

Deviations from the paper, all documented in the config:

* Regions are grid cells of a CNN feature map (:mod:`xmr.encoders.regions`), not detector ROIs.
* No token-level text attention: the cached text features are sentence-level (MiniLM), so
  E^t is skipped and the text branch is a head over one vector.
* The attention's context dimension K' defaults to 256 rather than H (cost on two CPU cores), and
  the K concatenated heads are projected to the joint dimension so that every ablation embeds
  into the same space.
* With ``pseudo_texts=False`` the triplet loss is l_p(v, t) alone (weight 1, not beta): the
  "vanilla" model of the ablation, exactly VSE++.
* The discriminators see "s" and "vu" batches only when pseudo-texts are on; with them off the
  adversarial term keeps the pairs whose domains exist (v_vu still aligns the un-annotated
  images if they are given).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from torch import nn

from xmr.errors import XmrError
from xmr.evaluation.metrics import cross_modal_metrics
from xmr.losses import vse_loss
from xmr.layers.attention import ContextAttentionPool
from xmr.models.discriminator import A3VSE_PAIRS, make_a3vse_discriminators
from xmr.models.grl import grl_schedule
from xmr.models.heads import create_head
from xmr.training.sparse_objective import sparse_alignment_loss
from xmr.utils.io import atomic_write, save_json, to_jsonable

log = logging.getLogger(__name__)

PAPER_WEIGHTS: tuple[float, ...] = tuple(p.weight for p in A3VSE_PAIRS)  # (0.2, 0.1, 0.5, 0.5, 0.3, 0.3)
PAIR_NAMES: tuple[str, ...] = tuple(p.name for p in A3VSE_PAIRS)          # v_vu, t_s, v_t, vu_s, v_s, vu_t


@dataclass(frozen=True)
class A3VSEConfig:
    """Everything that defines an A3VSE run (saved as ``config.json`` beside the checkpoint).

    Attributes:
        embed_dim: H, the joint-space dimension (paper: 512).
        heads: K, attention heads (paper: 3).
        context_dim: K', the attention context dimension (paper: H; here 256 by default).
        attention_scale: lambda_v, the softmax temperature of Eq. 1 (paper: unspecified).
        text_head: head over the sentence feature ("linear" or "mlp").
        beta: weight of the annotated triplet term in Eq. 3 (paper: 0.8); 1 - beta weights the
            pseudo-pair term.
        margin: alpha_vt, the margin of the annotated pairs (paper: 0.2).
        pseudo_margin: alpha_vs, the margin of the pseudo pairs (paper: 0.3).
        adversarial: add the six-discriminator GRL term (Eqs. 4-8).
        attention: K-head attention pooling (else mean pooling over regions).
        pseudo_texts: use the (un-annotated image, pseudo-text) pairs.
        adv_weights: lambda of (v_vu, t_s, v_t, vu_s, v_s, vu_t) (paper: 0.2, 0.1, 0.5, 0.5, 0.3, 0.3).
        grl_eta: eta of the gamma schedule (paper: 10).
        disc_hidden: hidden width of each discriminator MLP.
        epochs: training epochs.
        steps_per_epoch: optimiser steps per epoch (None: one pass over the larger of the
            annotated pairs and, when used, the pseudo pairs).
        batch_size: pairs per mini-batch, for each of (v, t) and (v^u, s) (paper: 128).
        lr: Adam learning rate.
        weight_decay: Adam weight decay (paper: 1e-6).
        grad_clip: gradient-norm clip (paper: 2.0).
        seed: seeds initialisation and batch sampling.
    """

    embed_dim: int = 256
    heads: int = 3
    context_dim: int = 256
    attention_scale: float = 1.0
    text_head: str = "linear"
    beta: float = 0.8
    margin: float = 0.2
    pseudo_margin: float = 0.3
    adversarial: bool = True
    attention: bool = True
    pseudo_texts: bool = True
    adv_weights: tuple[float, ...] = PAPER_WEIGHTS
    grl_eta: float = 10.0
    disc_hidden: int = 256
    epochs: int = 10
    steps_per_epoch: int | None = None
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 1e-6
    grad_clip: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("embed_dim", "heads", "context_dim", "disc_hidden", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise XmrError(f"A3VSE {name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise XmrError(f"A3VSE batch_size must be >= 2 (in-batch negatives), got {self.batch_size}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise XmrError(f"A3VSE steps_per_epoch must be >= 1 or None, got {self.steps_per_epoch}")
        if not 0.0 <= self.beta <= 1.0:
            raise XmrError(f"A3VSE beta must be in [0, 1], got {self.beta}")
        if self.margin < 0 or self.pseudo_margin < 0:
            raise XmrError(f"A3VSE margins must be >= 0, got {self.margin} and {self.pseudo_margin}")
        if len(self.adv_weights) != len(PAIR_NAMES) or any(not w >= 0 for w in self.adv_weights):
            raise XmrError(f"A3VSE adv_weights must be {len(PAIR_NAMES)} numbers >= 0 "
                           f"({', '.join(PAIR_NAMES)}), got {self.adv_weights}")
        if not self.lr > 0 or not self.attention_scale > 0 or not self.grad_clip > 0:
            raise XmrError(f"A3VSE lr, attention_scale and grad_clip must be > 0, got {self.lr}, "
                           f"{self.attention_scale}, {self.grad_clip}")
        object.__setattr__(self, "adv_weights", tuple(float(w) for w in self.adv_weights))

    def pair_weights(self) -> dict[str, float]:
        """lambda per discriminator name."""
        return dict(zip(PAIR_NAMES, self.adv_weights))


@dataclass(frozen=True)
class PairedFeatures:
    """Image-text training pairs on cached features; images may have several texts.

    Attributes:
        regions: region features of the images. Shape: (n_images, R, C).
        texts: sentence features of the texts (real or pseudo). Shape: (n_pairs, D_t).
        image_index: the image of each text. Shape: (n_pairs,), int.
    """

    regions: np.ndarray
    texts: np.ndarray
    image_index: np.ndarray

    def __post_init__(self) -> None:
        if self.regions.ndim != 3 or self.texts.ndim != 2:
            raise XmrError(f"regions must be (n, R, C) and texts (m, D), got {self.regions.shape} "
                           f"and {self.texts.shape}")
        idx = np.asarray(self.image_index)
        if idx.shape != (len(self.texts),) or (len(idx) and (idx.min() < 0 or idx.max() >= len(self.regions))):
            raise XmrError(f"image_index must be {len(self.texts)} ints in [0, {len(self.regions)})")

    @classmethod
    def one_to_one(cls, regions: np.ndarray, texts: np.ndarray) -> PairedFeatures:
        """Pairs where text i belongs to image i."""
        return cls(regions, texts, np.arange(len(texts)))

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class RetrievalFeatures:
    """An evaluation set: images, texts and which texts describe which images.

    Attributes:
        regions: Shape: (n_images, R, C).
        texts: Shape: (n_texts, D_t).
        relevance: True where text t describes image i. Shape: (n_images, n_texts), dense or CSR.
    """

    regions: np.ndarray
    texts: np.ndarray
    relevance: np.ndarray | sparse.spmatrix

    def __post_init__(self) -> None:
        if self.regions.ndim != 3 or self.texts.ndim != 2:
            raise XmrError(f"regions must be (n, R, C) and texts (m, D), got {self.regions.shape} "
                           f"and {self.texts.shape}")
        if tuple(self.relevance.shape) != (len(self.regions), len(self.texts)):
            raise XmrError(f"relevance must have shape ({len(self.regions)}, {len(self.texts)}), "
                           f"got {tuple(self.relevance.shape)}")


class A3VSEModel(nn.Module):
    """G^v (regions -> joint space) and G^t (sentence feature -> joint space).

    Args:
        region_dim: C, the dimension of a region feature.
        text_dim: D_t, the dimension of a sentence feature.
        config: the run's :class:`A3VSEConfig` (embed_dim, heads, context_dim, attention, ...).

    Shape:
        ``embed_images(regions (B, R, C)) -> (B, embed_dim)``;
        ``embed_texts(texts (B, D_t)) -> (B, embed_dim)``; both L2-normalised.
    """

    def __init__(self, region_dim: int, text_dim: int, config: A3VSEConfig) -> None:
        super().__init__()
        self.region_dim, self.text_dim, self.config = region_dim, text_dim, config
        self.region_fc = nn.Linear(region_dim, config.embed_dim)  # F^v's trainable FC, per region
        nn.init.xavier_uniform_(self.region_fc.weight)
        self.attention: ContextAttentionPool | None = None
        if config.attention:
            self.attention = ContextAttentionPool(config.embed_dim, heads=config.heads,
                                                  context_dim=config.context_dim,
                                                  scale=config.attention_scale, out_dim=config.embed_dim)
        self.text_head = create_head(config.text_head, text_dim, config.embed_dim)

    def embed_images(self, regions: torch.Tensor) -> torch.Tensor:
        if regions.ndim != 3 or regions.shape[2] != self.region_dim:
            raise XmrError(f"regions must be (B, R, {self.region_dim}), got {tuple(regions.shape)}")
        h = self.region_fc(regions)  # (B, R, H)
        pooled = self.attention(h) if self.attention is not None else h.mean(dim=1)
        return F.normalize(pooled, dim=-1)

    def embed_texts(self, texts: torch.Tensor) -> torch.Tensor:
        if texts.ndim != 2 or texts.shape[1] != self.text_dim:
            raise XmrError(f"text features must be (B, {self.text_dim}), got {tuple(texts.shape)}")
        return self.text_head(texts)

    @torch.no_grad()
    def encode_images(self, regions: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
        """Embeddings of region features, eval mode. Shape: (n, R, C) -> (n, embed_dim) float32."""
        return self._encode(self.embed_images, regions, batch_size)

    @torch.no_grad()
    def encode_texts(self, texts: np.ndarray, *, batch_size: int = 2048) -> np.ndarray:
        """Embeddings of sentence features, eval mode. Shape: (n, D_t) -> (n, embed_dim) float32."""
        return self._encode(self.embed_texts, texts, batch_size)

    def _encode(self, fn: object, x: np.ndarray, batch_size: int) -> np.ndarray:
        was = self.training
        self.eval()
        try:
            out = [fn(torch.as_tensor(np.asarray(x[i:i + batch_size], dtype=np.float32)))  # type: ignore[operator]
                   for i in range(0, len(x), batch_size)]
        finally:
            self.train(was)
        if not out:
            return np.zeros((0, self.config.embed_dim), dtype=np.float32)
        return torch.cat(out).numpy()


def a3vse_loss(emb: Mapping[str, torch.Tensor], config: A3VSEConfig, *,
               discriminators: Mapping[str, nn.Module] | None = None, coeff: float = 0.0
               ) -> dict[str, torch.Tensor]:
    """The A3VSE objective (Eq. 9) of one mini-batch of embeddings.

    Args:
        emb: embeddings by domain: "v" and "t" (row i of each is a pair), and with
            ``config.pseudo_texts`` also "vu" and "s" (paired likewise). Shape: each (B_x, d),
            L2-normalised.
        config: beta, margins, flags and lambdas.
        discriminators: the six modules of :func:`make_a3vse_discriminators` (needed when
            ``config.adversarial``).
        coeff: gamma, the gradient-reversal coefficient of this step.

    Returns:
        ``loss`` = ``triplet`` + ``adversarial``; ``triplet_vt``, ``triplet_vs`` (when used),
        ``adversarial`` (when used) and the per-pair ``loss_<pair>``/``acc_<pair>``.
    """
    if config.adversarial and discriminators is None:
        raise XmrError("adversarial A3VSE loss needs the discriminators")
    tri_vt = vse_loss(emb["v"], emb["t"], margin=config.margin, max_violation=True)["loss"]  # Eq. 2
    domains = {d: emb[d] for d in (("v", "t", "vu", "s") if config.pseudo_texts else ("v", "t", "vu")) if d in emb}
    out = sparse_alignment_loss(domains, tri_vt, beta=config.beta, pseudo_margin=config.pseudo_margin,
                                discriminators=discriminators if config.adversarial else None,
                                weights=config.pair_weights(), coeff=coeff)
    out["triplet_vt"] = tri_vt
    out["triplet"] = out["loss"] - out.get("adversarial", 0.0)
    return out


@dataclass
class A3VSEResult:
    """What :func:`train_a3vse` returns.

    Attributes:
        model: the model with the best-validation weights loaded, in eval mode; its
            ``encode_images`` / ``encode_texts`` embed features for evaluation.
        best_epoch: 1-based epoch of the best validation rsum (0: no validation, last epoch kept).
        best_val: the validation metrics of that epoch.
        history: one dict per epoch (mean losses, gamma at the epoch end, validation metrics).
        coeffs: gamma at every optimiser step.
    """

    model: A3VSEModel
    best_epoch: int
    best_val: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    coeffs: list[float] = field(default_factory=list)


def grl_coeff(step: int, total_steps: int, *, eta: float = 10.0) -> float:
    """gamma at optimiser step ``step`` (0-based) of ``total_steps``: p = step / total_steps."""
    if total_steps < 1 or not 0 <= step <= total_steps:
        raise XmrError(f"step must be in [0, {total_steps}], got {step}")
    return grl_schedule(step / total_steps, eta=eta)


def evaluate_a3vse(model: A3VSEModel, data: RetrievalFeatures) -> dict[str, float]:
    """Cross-modal metrics (R@1/5/10 both ways, rsum) of ``model`` on ``data``."""
    img = model.encode_images(data.regions)
    txt = model.encode_texts(data.texts)
    return cross_modal_metrics(img @ txt.T, data.relevance)


def _batches(n: int, batch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """An endless stream of index batches, reshuffled every pass; the last short batch is merged away."""
    while True:
        order = rng.permutation(n)
        for i in range(0, max(n - batch + 1, 1), batch):
            yield order[i:i + batch]


def _save_checkpoint(out_dir: Path, model: A3VSEModel, config: A3VSEConfig, epoch: int,
                     metrics: dict[str, float]) -> None:
    with atomic_write(out_dir / "best.pt", "wb") as fh:
        torch.save({"model": model.state_dict(), "epoch": epoch, "region_dim": model.region_dim,
                    "text_dim": model.text_dim}, fh)
    save_json(out_dir / "best.json", {"epoch": epoch, **to_jsonable(metrics)})


def _check_inputs(annotated: PairedFeatures, pseudo: PairedFeatures | None, config: A3VSEConfig) -> None:
    if len(annotated) < 2:
        raise XmrError(f"A3VSE needs at least 2 annotated pairs, got {len(annotated)}")
    if config.pseudo_texts and (pseudo is None or len(pseudo) < 2):
        raise XmrError("A3VSE with pseudo_texts=True needs at least 2 (un-annotated image, pseudo-text) pairs")
    if pseudo is not None and (pseudo.regions.shape[1:] != annotated.regions.shape[1:]
                               or pseudo.texts.shape[1] != annotated.texts.shape[1]):
        raise XmrError(f"pseudo pairs have regions {pseudo.regions.shape[1:]} / texts {pseudo.texts.shape[1]}, "
                       f"annotated {annotated.regions.shape[1:]} / {annotated.texts.shape[1]}")


def train_a3vse(annotated: PairedFeatures, unannotated: PairedFeatures | None, val: RetrievalFeatures | None,
                config: A3VSEConfig, out_dir: str | Path | None = None) -> A3VSEResult:
    """Train A3VSE (Eq. 9) with Adam; keep the epoch with the best validation rsum.

    Each step draws ``batch_size`` annotated pairs (v, t) and, when pseudo-texts or the v/vu
    discriminator need them, ``batch_size`` pseudo pairs (v^u, s); gamma follows
    :func:`grl_coeff` over all steps. Seeded: the same inputs and config give the same weights.

    Args:
        annotated: the annotated (image, real text) pairs: domains "v" and "t".
        unannotated: the (un-annotated image, pseudo-text) pairs: domains "vu" and "s"; may be
            None when ``config.pseudo_texts`` is False.
        val: validation set for model selection (None: keep the last epoch).
        config: the run's hyper-parameters and ablation flags.
        out_dir: where to write ``config.json``, ``best.pt``, ``best.json`` and
            ``history.json`` (None: nothing is written).

    Returns:
        An :class:`A3VSEResult` whose ``model`` holds the best weights.
    """
    _check_inputs(annotated, unannotated, config)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    region_dim, text_dim = annotated.regions.shape[2], annotated.texts.shape[1]
    model = A3VSEModel(region_dim, text_dim, config)
    discs = make_a3vse_discriminators(config.embed_dim, hidden_dim=config.disc_hidden) if config.adversarial else None
    params = list(model.parameters()) + (list(discs.parameters()) if discs is not None else [])
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    use_u = unannotated is not None and (config.pseudo_texts or config.adversarial)
    n_u = len(unannotated) if use_u and unannotated is not None else 0
    steps = config.steps_per_epoch or math.ceil(max(len(annotated), n_u if config.pseudo_texts else 0)
                                                / config.batch_size)
    total = steps * config.epochs
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_json(out / "config.json", dataclasses.asdict(config))
    t_stream = _batches(len(annotated), min(config.batch_size, len(annotated)), rng)
    u_stream = _batches(n_u, min(config.batch_size, n_u), rng) if n_u >= 2 else None
    a_reg = torch.as_tensor(np.asarray(annotated.regions, dtype=np.float32))
    a_txt = torch.as_tensor(np.asarray(annotated.texts, dtype=np.float32))
    if u_stream is not None and unannotated is not None:
        u_reg = torch.as_tensor(np.asarray(unannotated.regions, dtype=np.float32))
        u_txt = torch.as_tensor(np.asarray(unannotated.texts, dtype=np.float32))
    best_rsum, best_epoch, best_val, best_state = -math.inf, 0, {}, None
    history: list[dict[str, float]] = []
    coeffs: list[float] = []
    step = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        if discs is not None:
            discs.train()
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        for _ in range(steps):
            gamma = grl_coeff(step, total, eta=config.grl_eta)
            coeffs.append(gamma)
            ti = next(t_stream)
            emb = {"v": model.embed_images(a_reg[annotated.image_index[ti]]), "t": model.embed_texts(a_txt[ti])}
            if u_stream is not None and unannotated is not None:
                ui = next(u_stream)
                emb["vu"] = model.embed_images(u_reg[unannotated.image_index[ui]])
                if config.pseudo_texts:
                    emb["s"] = model.embed_texts(u_txt[ui])
            parts = a3vse_loss(emb, config, discriminators=discs, coeff=gamma)
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            opt.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            step += 1
        row: dict[str, float] = {"epoch": epoch, "gamma": coeffs[-1], "seconds": time.perf_counter() - t0,
                                 **{k: v / steps for k, v in sums.items()}}
        if val is not None:
            metrics = evaluate_a3vse(model, val)
            row.update({f"val_{k}": float(v) for k, v in metrics.items()})
            if metrics["rsum"] > best_rsum:
                best_rsum, best_epoch, best_val = metrics["rsum"], epoch, metrics
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if out is not None:
                    _save_checkpoint(out, model, config, epoch, metrics)
        history.append(row)
        log.info("a3vse epoch %d/%d: loss %.4f%s", epoch, config.epochs, row["loss"],
                 f", val rsum {row['val_rsum']:.1f}" if "val_rsum" in row else "")
    if best_state is not None:
        model.load_state_dict(best_state)
    elif out is not None:
        _save_checkpoint(out, model, config, config.epochs, {})
    if out is not None:
        save_json(out / "history.json", history)
    model.eval()
    return A3VSEResult(model=model, best_epoch=best_epoch, best_val=best_val, history=history, coeffs=coeffs)


def load_a3vse(out_dir: str | Path) -> A3VSEModel:
    """The best model saved by :func:`train_a3vse` in ``out_dir``, in eval mode."""
    from xmr.utils.io import load_json

    out = Path(out_dir)
    if not (out / "best.pt").exists() or not (out / "config.json").exists():
        raise XmrError(f"no A3VSE checkpoint in {out} (expected best.pt and config.json)")
    raw = load_json(out / "config.json")
    raw["adv_weights"] = tuple(raw["adv_weights"])
    config = A3VSEConfig(**raw)
    ckpt = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    model = A3VSEModel(int(ckpt["region_dim"]), int(ckpt["text_dim"]), config)
    model.load_state_dict(ckpt["model"])
    return model.eval()
