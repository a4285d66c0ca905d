"""What on-the-fly distortions cost a whole training epoch, made ahead in a second process or in the trainer's thread.

Whole epochs of the real trainer (``Trainer.epochs()``: batches, engine.train_step, and with distortions on,
the process that makes them ahead, data/prefetch.py), wall clock, on the first --images real MNIST training
digits (default 10,000; no validation split), batch 64:

    plain            no distortions
    affine           the default affine distortions (rotation 10, scale 0.1, shear 10, shift 2), made ahead
    elastic          elastic distortions alone (alpha 34, sigma 4), made ahead
    both             affine + elastic, made ahead
    both in-thread   affine + elastic, made in the trainer's thread between steps (what the trainer does
                     where the engine leaves no core idle: one core, or the NumPy engine's default 2 workers
                     on 2 cores; the header says which the trainer picks with the settings given)

Each window is a fresh trainer running --epochs epochs (default 3): the first (engine worker processes and the
distortion process starting, the pipeline filling) is reported apart, the others are the steady state: what
every epoch after the first costs. Rounds alternate the kinds (the order rotating), so each ratio is taken
between windows measured side by side; the figure is the median over rounds of the per-round ratio, with its
range. The speed of this 2-core machine drifts by 10-20% over tens of seconds, and other engineers' processes
come and go: for every window the share of the machine's CPU time used by OTHER processes (/proc/stat busy
time minus this process's and its children's) is printed; windows above 15% are marked noisy. The "cpu"
column is the CPU time of this process and its children (engine workers, distortion process) per epoch.

    python benchmarks/augment_speed.py                  # 8 rounds, ~2.5 min idle
    python benchmarks/augment_speed.py --quick          # 3 rounds
    python benchmarks/augment_speed.py --threads 1      # the NumPy engine on one core
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time

import numpy as np

from lenet5.config import build_config
from lenet5.data.datasets import MNIST, load_mnist
from lenet5.training.trainer import Trainer
from machine import NOISY, cpu_snapshot, others_share

EPOCH = 60_000
AFFINE_OFF = ["augment.rotation=0", "augment.scale=0", "augment.shear=0", "augment.translate=0"]
ELASTIC = ["augment.elastic_alpha=34", "augment.elastic_sigma=4"]
KINDS = {  # name: (config settings, distortions made ahead)
    "plain": ([], False),
    "affine": (["augment.enabled=true"], True),
    "elastic": (["augment.enabled=true", *AFFINE_OFF, *ELASTIC], True),
    "both": (["augment.enabled=true", *ELASTIC], True),
    "both in-thread": (["augment.enabled=true", *ELASTIC], False),
}


def window(kind: str, data: MNIST, args) -> tuple[float, list[float], list[float], float]:
    """One fresh trainer of ``kind``: (first epoch's seconds, later epochs' seconds, their CPU seconds,
    others' CPU share over the later epochs); seconds scaled to an epoch of 60,000 images."""
    sets, ahead = KINDS[kind]
    cfg = build_config(
        sets=[
            f"train.epochs={args.epochs}",
            f"train.batch_size={args.batch_size}",
            f"train.threads={args.threads}",
            f"train.engine={args.engine}",
            "data.val_size=0",
            *sets,
        ]
    )
    trainer = Trainer(cfg, data, log=lambda msg: None, prefetch=ahead)
    scale = EPOCH / len(data.train_images)
    seconds, cpu = [], []
    try:
        epochs = trainer.epochs()
        t0 = time.perf_counter()
        next(epochs)
        first = (time.perf_counter() - t0) * scale
        start = cpu_snapshot()
        for _ in range(args.epochs - 1):
            before, t0 = cpu_snapshot(), time.perf_counter()
            next(epochs)
            seconds.append((time.perf_counter() - t0) * scale)
            cpu.append((cpu_snapshot()[2] - before[2]) * scale)
        share = others_share(start, cpu_snapshot())
        epochs.close()
    finally:
        trainer.engine.close()
    return first, seconds, cpu, share


def default_choice(data: MNIST, args) -> str:
    """Where the trainer left to itself (prefetch=None) makes the distortions with these settings."""
    sets = [f"train.threads={args.threads}", f"train.engine={args.engine}", "data.val_size=0", *KINDS["both"][0]]
    trainer = Trainer(build_config(sets=sets), data, log=lambda msg: None)
    trainer.engine.close()
    return "ahead, in a second process" if trainer.prefetch else "in the training thread (no core left idle)"


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):5.2f}x [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 rounds")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 8)")
    ap.add_argument("--images", type=int, default=10_000, help="training images per epoch (default 10,000)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per window, the first reported apart (default 3)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="engine threads (0: its default, as lenet5 train)")
    ap.add_argument("--engine", default="numpy", choices=["numpy", "torch"])
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error("--epochs must be at least 2: the first epoch is reported apart")
    rounds = args.rounds or (3 if args.quick else 8)

    mnist = load_mnist()
    n = args.images
    data = MNIST(mnist.train_images[:n], mnist.train_labels[:n], mnist.test_images[:100], mnist.test_labels[:100])
    print("command: " + shlex.join([os.path.basename(sys.executable)] + sys.argv))
    print(
        f"numpy {np.__version__}, {os.cpu_count()} CPUs, {args.engine} engine, threads {args.threads or 'default'}, "
        f"batch {args.batch_size}, {n:,} real MNIST images per epoch, {args.epochs} epochs per window, {rounds} rounds"
    )
    window("both", data, argparse.Namespace(**{**vars(args), "epochs": 2}))  # warm-up: imports, page cache
    print(f"lenet5 train with these settings distorts {default_choice(data, args)}")
    kinds = list(KINDS)
    first = {k: [] for k in kinds}
    steady = {k: [] for k in kinds}
    cpu = {k: [] for k in kinds}
    shares = {k: [] for k in kinds}
    for r in range(rounds):
        for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
            f, seconds, cpu_seconds, share = window(kind, data, args)
            first[kind].append(f)
            steady[kind].append(statistics.median(seconds))
            cpu[kind].append(statistics.median(cpu_seconds))
            shares[kind].append(share)
            print(
                f"  round {r + 1} {kind:<15} {steady[kind][-1]:6.2f} s/epoch (first {f:5.2f})  cpu "
                f"{cpu[kind][-1]:5.2f} s  [others {100 * share:3.0f}%{' NOISY' if share > NOISY else ''}]",
                file=sys.stderr,
                flush=True,
            )

    print(f"\n## Seconds per epoch of {EPOCH:,} images, whole process, wall clock (median of {rounds} rounds)")
    print("ratios: median over rounds of (kind / plain) in the same round [min-max]")
    print(
        f"{'kind':<15} {'s/epoch':>8}  {'vs plain':>19}  {'first epoch':>11}  {'vs plain':>19}  "
        f"{'cpu s':>6}  {'others':>13}"
    )
    quiet = [r for r in range(rounds) if all(shares[k][r] <= NOISY for k in kinds)]
    for kind in kinds:
        ratios = [a / b for a, b in zip(steady[kind], steady["plain"])]
        first_ratios = [a / b for a, b in zip(first[kind], first["plain"])]
        noisy = sum(s > NOISY for s in shares[kind])
        flag = f" NOISY x{noisy}" if noisy else ""
        print(
            f"{kind:<15} {statistics.median(steady[kind]):8.2f}  {spread(ratios):>19}  "
            f"{statistics.median(first[kind]):11.2f}  {spread(first_ratios):>19}  "
            f"{statistics.median(cpu[kind]):6.2f}  [{100 * max(shares[kind]):3.0f}%{flag:>8}]"
        )
    print(
        f"\nquiet rounds only (no window above {100 * NOISY:.0f}% of the CPU used by others): {len(quiet)} of {rounds}"
    )
    for kind in kinds[1:] if quiet else []:
        ratios = [steady[kind][r] / steady["plain"][r] for r in quiet]
        print(f"{kind:<15} {spread(ratios):>19} vs plain")


if __name__ == "__main__":
    main()
