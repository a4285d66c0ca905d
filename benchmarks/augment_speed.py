"""What on-the-fly augmentation costs a NumPy-engine training epoch.

In one process, in short alternating windows (round after round, the order of the training windows
rotating so that each pair is measured side by side), on the SAME shuffled real MNIST batches as the trainer
makes them (``iterate_batches``, batch 64 by default):

    train            engine.train_step on plain batches (augmentation off)
    train+affine     the same with the default affine augmentation (rotation 10, scale 0.1, shear 10, shift 2)
    train+elastic    the same with affine + elastic distortions (alpha 34, sigma 4)
    affine           the affine augmentation alone (the uint8 batches through the transform, no training)
    affine+elastic   affine + elastic distortions alone

Each window covers --images images (default 10,000); figures are seconds per 60,000 images. The speed of
this 2-core machine drifts by 10-20% over tens of seconds, so windows are short and many, ratios are per
round (paired windows), then the median. For every window the share of the machine's CPU time used by OTHER
processes (/proc/stat busy time minus this process's getrusage time) is printed; windows above 15% are
marked noisy.

    python benchmarks/augment_speed.py                  # 12 rounds of 10,000 images, ~45 s idle
    python benchmarks/augment_speed.py --quick          # 4 rounds
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time

import numpy as np

from lenet5.config import AugmentConfig, ModelConfig, OptimizerConfig
from lenet5.data.augment import make_augmenter
from lenet5.data.datasets import iterate_batches, load_mnist
from lenet5.engines import create_engine
from machine import NOISY, cpu_snapshot, others_share

EPOCH = 60_000
AFFINE = AugmentConfig(enabled=True)
ELASTIC = AugmentConfig(enabled=True, elastic_alpha=34.0, elastic_sigma=4.0)


def window(kind: str, engine, images, labels, batch_size: int, seed: int, transforms: dict) -> tuple[float, float]:
    """Run one window; return (seconds per 60,000 images, others' CPU share)."""
    rng = np.random.default_rng([seed, 1])
    before, t0 = cpu_snapshot(), time.perf_counter()
    if kind.startswith("train"):
        transform = {
            "train": None,
            "train+affine": transforms["affine"],
            "train+elastic": transforms["affine+elastic"],
        }[kind]
        for x, y in iterate_batches(images, labels, batch_size, rng, transform=transform):
            engine.train_step(x, y, 0.01)
    else:  # the transform alone, on the batches iterate_batches would hand it
        transform = transforms[kind]
        order = rng.permutation(len(images))
        seeds = np.random.default_rng(seed).integers(2**63, size=-(-len(images) // batch_size))
        for b, start in enumerate(range(0, len(images), batch_size)):
            transform(images[order[start : start + batch_size]], np.random.default_rng([int(seeds[b]), b]))
    elapsed = time.perf_counter() - t0
    return elapsed / len(images) * EPOCH, others_share(before, cpu_snapshot())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4 rounds")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--images", type=int, default=10_000, help="images per window")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="engine worker threads (0: its default, as lenet5 train)")
    args = ap.parse_args()
    rounds = args.rounds or (4 if args.quick else 12)
    n = args.images

    from threadpoolctl import threadpool_info

    mnist = load_mnist()
    images, labels = mnist.train_images[:n], mnist.train_labels[:n]
    engine = create_engine("numpy", ModelConfig(), OptimizerConfig(), seed=0, threads=args.threads)
    transforms = {"affine": make_augmenter(AFFINE), "affine+elastic": make_augmenter(ELASTIC)}
    blas = ",".join(f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info() if p["user_api"] == "blas")
    print("command: " + shlex.join([os.path.basename(sys.executable)] + sys.argv))
    print(
        f"numpy {np.__version__}, {os.cpu_count()} CPUs, batch {args.batch_size}, {n:,} real MNIST images per "
        f"window, {rounds} rounds; engine threads {getattr(engine, 'threads', args.threads)} (BLAS 1 inside the "
        f"engine), BLAS outside {blas} (the elastic smoothing limits itself to 1)"
    )

    training = ["train", "train+affine", "train+elastic"]
    kinds = training + ["affine", "affine+elastic"]
    window("train", engine, images[:2000], labels[:2000], args.batch_size, 99, transforms)  # warm-up
    window("affine+elastic", engine, images[:2000], labels[:2000], args.batch_size, 99, transforms)
    times = {k: [] for k in kinds}
    shares = {k: [] for k in kinds}
    for r in range(rounds):
        alone = kinds[len(training) :]
        for kind in training[r % len(training) :] + training[: r % len(training)] + alone:
            seconds, share = window(kind, engine, images, labels, args.batch_size, r, transforms)
            times[kind].append(seconds)
            shares[kind].append(share)
            print(
                f"  round {r + 1} {kind:<15} {seconds:6.2f} s/epoch  [others {100 * share:3.0f}%"
                f"{' NOISY' if share > NOISY else ''}]",
                file=sys.stderr,
                flush=True,
            )

    print(f"\n## Seconds per epoch of {EPOCH:,} images (median of {rounds}; [max share of CPU used by others])")
    print(f"{'window':<15} {'s/epoch':>8}  {'others':>12}  vs train (median of per-round ratios)")
    for kind in kinds:
        ratio = statistics.median(a / b for a, b in zip(times[kind], times["train"]))
        noisy = sum(s > NOISY for s in shares[kind])
        flag = f" NOISY x{noisy}" if noisy else ""
        print(
            f"{kind:<15} {statistics.median(times[kind]):8.2f}  [{100 * max(shares[kind]):3.0f}%{flag:>8}]  "
            f"{ratio:5.2f}x"
        )
    close = getattr(engine, "close", None)
    if close:
        close()


if __name__ == "__main__":
    main()
