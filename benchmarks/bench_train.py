"""Training throughput (pairs/s) of the xmr trainer vs a bare PyTorch loop, on cached features.

For each configuration (head x loss) it times, on the same random features (image dim 1280,
text dim 384, like EfficientNet-Lite0 + MiniLM), one training epoch over each of ``--slices``
slices of the pairs in each of ``--repeat`` rounds, the cases in rotating order (short, adjacent
samples keep the paired ratio honest on a noisy machine; medians and quartiles are reported):

* ``bare``: a hand-written loop -- shuffle, index, two heads, the loss, zero_grad/backward/
  AdamW step/LambdaLR step -- doing the same math as xmr (same head architecture, dropout,
  group/text masking in the loss) on the same tensors: the baseline;
* ``xmr run_epoch``: the trainer's epoch function alone (no validation, no checkpoint);
* ``xmr train_joint_model``: one whole 1-epoch ``train_joint_model`` call with a tiny val set
  (adds model/optimizer set-up, validation on 64 items, best + last checkpoint writes).

VSE++ runs with ``vse0_warmup_epochs=0`` so the timed epoch really uses the hardest-negative loss.
Example (about 2-3 min on 2 cores)::

    python benchmarks/bench_train.py --n-pairs 20000 --batch-size 128 --embed-dim 256 --slices 4
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from xmr.bench.common import command_line, fmt_ratio, interleaved, load_note, markdown, median, paired_ratio, spread
from xmr.models import ModelConfig
from xmr.training import EvalSet, PairSet, TrainConfig, train_joint_model
from xmr.training.trainer import run_epoch, start_run


def make_data(n_pairs: int, img_dim: int, txt_dim: int, seed: int = 0) -> PairSet:
    """Random features: n_pairs/2 images (2 texts each, groups of 2 images), n_pairs texts."""
    rng = np.random.default_rng(seed)
    n_img = n_pairs // 2
    pairs = np.stack([np.repeat(np.arange(n_img), 2), rng.permutation(n_pairs)], axis=1).astype(np.int64)
    return PairSet(rng.standard_normal((n_img, img_dim), dtype=np.float32),
                   rng.standard_normal((n_pairs, txt_dim), dtype=np.float32),
                   pairs, (np.arange(n_img) // 2).astype(np.int64))


def tiny_val(data: PairSet, n: int = 64) -> EvalSet:
    return EvalSet(data.image_feats[:n], data.text_feats[:n], sp.csr_matrix(np.eye(n, dtype=bool)))


class BareHead(nn.Module):
    """Hand-written copy of xmr's heads (linear: normalize(W drop(x)); mlp: + residual 2-layer)."""

    def __init__(self, kind: str, d_in: int, d_out: int, hidden: int, p: float) -> None:
        super().__init__()
        self.kind, self.drop = kind, nn.Dropout(p)
        self.shortcut = nn.Linear(d_in, d_out)
        if kind == "mlp":
            self.fc1, self.norm, self.fc2 = nn.Linear(d_in, hidden), nn.LayerNorm(hidden), nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(x)
        y = self.shortcut(x)
        if self.kind == "mlp":
            y = y + self.fc2(self.drop(F.gelu(self.norm(self.fc1(x)))))
        return F.normalize(y, dim=-1)


def bare_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, mask: torch.Tensor, loss: str,
              margin: float) -> torch.Tensor:
    """InfoNCE or VSE++ with ``mask`` (B, B) = off-diagonal pairs that are not negatives."""
    s = img @ txt.t()
    if loss == "infonce":
        logits = (scale * s).masked_fill(mask, float("-inf"))
        t = torch.arange(len(s))
        return (F.cross_entropy(logits, t) + F.cross_entropy(logits.t(), t)) / 2
    pos, not_neg = s.diagonal(), mask | torch.eye(len(s), dtype=torch.bool)
    ct = (margin + s - pos[:, None]).clamp(min=0).masked_fill(not_neg, 0.0)
    ci = (margin + s - pos[None, :]).clamp(min=0).masked_fill(not_neg, 0.0)
    return ct.max(dim=1).values.mean() + ci.max(dim=0).values.mean()


def bare_epoch(data: PairSet, mc: ModelConfig, tc: TrainConfig) -> None:
    """One epoch of the baseline loop (fresh model and optimizer, like the xmr cases)."""
    torch.manual_seed(tc.seed)
    heads = nn.ModuleList([BareHead(mc.head, d, mc.embed_dim, mc.hidden_dim, mc.dropout)
                           for d in (mc.image_dim, mc.text_dim)])
    log_scale = nn.Parameter(torch.tensor(math.log(1 / mc.init_temperature)))
    opt = torch.optim.AdamW([*heads.parameters(), log_scale], lr=tc.lr, weight_decay=tc.weight_decay)
    steps = len(data.pairs) // tc.batch_size
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / steps))
    img_all, txt_all = torch.from_numpy(data.image_feats), torch.from_numpy(data.text_feats)
    pairs, groups = torch.from_numpy(data.pairs), torch.from_numpy(data.image_groups)
    order = torch.randperm(len(pairs))
    for b in range(steps):
        idx = pairs[order[b * tc.batch_size:(b + 1) * tc.batch_size]]
        g, t = groups[idx[:, 0]], idx[:, 1]
        mask = ((g[:, None] == g[None, :]) | (t[:, None] == t[None, :])) & ~torch.eye(len(idx), dtype=torch.bool)
        loss = bare_loss(heads[0](img_all[idx[:, 0]]), heads[1](txt_all[idx[:, 1]]),
                         log_scale.exp().clamp(max=100.0), mask, tc.loss, tc.margin)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss.item()


def xmr_epoch(data: PairSet, mc: ModelConfig, tc: TrainConfig) -> None:
    """``run_epoch`` with the model/optimizer/scheduler built as ``train_joint_model`` does (``start_run``)."""
    run_epoch(start_run(data, tiny_val(data), mc, tc, out_dir=tempfile.gettempdir()), 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-pairs", type=int, default=20000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--embed-dim", type=int, default=256)
    ap.add_argument("--hidden-dim", type=int, default=1024)
    ap.add_argument("--image-dim", type=int, default=1280)
    ap.add_argument("--text-dim", type=int, default=384)
    ap.add_argument("--heads", nargs="+", default=["mlp", "linear"])
    ap.add_argument("--losses", nargs="+", default=["infonce", "vse++"])
    ap.add_argument("--repeat", type=int, default=3, help="rounds over all slices per configuration")
    ap.add_argument("--slices", type=int, default=4, help="pairs cut into this many one-epoch samples")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# before: {load_note(0)}", flush=True)
    data = make_data(args.n_pairs, args.image_dim, args.text_dim)
    val = tiny_val(data)
    per = len(data.pairs) // args.slices
    parts = [PairSet(data.image_feats, data.text_feats, data.pairs[i * per:(i + 1) * per], data.image_groups)
             for i in range(args.slices)]
    n_timed = (per // args.batch_size) * args.batch_size  # pairs per sample; both drop the ragged batch
    work = tempfile.TemporaryDirectory(prefix="xmr-bench-train-")
    small = make_data(2 * args.batch_size * 4, args.image_dim, args.text_dim)
    for head in args.heads:  # untimed warm-up (allocator, lazy init and imports, first-call costs)
        for loss in args.losses:
            mc = ModelConfig("w", "w", args.image_dim, args.text_dim, embed_dim=args.embed_dim, head=head)
            tc = TrainConfig.from_flat(loss=loss, epochs=1, batch_size=args.batch_size, vse0_warmup_epochs=0)
            bare_epoch(small, mc, tc)
            xmr_epoch(small, mc, tc)
            train_joint_model(small, tiny_val(small), mc, tc, out_dir=Path(work.name) / f"warm-{head}-{loss}")
    rows = []
    for head in args.heads:
        for loss in args.losses:
            mc = ModelConfig("bench-image", "bench-text", args.image_dim, args.text_dim,
                             embed_dim=args.embed_dim, head=head, hidden_dim=args.hidden_dim)
            tc = TrainConfig.from_flat(loss=loss, epochs=1, batch_size=args.batch_size, vse0_warmup_epochs=0,
                                       patience=0)
            runs = [0]

            def full(s: int) -> None:
                runs[0] += 1
                train_joint_model(parts[s], val, mc, tc, out_dir=Path(work.name) / f"{head}-{loss}-{runs[0]}")

            cases = {"bare": lambda s: bare_epoch(parts[s], mc, tc),
                     "xmr run_epoch": lambda s: xmr_epoch(parts[s], mc, tc),
                     "xmr train_joint_model": full}
            times = interleaved(cases, args.repeat, args.slices)
            for name, ts in times.items():
                rows.append([head, loss, name, f"{n_timed / median(ts):,.0f}", f"{median(ts):.3f}",
                             fmt_ratio(paired_ratio(times["bare"], ts)), spread(ts)])
            print(f"done {head}/{loss}: {load_note(torch.get_num_threads())}", flush=True)
    print()
    print(markdown(["head", "loss", "method", "pairs/s", "median s/sample", "ratio vs bare (IQR)", "spread"], rows))
    print(f"\n{args.slices} slices x {n_timed} pairs (one epoch each) x {args.repeat} rounds, batch "
          f"{args.batch_size}, embed {args.embed_dim}, hidden {args.hidden_dim}, dims {args.image_dim}/"
          f"{args.text_dim}, torch threads {torch.get_num_threads()}; pairs/s from the median sample time; ratio = "
          "median over paired samples of bare time / xmr time (xmr speed relative to bare) with its "
          "inter-quartile range; spread = (max - min) / 2 / median of the times.")
    print(f"\ncommand: {command_line()}")
    work.cleanup()


if __name__ == "__main__":
    main()
