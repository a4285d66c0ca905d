"""Inference speed on the 10,000 MNIST test images: PyTorch eager vs the NumPy engine vs onnxruntime.

    python benchmarks/inference_speed.py [--model modern] [--threads 1,2] [--reps 5] [--min-seconds 1.5]

All three run the same weights (the NumPy engine's seeded initialisation; speed does not depend on the values)
on the same normalized float32 batches of --batch-size images. For each thread count the contenders take turns
(the order rotates every repetition); each window repeats full passes over the 10,000 images for at least
--min-seconds. Reported: median images/s with the range, the median of the per-repetition ratios, and the
share of CPU time other processes took during the windows (from /proc/stat minus our own rusage); a window
where others took more than 15% is counted as noisy (see MEASURING.md).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["modern", "classic"], default="modern")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts to compare (default 1,2)")
    p.add_argument("--reps", type=int, default=5, help="timed windows per contender and thread count")
    p.add_argument("--min-seconds", type=float, default=1.5, help="minimum length of one timed window")
    p.add_argument("--batch-size", type=int, default=1000, help="images per forward call")
    return p.parse_args()


ARGS = parse_args()
# Pin BLAS/OpenMP pools before NumPy or torch is imported; each contender then sets its own thread count.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from lenet5.config import ModelConfig, OptimizerConfig  # noqa: E402
from lenet5.data.datasets import load_mnist, normalize  # noqa: E402
from lenet5.engines.numpy.engine import NumpyEngine  # noqa: E402
from machine import NOISY, cpu_jiffies, own_jiffies  # noqa: E402


def timed_window(fn, x: np.ndarray, batch: int, min_seconds: float) -> tuple[float, float]:
    """Full passes over x until min_seconds have gone by -> (images/s, share of CPU others took)."""
    busy0, total0 = cpu_jiffies()
    own0 = own_jiffies()
    start = time.perf_counter()
    passes = 0
    while True:
        for i in range(0, len(x), batch):
            fn(x[i : i + batch])
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            break
    busy1, total1 = cpu_jiffies()
    others = max(0.0, (busy1 - busy0) - (own_jiffies() - own0)) / max(1, total1 - total0)
    return passes * len(x) / elapsed, others


def contenders(state: dict, model_name: str, threads: int, onnx_path: Path) -> dict:
    import torch

    from lenet5.engines.torch.model import LeNet5
    from lenet5.inference import OnnxModel

    torch.set_num_threads(threads)
    module = LeNet5(model_name).eval()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})

    def torch_eager(xb: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(xb)).numpy()

    engine = NumpyEngine(ModelConfig(name=model_name), OptimizerConfig(), seed=0, threads=threads)
    engine.load_state_dict(state)
    ort_model = OnnxModel(onnx_path, threads=threads)
    return {"torch eager": torch_eager, "numpy engine": engine.logits, "onnxruntime": ort_model.logits}


def main() -> None:
    import onnxruntime
    import torch

    from lenet5.export import export_onnx

    thread_counts = [int(t) for t in ARGS.threads.split(",")]
    x = normalize(load_mnist().test_images)
    state = NumpyEngine(ModelConfig(name=ARGS.model), OptimizerConfig(), seed=0, threads=1).state_dict()
    tmp = tempfile.TemporaryDirectory()
    onnx_path = export_onnx(state, ARGS.model, Path(tmp.name) / "model.onnx")

    print(f"command: {shlex.join(['python', *sys.argv])}")
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; {os.cpu_count()} CPUs; "
        f"OMP/OPENBLAS/MKL_NUM_THREADS={os.environ['OMP_NUM_THREADS']}/{os.environ['OPENBLAS_NUM_THREADS']}/"
        f"{os.environ['MKL_NUM_THREADS']}"
    )
    print(
        f"model {ARGS.model}, {len(x)} MNIST test images, batch {ARGS.batch_size}, {ARGS.reps} windows of "
        f">= {ARGS.min_seconds:g} s per contender and thread count, alternating\n"
    )
    for threads in thread_counts:
        runs = contenders(state, ARGS.model, threads, onnx_path)
        names = list(runs)
        ref = runs["numpy engine"](x[:500])
        for name, fn in runs.items():  # warm-up pass, and check they agree
            fn(x[: ARGS.batch_size])
            diff = float(np.abs(fn(x[:500]) - ref).max())
            assert diff < 1e-3, f"{name} disagrees with the NumPy engine by {diff}"
        speed = {n: [] for n in names}
        others = {n: [] for n in names}
        for rep in range(ARGS.reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                ips, busy = timed_window(runs[name], x, ARGS.batch_size, ARGS.min_seconds)
                speed[name].append(ips)
                others[name].append(busy)
        print(f"threads = {threads} (torch.set_num_threads, NumpyEngine(threads=), ORT intra_op_num_threads)")
        print(f"  {'contender':<14}{'median img/s':>14}{'range':>22}{'others busy':>13}{'noisy':>7}")
        for n in names:
            lo, hi = min(speed[n]), max(speed[n])
            noisy = sum(o > NOISY for o in others[n])
            print(
                f"  {n:<14}{statistics.median(speed[n]):>14,.0f}{f'{lo:,.0f} - {hi:,.0f}':>22}"
                f"{statistics.median(others[n]):>12.0%}{f'{noisy}/{ARGS.reps}':>7}"
            )
        for a, b in [("torch eager", "numpy engine"), ("onnxruntime", "numpy engine"), ("onnxruntime", "torch eager")]:
            ratios = [sa / sb for sa, sb in zip(speed[a], speed[b])]
            print(f"  {a} / {b}: {statistics.median(ratios):.2f}x (median of per-repetition ratios)")
        print()
    tmp.cleanup()


if __name__ == "__main__":
    main()
