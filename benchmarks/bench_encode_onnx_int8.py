"""EfficientNet-Lite0 on ONNX Runtime at int8: do its features stay within cosine 0.9999 of torch's (fp32)?

The issue allows int8 "only where features stay within a stated cosine" (0.9999, the bound the fp32
ONNX encoder keeps). This measures onnxruntime's two quantizations of the graph
``efficientnet-lite0-onnx`` exports (:mod:`xmr.encoders.efficientnet_onnx`):

* dynamic (``quantize_dynamic``: int8 weights, activations quantized per batch at run time), with
  signed and unsigned weights;
* static (``quantize_static``, QDQ format, per-channel int8 weights, activation ranges calibrated on
  ``--n-calibration`` other images: MinMax and percentile 99.999);

against the torch encoder's features of ``--n-images`` generated photo-like 224-px JPEGs (none of them
a calibration image): the min / median cosine per image, and the forward speed in images/s
(batches of 32, ``--threads`` threads, ``--repeat`` interleaved rounds; the fp32 ONNX graph is the
baseline of the ratios). Quantization needs the ``onnx`` package, which xmr does not depend on.

    python benchmarks/bench_encode_onnx_int8.py --n-images 50 --n-calibration 16 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmr.bench.common import command_line, fmt_ratio, interleaved, load_note, markdown, median, paired_ratio
from xmr.bench.images import make_jpegs
from xmr.encoders import create_image_encoder
from xmr.encoders.efficientnet import MEAN, STD

BATCH = 32
BOUND = 0.9999  # the bound: what the fp32 ONNX encoder keeps


def normalised(arrays: list[np.ndarray]) -> np.ndarray:
    """uint8 (S, S, 3) images -> the graph's input, as the ONNX encoder computes it. Shape: (B, 3, S, S)."""
    x = np.stack(arrays).astype(np.float32).transpose(0, 3, 1, 2)
    return np.ascontiguousarray((x / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two feature matrices. Shape: (n, d), (n, d) -> (n,)."""
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def quantized_graphs(fp32: Path, calibration: np.ndarray, out: Path) -> dict[str, Path]:
    """The int8 variants of the graph at ``fp32``: name -> path."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime's base class is untyped
        def __init__(self) -> None:
            self.batches: Iterator[dict[str, np.ndarray]] = iter({"x": calibration[i:i + 1]}
                                                                 for i in range(len(calibration)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    pre = out / "pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    graphs = {}
    for name, weight in (("dynamic, int8 weights", QuantType.QInt8), ("dynamic, uint8 weights", QuantType.QUInt8)):
        path = out / f"{name.replace(' ', '_').replace(',', '')}.onnx"
        quantize_dynamic(str(pre), str(path), weight_type=weight, per_channel=True)
        graphs[name] = path
    for name, method, extra in (("static QDQ, MinMax calibration", CalibrationMethod.MinMax, {}),
                                ("static QDQ, percentile 99.999", CalibrationMethod.Percentile,
                                 {"CalibPercentile": 99.999})):
        path = out / f"static_{method.name}.onnx"
        quantize_static(str(pre), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                        extra_options=extra)
        graphs[name] = path
    return graphs


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-images", type=int, default=50, help="images the cosines are measured on")
    ap.add_argument("--n-calibration", type=int, default=16, help="other images the static ranges come from")
    ap.add_argument("--n-forward", type=int, default=128, help="images in each timed forward pass")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    torch.set_num_threads(args.threads)
    torch_enc = create_image_encoder("efficientnet-lite0")
    onnx_enc = create_image_encoder("efficientnet-lite0-onnx", cache_dir=work / "cache")
    test = [torch_enc.load(p) for p in make_jpegs(work / "test", args.n_images, seed=1)]
    calib = [torch_enc.load(p) for p in make_jpegs(work / "calib", args.n_calibration, seed=2)]
    reference = np.concatenate([torch_enc.encode_batch(test[i:i + BATCH]) for i in range(0, len(test), BATCH)])
    onnx_enc.encode_batch(test[:1])  # exports the fp32 graph
    fp32 = onnx_enc.graph_path  # type: ignore[attr-defined]
    graphs = {"fp32 (efficientnet-lite0-onnx)": fp32, **quantized_graphs(fp32, normalised(calib), work)}
    print(f"# bench_encode_onnx_int8\n\n`{command_line()}`  \ntorch {torch.__version__}; {load_note()}\n")

    x_test = normalised(test)
    forward = normalised((test * (-(-args.n_forward // len(test))))[:args.n_forward])
    sessions = {name: session(path, args.threads) for name, path in graphs.items()}

    def run(name: str) -> Callable[[int], object]:
        return lambda s: [sessions[name].run(None, {"x": forward[i:i + BATCH]}) for i in range(0, len(forward), BATCH)]

    times = interleaved({name: run(name) for name in graphs}, args.repeat)
    base = times["fp32 (efficientnet-lite0-onnx)"]
    rows = []
    for name, path in graphs.items():
        feats = np.concatenate([sessions[name].run(None, {"x": x_test[i:i + BATCH]})[0]
                                for i in range(0, len(x_test), BATCH)])
        cos = cosines(feats, reference)
        rows.append([name, f"{os.path.getsize(path) / 1e6:.1f}", f"{cos.min():.5f}", f"{np.median(cos):.5f}",
                     "yes" if cos.min() >= BOUND else "no", f"{len(forward) / median(times[name]):.1f}",
                     fmt_ratio(paired_ratio(base, times[name]))])
    print(markdown(["graph", "MB", f"min cosine vs torch ({len(test)} images)", "median cosine",
                    f">= {BOUND}", f"images/s ({args.threads} threads)", "speed vs fp32 ONNX (p25-p75)"], rows))
    print(f"\n{load_note()}")


if __name__ == "__main__":
    main()
