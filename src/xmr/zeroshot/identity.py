"""Identity models on frozen image features: single-modal classifiers and the two-stream model.

After the heterogeneous-manifolds paper (Yang et al., AAAI 2020, Sec. 4.2, Fig. 4): a
single-modal model is FC1 -> BN -> LeakyReLU -> FC2 (classifier over the training identities)
trained with cross-entropy; its embedding is the BN output (the paper's choice for person
images). The cross-modal model has one modality-specific layer per stream (standing in for the
paper's per-modality CNN streams, since our backbone is frozen and shared) feeding the same
FC1 -> BN -> LeakyReLU -> FC2, trained with L = CE + beta * batch-hard triplet (Eq. 9; beta = 0.2,
margin 0.6) on P x K batches holding both modalities of every identity. The triplet is taken on
the L2-normalised embedding; retrieval uses the L2-normalised embedding too.

Numpy in, numpy out at the edges (:func:`train_single_modal`, :func:`train_two_stream`,
:func:`embed`); everything runs on the CPU in seconds on cached features.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xmr.errors import XmrError
from xmr.losses.batch_hard import batch_hard_triplet_loss, identity_ce_loss

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IdentityTrainConfig:
    """Hyper-parameters of both identity models (validated at construction).

    Attributes:
        embed_dim: FC1 width = embedding dimension.
        stream_dim: width of each modality-specific layer of the two-stream model.
        epochs: passes over the training identities.
        batch_size: items per batch of the single-modal model.
        p_identities, k_per_identity: P identities x K items per two-stream batch (K >= 2 so
            that each batch holds both modalities of every identity).
        lr, weight_decay: AdamW.
        beta, margin: weight and margin of the batch-hard triplet term (Eq. 9).
        input_dropout: dropout on the frozen input features (the only augmentation available).
        seed: seeds torch and the batch sampler.
    """

    embed_dim: int = 256
    stream_dim: int = 256
    epochs: int = 30
    batch_size: int = 128
    p_identities: int = 64
    k_per_identity: int = 2
    lr: float = 1e-3
    weight_decay: float = 5e-4
    beta: float = 0.2
    margin: float = 0.6
    input_dropout: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("embed_dim", "stream_dim", "epochs", "batch_size", "p_identities"):
            if getattr(self, name) < 1:
                raise XmrError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.p_identities < 2:
            raise XmrError(f"p_identities must be >= 2 (negatives come from other identities), got {self.p_identities}")
        if self.k_per_identity < 2:
            raise XmrError(f"k_per_identity must be >= 2 (one item per modality at least), got {self.k_per_identity}")
        if self.lr <= 0 or self.weight_decay < 0 or self.beta < 0 or self.margin < 0:
            raise XmrError(f"need lr > 0 and weight_decay, beta, margin >= 0; got {self}")
        if not 0.0 <= self.input_dropout < 1.0:
            raise XmrError(f"input_dropout must be in [0, 1), got {self.input_dropout}")

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


class _Standardize(nn.Module):
    """Per-dimension standardisation with statistics of the training features (buffers)."""

    def __init__(self, feats: np.ndarray) -> None:
        super().__init__()
        x = torch.as_tensor(feats, dtype=torch.float32)
        self.register_buffer("mean", x.mean(dim=0))
        self.register_buffer("std", x.std(dim=0).clamp(min=1e-6))

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class _SharedHead(nn.Module):
    """FC1 -> BN (the embedding) -> LeakyReLU -> FC2 (identity logits)."""

    def __init__(self, in_dim: int, embed_dim: int, n_classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, embed_dim)
        self.bn = nn.BatchNorm1d(embed_dim)
        self.fc2 = nn.Linear(embed_dim, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.bn(self.fc1(x))
        return emb, self.fc2(F.leaky_relu(emb, 0.1))


class SingleModalNet(nn.Module):
    """Classifier over training identities for one modality (paper Fig. 4a)."""

    def __init__(self, train_feats: np.ndarray, n_classes: int, cfg: IdentityTrainConfig) -> None:
        super().__init__()
        self.norm = _Standardize(train_feats)
        self.drop = nn.Dropout(cfg.input_dropout)
        self.head = _SharedHead(train_feats.shape[1], cfg.embed_dim, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shape: (B, in_dim) -> embedding (B, embed_dim), logits (B, n_classes)."""
        return self.head(self.drop(self.norm(x)))


class TwoStreamNet(nn.Module):
    """One modality-specific layer per stream, then a shared FC1/BN/FC2 head (paper Fig. 4b)."""

    def __init__(self, train_feats: Sequence[np.ndarray], n_classes: int, cfg: IdentityTrainConfig) -> None:
        super().__init__()
        self.norms = nn.ModuleList([_Standardize(f) for f in train_feats])
        self.streams = nn.ModuleList([nn.Sequential(nn.Dropout(cfg.input_dropout),
                                                    nn.Linear(f.shape[1], cfg.stream_dim), nn.LeakyReLU(0.1))
                                      for f in train_feats])
        self.head = _SharedHead(cfg.stream_dim, cfg.embed_dim, n_classes)
        self.stream_dim = cfg.stream_dim

    def forward(self, x: torch.Tensor, modality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shape: x (B, in_dim), modality (B,) in [0, n_streams) -> embedding, logits."""
        hidden = x.new_zeros(len(x), self.stream_dim)
        for m, (norm, stream) in enumerate(zip(self.norms, self.streams)):
            rows = modality == m
            if rows.any():
                hidden[rows] = stream(norm(x[rows]))
        return self.head(hidden)


def pk_batches(labels: np.ndarray, modality: np.ndarray, *, p: int, k: int, rng: np.random.Generator
               ) -> Iterator[np.ndarray]:
    """One epoch of P x K batches over the identities present in every modality.

    Each batch takes P identities (a fresh permutation per epoch; a last batch of fewer than 2
    identities is dropped) and K items of each: first one item of every modality, then the rest
    drawn from the identity's items (with replacement when it has too few).

    Args:
        labels: identity of each item. Shape: (n,).
        modality: modality index of each item. Shape: (n,).
        p, k: identities per batch and items per identity (k >= number of modalities).
        rng: the random generator (seeded by the caller).

    Yields:
        Item indices. Shape: (p' * k,), p' <= p.
    """
    labels, modality = np.asarray(labels), np.asarray(modality)
    mods = np.unique(modality)
    if k < len(mods):
        raise XmrError(f"k={k} cannot hold one item of each of the {len(mods)} modalities")
    members: dict[int, list[np.ndarray]] = {}
    for ident in np.unique(labels):
        rows = np.flatnonzero(labels == ident)
        per_mod = [rows[modality[rows] == m] for m in mods]
        if all(len(r) for r in per_mod):
            members[int(ident)] = per_mod
    idents = np.array(sorted(members))
    order = rng.permutation(idents)
    for a in range(0, len(order), p):
        chunk = order[a:a + p]
        if len(chunk) < 2:
            break
        batch = []
        for ident in chunk:
            per_mod = members[int(ident)]
            picked = [int(rng.choice(r)) for r in per_mod]
            pool = np.concatenate(per_mod)
            rest = k - len(picked)
            if rest:
                picked += rng.choice(pool, size=rest, replace=rest > len(pool)).tolist()
            batch.extend(picked)
        yield np.asarray(batch, dtype=np.int64)


def _optimizer(model: nn.Module, cfg: IdentityTrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


def train_single_modal(feats: np.ndarray, labels: np.ndarray, cfg: IdentityTrainConfig) -> SingleModalNet:
    """Fit a single-modal identity classifier with cross-entropy.

    Args:
        feats: frozen features of one modality. Shape: (n, in_dim).
        labels: identity index of each row, in [0, n_classes). Shape: (n,).
        cfg: hyper-parameters (``beta``/``margin``/``p_identities`` are not used here).

    Returns:
        The trained model in eval mode.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    x = torch.as_tensor(feats, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.int64)
    model = SingleModalNet(feats, int(y.max()) + 1, cfg)
    opt = _optimizer(model, cfg)
    model.train()
    for epoch in range(cfg.epochs):
        perm = rng.permutation(len(x))
        for a in range(0, len(perm), cfg.batch_size):
            idx = torch.as_tensor(perm[a:a + cfg.batch_size])
            if len(idx) < 2:  # BatchNorm needs two rows
                continue
            _, logits = model(x[idx])
            out = identity_ce_loss(logits, y[idx])
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
        log.debug("single-modal epoch %d  ce %.4f", epoch, float(out["loss"].detach()))
    return model.eval()


def train_two_stream(feats: np.ndarray, labels: np.ndarray, modality: np.ndarray, cfg: IdentityTrainConfig
                     ) -> tuple[TwoStreamNet, dict[str, float]]:
    """Fit the cross-modal two-stream model with CE + beta * batch-hard triplet (Eq. 9).

    Args:
        feats: frozen features of the items of all modalities. Shape: (n, in_dim).
        labels: identity index of each item, in [0, n_classes). Shape: (n,).
        modality: stream index of each item (0, 1, ...). Shape: (n,).
        cfg: hyper-parameters.

    Returns:
        The model in eval mode and the last epoch's mean loss parts.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    modality = np.asarray(modality, dtype=np.int64)
    x = torch.as_tensor(feats, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.int64)
    mod = torch.as_tensor(modality)
    n_streams = int(modality.max()) + 1
    model = TwoStreamNet([feats[modality == m] for m in range(n_streams)], int(y.max()) + 1, cfg)
    opt = _optimizer(model, cfg)
    model.train()
    parts: dict[str, float] = {}
    for epoch in range(cfg.epochs):
        sums: dict[str, float] = {}
        n = 0
        for batch in pk_batches(labels, modality, p=cfg.p_identities, k=cfg.k_per_identity, rng=rng):
            idx = torch.as_tensor(batch)
            emb, logits = model(x[idx], mod[idx])
            ce = identity_ce_loss(logits, y[idx])
            tri = batch_hard_triplet_loss(F.normalize(emb, dim=1), y[idx], margin=cfg.margin)
            loss = ce["loss"] + cfg.beta * tri["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            for key, val in (("loss", loss), ("ce", ce["loss"]), ("triplet", tri["loss"]),
                             ("accuracy", ce["accuracy"])):
                sums[key] = sums.get(key, 0.0) + float(val.detach())
            n += 1
        parts = {key: val / max(n, 1) for key, val in sums.items()}
        log.debug("two-stream epoch %d  %s", epoch, parts)
    return model.eval(), parts


@torch.no_grad()
def embed(model: SingleModalNet | TwoStreamNet, feats: np.ndarray, *, modality: int | None = None,
          batch_size: int = 4096) -> np.ndarray:
    """L2-normalised embeddings (the BN output of FC1). Shape: (n, in_dim) -> (n, embed_dim), float32.

    ``modality`` picks the stream of a :class:`TwoStreamNet` (required there, ignored otherwise).
    """
    if isinstance(model, TwoStreamNet) and modality is None:
        raise XmrError("a two-stream model needs the modality (stream index) of the features")
    model.eval()
    x = torch.as_tensor(np.asarray(feats), dtype=torch.float32)
    out = []
    for a in range(0, len(x), batch_size):
        xb = x[a:a + batch_size]
        if isinstance(model, TwoStreamNet):
            emb, _ = model(xb, torch.full((len(xb),), int(modality), dtype=torch.int64))  # type: ignore[arg-type]  # modality is 0 or 1 here
        else:
            emb, _ = model(xb)
        out.append(F.normalize(emb, dim=1))
    return torch.cat(out).numpy().astype(np.float32)
