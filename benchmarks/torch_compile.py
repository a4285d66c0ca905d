"""torch.compile and channels-last on CPU, measured on the torch engine's LeNet5('modern') training step.

Variants, same initial weights, same real MNIST batches (batch 64), SGD as the default OptimizerConfig:
eager; torch.compile(model) (default mode: Inductor, forward and backward compiled, the optimizer eager);
channels_last (model and input in torch.channels_last memory format, eager); compile + channels_last.
Each thread count runs in its own process (Inductor's C++ kernels fix their OpenMP thread count when they are
compiled) with an empty Inductor cache, so the compile time is a cold one: the wall time of the first 3 steps,
less 3 eager steps. Then the variants alternate in timed windows; medians, and the median of the per-round
ratios to eager.

    python benchmarks/torch_compile.py            # threads 1 and 2, ~2 minutes with compiling
    python benchmarks/torch_compile.py --quick
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from machine import NOISY, cpu_snapshot, others_share

BATCH = 64
VARIANTS = ("eager", "compile", "channels_last", "compile+channels_last")


def run_one(threads: int, rounds: int, steps: int) -> None:
    import torch
    import torch.nn.functional as F

    from lenet5.config import OptimizerConfig
    from lenet5.data.datasets import load_mnist, normalize
    from lenet5.engines.torch.model import LeNet5

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    mnist = load_mnist()
    xs = normalize(mnist.train_images[:4096])
    ys = mnist.train_labels[:4096].astype(np.int64)
    batches = [
        (torch.from_numpy(np.ascontiguousarray(xs[i : i + BATCH])), torch.from_numpy(ys[i : i + BATCH]))
        for i in range(0, len(xs) - BATCH + 1, BATCH)
    ]
    cfg = OptimizerConfig()
    reference = LeNet5("modern").state_dict()

    steps_fns, errors = {}, {}
    for variant in VARIANTS:
        model = LeNet5("modern")
        model.load_state_dict(reference)
        cl = "channels_last" in variant
        if cl:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.l2
        )
        fwd = torch.compile(model) if "compile" in variant else model
        vb = [(x.contiguous(memory_format=torch.channels_last) if cl else x, y) for x, y in batches]

        def step(i, fwd=fwd, opt=opt, vb=vb):
            x, y = vb[i % len(vb)]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(fwd(x), y)
            loss.backward()
            opt.step()
            return loss

        t0 = time.perf_counter()
        try:
            for i in range(3):
                step(i).item()
        except Exception as exc:  # no C++ compiler, an Inductor bug...
            errors[variant] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
            continue
        first = time.perf_counter() - t0
        steps_fns[variant] = (step, first)

    times = {v: [] for v in steps_fns}
    shares = {v: [] for v in steps_fns}
    for r in range(rounds + 1):  # round 0: warm-up
        for v, (step, _) in steps_fns.items():
            before, t0 = cpu_snapshot(), time.perf_counter()
            for i in range(steps if r else 20):
                step(i)
            torch.tensor(0.0).item()
            if r:
                times[v].append((time.perf_counter() - t0) / steps)
                shares[v].append(others_share(before, cpu_snapshot()))

    eager_step = statistics.median(times["eager"])
    for v in VARIANTS:
        if v in errors:
            print(f"| {v} | {threads} | failed: {errors[v]} | | | |")
            continue
        med = statistics.median(times[v])
        ratio = statistics.median(a / b for a, b in zip(times[v], times["eager"]))
        first = steps_fns[v][1]
        compile_s = f"{first - 3 * eager_step:.1f} s" if "compile" in v else "-"
        worst = max(shares[v])
        print(
            f"| {v} | {threads} | {1e3 * med:.2f} | {ratio:.2f} | {compile_s} | "
            f"{100 * worst:.0f}%{' NOISY' if worst > NOISY else ''} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 100 steps instead of 7 of 200")
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)  # one child process
    args = parser.parse_args()
    rounds, steps = (3, 100) if args.quick else (7, 200)
    if args.threads:
        run_one(args.threads, rounds, steps)
        return

    import torch

    print("command: " + shlex.join([os.path.basename(sys.executable)] + sys.argv))
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(
        f"\n## torch LeNet5('modern') train step, batch {BATCH}: median of {rounds} alternating windows of "
        f"{steps} steps\n"
    )
    print(
        "| variant | threads | ms per step | ratio to eager (median of rounds) | compile time (cold) | "
        "others' CPU share (max) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |", flush=True)
    for threads in (1, 2):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, OMP_NUM_THREADS=str(threads))
            cmd = [sys.executable, __file__, "--threads", str(threads)] + (["--quick"] if args.quick else [])
            subprocess.run(cmd, env=env, check=True)


if __name__ == "__main__":
    main()
