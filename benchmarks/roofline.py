"""The limit in view: FLOPs of a training epoch, the machine's sgemm peak, and each engine's share of it.

1. FLOPs per layer of the modern LeNet-5, counted from lenet5.models (forward and backward, per image).
   Conv and dense layers count 2 FLOPs per multiply-add (the matmuls); backward = weight gradient + input
   gradient, except conv1's input gradient, which the NumPy engine skips (nobody needs the image's gradient).
   Element-wise work (bias add, ReLU, max-pool comparisons and their backward, bias-gradient sums) is counted
   separately, 1 FLOP per element touched, and is NOT in the matmul totals: it is memory-bound, not compute.
2. The single-precision matmul peak: one large float32 matmul (2048^3), best of several, with 1 and 2 BLAS
   threads, through NumPy (OpenBLAS) and through torch (MKL).
3. Training steps (batch 64, real MNIST) of each engine with 1 and 2 threads, alternating windows, medians;
   achieved GFLOP/s = matmul FLOPs / time, and its share of the sgemm peak with as many threads.
4. A per-layer time profile of the NumPy engine (threads=1): every layer's forward/backward is wrapped with
   perf_counter accumulation here, in the benchmark (the library is untouched).
5. Inside the convolutions: the steps of layers.Conv2D (im2col copy, the three matmuls, the input gradient's
   shifted copies and row adds) replayed one by one on a piece of 32 images, to see whether matmuls or data
   movement cost.

    python benchmarks/roofline.py            # ~1 minute
    python benchmarks/roofline.py --quick    # shorter windows, ~20 s
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time

import numpy as np

from lenet5 import models
from lenet5.config import ModelConfig, OptimizerConfig
from lenet5.data.datasets import load_mnist, normalize
from lenet5.engines import create_engine
from machine import NOISY, cpu_snapshot, others_share

TRAIN_IMAGES = 55_000  # an epoch: 60,000 training images minus the 5,000 held out for validation
BATCH = 64


# --- 1. FLOPs -----------------------------------------------------------------------------------------------


def count_flops(model: str = "modern") -> list[dict]:
    """Per layer, for one image: matmul FLOPs forward, backward (weight grad, input grad), element-wise FLOPs."""
    c, h, w = models.INPUT_SHAPE
    rows = []
    for i, spec in enumerate(models.architecture(model).layers):
        row = {"layer": "", "out": None, "fwd": 0, "bwd_w": 0, "bwd_x": 0, "elem_fwd": 0, "elem_bwd": 0}
        if isinstance(spec, models.Conv):
            h, w = h + 2 * spec.padding - spec.kernel + 1, w + 2 * spec.padding - spec.kernel + 1
            in_per_out = spec.table.sum(axis=1).mean() if spec.table is not None else spec.in_channels
            macs = int(spec.out_channels * h * w * in_per_out * spec.kernel**2)
            c = spec.out_channels
            row.update(
                layer=f"{spec.name} conv {spec.kernel}x{spec.kernel}",
                fwd=2 * macs,
                bwd_w=2 * macs,
                bwd_x=0 if i == 0 else 2 * macs,
                elem_fwd=c * h * w,
                elem_bwd=c * h * w,
            )  # bias add / sum
        elif isinstance(spec, models.Dense):
            macs = spec.n_in * spec.n_out
            c, h, w = spec.n_out, 1, 1
            row.update(
                layer=f"{spec.name} dense",
                fwd=2 * macs,
                bwd_w=2 * macs,
                bwd_x=2 * macs,
                elem_fwd=spec.n_out,
                elem_bwd=spec.n_out,
            )
        elif isinstance(spec, models.Pool):
            n_in = c * h * w
            h, w = h // spec.size, w // spec.size
            row.update(layer=f"{spec.kind}pool {spec.size}", elem_fwd=n_in, elem_bwd=n_in)  # compare / scatter
        elif isinstance(spec, models.Act):
            row.update(layer=spec.kind, elem_fwd=c * h * w, elem_bwd=c * h * w)
        else:
            c, h, w = c * h * w, 1, 1
            row.update(layer="flatten")
        row["out"] = (c, h, w) if h > 1 else (c,)
        rows.append(row)
    return rows


def print_flops(rows) -> tuple[float, float]:
    print("\n## FLOPs per image, modern LeNet-5 (2 x multiply-adds of the matmuls; element-wise separately)\n")
    print("| layer | output | forward | backward: weight grad | backward: input grad | element-wise fwd+bwd |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        cell = lambda v: f"{v:,}" if v else "-"  # noqa: E731
        print(
            f"| {r['layer']} | {'x'.join(map(str, r['out']))} | {cell(r['fwd'])} | {cell(r['bwd_w'])} | "
            f"{cell(r['bwd_x'])}{' (skipped)' if r['layer'].startswith('conv1') else ''} | "
            f"{cell(r['elem_fwd'] + r['elem_bwd'])} |"
        )
    fwd = sum(r["fwd"] for r in rows)
    bwd = sum(r["bwd_w"] + r["bwd_x"] for r in rows)
    elem = sum(r["elem_fwd"] + r["elem_bwd"] for r in rows)
    print(
        f"| **total** | | **{fwd:,}** | **{sum(r['bwd_w'] for r in rows):,}** | "
        f"**{sum(r['bwd_x'] for r in rows):,}** | **{elem:,}** |"
    )
    print(
        f"\nper image: forward {fwd / 1e6:.3f} MFLOP, backward {bwd / 1e6:.3f} MFLOP, "
        f"train step {(fwd + bwd) / 1e6:.3f} MFLOP (+ {elem / 1e6:.3f} M element-wise, "
        f"{100 * elem / (fwd + bwd):.0f}% more)"
    )
    print(
        f"per epoch of {TRAIN_IMAGES:,} images: {(fwd + bwd) * TRAIN_IMAGES / 1e9:.1f} GFLOP "
        f"({(fwd + bwd) * 60_000 / 1e9:.1f} GFLOP for all 60,000)"
    )
    return fwd, bwd


# --- 2. sgemm peak ------------------------------------------------------------------------------------------


def sgemm_peak(threads: int, n: int, repeats: int) -> dict[str, tuple[float, float]]:
    """{'numpy (OpenBLAS)': (GFLOP/s best, others' share), 'torch (MKL)': ...} for one n x n @ n x n."""
    import torch
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty_like(a)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    to = torch.empty_like(ta)
    flops = 2 * n**3
    results = {}
    with threadpool_limits(limits=threads, user_api="blas"):
        torch.set_num_threads(threads)
        for name, mm in (
            ("numpy (OpenBLAS)", lambda: np.matmul(a, b, out=out)),
            ("torch (MKL)", lambda: torch.mm(ta, tb, out=to)),
        ):
            mm()  # warm-up
            before, best = cpu_snapshot(), float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                mm()
                best = min(best, time.perf_counter() - t0)
            results[name] = (flops / best / 1e9, others_share(before, cpu_snapshot()))
    return results


# --- 3. engines ---------------------------------------------------------------------------------------------


def engine_windows(batches, rounds: int, steps: int) -> dict[tuple[str, int], list[tuple[float, float]]]:
    """{(engine, threads): [(seconds per step, others' share) per window]}; the windows alternate."""
    import torch

    engines = {
        (name, t): create_engine(name, ModelConfig(), OptimizerConfig(), seed=0, threads=t, device="cpu")
        for name in ("numpy", "torch")
        for t in (1, 2)
    }
    times: dict = {key: [] for key in engines}
    for r in range(rounds + 1):  # round 0: warm-up, not kept
        for (name, t), eng in engines.items():
            if name == "torch":
                torch.set_num_threads(t)
            before, t0 = cpu_snapshot(), time.perf_counter()
            for i in range(steps if r else 5):
                x, y = batches[i % len(batches)]
                eng.train_step(x, y, 0.01)
            if r:
                times[(name, t)].append(((time.perf_counter() - t0) / steps, others_share(before, cpu_snapshot())))
    return times


# --- 4. per-layer profile -----------------------------------------------------------------------------------


def layer_profile(batches, steps: int):
    """NumPy engine, threads=1: [(layer name, forward s, backward s)] summed over `steps` steps, and the total s."""
    eng = create_engine("numpy", ModelConfig(), OptimizerConfig(), seed=0, threads=1)
    acc = []
    for prefix, layer in eng.net.layers:
        name = prefix or type(layer).__name__.replace("2D", "").lower()
        slot = [name, 0.0, 0.0]
        acc.append(slot)

        def timed(fn, k, slot=slot):
            def wrapper(*args, **kwargs):
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    slot[k] += time.perf_counter() - t0

            return wrapper

        layer.forward = timed(layer.forward, 1)  # instance attributes: the class stays as it is
        layer.backward = timed(layer.backward, 2)
    for x, y in batches[:5]:
        eng.train_step(x, y, 0.01)
    for slot in acc:
        slot[1] = slot[2] = 0.0
    before, t0 = cpu_snapshot(), time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        eng.train_step(x, y, 0.01)
    return acc, time.perf_counter() - t0, others_share(before, cpu_snapshot())


# --- 5. inside the convolutions ----------------------------------------------------------------------------


def conv_parts(repeats: int) -> None:
    """The steps of layers.Conv2D's forward/backward replayed alone on one piece of 32 images (what one NumPy
    thread works on), ms per step of batch 64 (2 pieces), warm cache; GFLOP/s for the matmuls."""
    from lenet5.blas import single_threaded_blas
    from lenet5.engines.numpy import layers
    from lenet5.workspace import Workspace

    rng, n, k = np.random.default_rng(0), 32, 5
    print(
        f"\n## Inside the NumPy engine's convolutions: each step of Conv2D alone (the library's own helpers), "
        f"pieces of {n}, ms per step of batch 64 [GFLOP/s]\n"
    )
    print(
        "| layer | im2col copy | forward matmul | weight-grad matmul | input grad: shifted copies of dy "
        "| input-grad matmul | input grad: row adds |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, c, f, h, p in (("conv1", 1, 6, 28, 2), ("conv2", 6, 16, 14, 0)):
        ho, kk = h + 2 * p - k + 1, c * k * k
        wc = ho + k - 1  # input columns the windows cover (stride 1)
        x = rng.standard_normal((c, h, h, n), dtype=np.float32)
        padded = np.zeros((c, h + 2 * p, h + 2 * p, n), np.float32)
        cols = np.ones((kk + 1, ho * ho * n), np.float32)  # + the ones row that carries the bias
        w = rng.standard_normal((f, kk + 1), dtype=np.float32)  # [weight | bias]
        out, dy = np.empty((f, ho * ho * n), np.float32), rng.standard_normal((f, ho * ho * n), dtype=np.float32)
        dw, dx = np.empty_like(w), np.zeros_like(padded)
        spread = np.zeros((f, ho, wc + k - 1, n), np.float32)
        shifted = np.empty((f, k, ho, wc, n), np.float32)
        w_rows = rng.standard_normal((c * k, f * k), dtype=np.float32)
        rows = np.empty((c * k, ho * wc * n), np.float32)
        ws = Workspace()

        def im2col():
            xc = x
            if p:
                padded[:, p : p + h, p : p + h] = x
                xc = padded
            np.copyto(cols[:kk].reshape(c, k, k, ho, ho, n), layers._windows(ws, xc, k, 1))

        def shift_copies():
            spread[:, :, k - 1 : k - 1 + ho] = dy.reshape(f, ho, ho, n)
            for j in range(k):
                shifted[:, j] = spread[:, :, k - 1 - j : k - 1 - j + wc]

        def row_adds():
            dx.fill(0)
            r = rows.reshape(c, k, ho, wc, n)
            for i in range(k):
                dx[:, i : i + ho, :wc] += r[:, i]

        parts = [
            (im2col, 0),
            (lambda: layers._matmul_by_columns(w, cols, out), 1),
            (lambda: layers._weight_gradient(dy, cols, dw, ws), 1),
            (shift_copies, 0),
            (lambda: np.matmul(w_rows, shifted.reshape(f * k, -1), out=rows), 1),
            (row_adds, 0),
        ]
        cells = []
        with single_threaded_blas():
            for fn, is_mm in parts:
                fn()
                t0 = time.perf_counter()
                for _ in range(repeats):
                    fn()
                ms = (time.perf_counter() - t0) / repeats * 1e3 * (BATCH // n)
                flop = 2 * f * c * k * k * (ho * (ho + k - 1) if fn is parts[4][0] else ho * ho) * BATCH
                gf = f" [{flop / ms / 1e6:.0f}]" if is_mm else ""
                cells.append(f"{ms:.3f}{gf}")
        if name == "conv1":
            cells[3:] = [cell + " (skipped)" for cell in cells[3:]]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows")
    args = parser.parse_args()
    rounds, steps, prof_steps = (3, 100, 300) if args.quick else (5, 200, 1000)

    print("command: " + shlex.join([os.path.basename(sys.executable)] + sys.argv))
    import torch

    print(
        f"numpy {np.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )

    rows = count_flops()
    fwd, bwd = print_flops(rows)
    per_step = (fwd + bwd) * BATCH

    print(
        f"\n## sgemm peak: float32 2048x2048 @ 2048x2048, best of {5 if args.quick else 10}, GFLOP/s "
        "[others' CPU share]\n"
    )
    print("| BLAS | 1 thread | 2 threads |")
    print("| --- | ---: | ---: |")
    peaks = {t: sgemm_peak(t, 2048, 5 if args.quick else 10) for t in (1, 2)}
    for name in peaks[1]:
        print(
            f"| {name} | "
            + " | ".join(f"{peaks[t][name][0]:.1f} [{100 * peaks[t][name][1]:.0f}%]" for t in (1, 2))
            + " |"
        )
    peak = {t: max(v[0] for v in peaks[t].values()) for t in (1, 2)}

    mnist = load_mnist()
    xs = normalize(mnist.train_images[:8192])
    ys = mnist.train_labels[:8192].astype(np.int64)
    batches = [(xs[i : i + BATCH], ys[i : i + BATCH]) for i in range(0, len(xs) - BATCH + 1, BATCH)]

    times = engine_windows(batches, rounds, steps)
    print(
        f"\n## Training steps, batch {BATCH}: median of {rounds} alternating windows of {steps} steps; "
        f"{per_step / 1e6:.1f} MFLOP (matmuls) per step\n"
    )
    print(
        "| engine | threads | ms per step | s per epoch (55,000) | GFLOP/s | share of sgemm peak "
        "(same threads) | others' CPU share (max) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (name, t), windows in times.items():
        s = statistics.median(w[0] for w in windows)
        worst = max(w[1] for w in windows)
        gflops = per_step / s / 1e9
        noisy = " NOISY" if worst > NOISY else ""
        print(
            f"| {name} | {t} | {1e3 * s:.2f} | {s * TRAIN_IMAGES / BATCH:.2f} | {gflops:.1f} | "
            f"{100 * gflops / peak[t]:.1f}% | {100 * worst:.0f}%{noisy} |"
        )

    acc, total, share = layer_profile(batches, prof_steps)
    by_name = {r["layer"].split()[0]: r for r in rows if r["fwd"]}
    print(
        f"\n## NumPy engine, threads=1, per-layer time: {prof_steps} steps of batch {BATCH}, ms per step "
        f"[others' CPU share {100 * share:.0f}%{' NOISY' if share > NOISY else ''}]\n"
    )
    print("| layer | forward ms | backward ms | share of step | GFLOP/s (fwd+bwd matmuls) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    in_layers = 0.0
    for name, f_s, b_s in acc:
        in_layers += f_s + b_s
        r = by_name.get(name)
        gf = f"{(r['fwd'] + r['bwd_w'] + r['bwd_x']) * BATCH * prof_steps / (f_s + b_s) / 1e9:.1f}" if r else "-"
        print(
            f"| {name} | {1e3 * f_s / prof_steps:.3f} | {1e3 * b_s / prof_steps:.3f} | "
            f"{100 * (f_s + b_s) / total:.1f}% | {gf} |"
        )
    rest = total - in_layers
    print(f"| outside the layers (loss, optimizer, gradient sum, Python) | | | {100 * rest / total:.1f}% | - |")
    print(f"| **step** | | | **{1e3 * total / prof_steps:.3f} ms** | {per_step * prof_steps / total / 1e9:.1f} |")

    conv_parts(500 if args.quick else 2000)


if __name__ == "__main__":
    main()
