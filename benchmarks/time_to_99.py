"""Time-to-99%: wall seconds of training until test accuracy first reaches 99.0%, per engine, side by side.

A short one-cycle recipe (all of the training set, no validation split) is run for the NumPy and the
PyTorch engine, alternating (numpy, torch, numpy, torch, ...). The test accuracy is measured every
``--checks-per-epoch`` of an epoch with the clock stopped; the figure is the training time until the first
check at or above the target. Reports the median per engine, the median per-pair ratio numpy/torch, and
how busy the machine was (other processes' share of CPU time, see shared/MEASURING.md).

    python benchmarks/time_to_99.py                 # 3 repeats per engine
    python benchmarks/time_to_99.py --repeats 1 --engines numpy
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from lenet5.config import ModelConfig, OptimizerConfig, ScheduleConfig
from lenet5.data.datasets import iterate_batches, load_mnist, num_batches
from lenet5.engines import create_engine
from lenet5.training.schedules import Schedule
from lenet5.training.trainer import evaluate_engine
from machine import cpu_snapshot, others_share


def run_once(engine_name: str, data, args) -> dict:
    optimizer = OptimizerConfig(name="sgd", lr=args.lr, momentum=0.9, nesterov=True, l2=args.l2)
    engine = create_engine(engine_name, ModelConfig(), optimizer, seed=args.seed, threads=args.threads, device="cpu")
    steps_per_epoch = num_batches(len(data.train_images), args.batch_size)
    schedule = Schedule(ScheduleConfig(name="onecycle", pct_start=0.25), args.lr, steps_per_epoch, steps_per_epoch * args.epochs)
    check_every = max(1, steps_per_epoch // args.checks_per_epoch)
    trained, step, reached, accuracy = 0.0, 0, None, 0.0
    before = cpu_snapshot()
    for epoch in range(1, args.epochs + 1):
        rng = np.random.default_rng([args.seed, epoch])
        start = time.perf_counter()
        for x, y in iterate_batches(data.train_images, data.train_labels, args.batch_size, rng):
            engine.train_step(x, y, schedule.lr(step))
            step += 1
            if step % check_every == 0 or step == steps_per_epoch * args.epochs:
                trained += time.perf_counter() - start
                accuracy = evaluate_engine(engine, data.test_images, data.test_labels).accuracy
                if accuracy >= args.target and reached is None:
                    reached = trained
                start = time.perf_counter()
            if reached is not None:
                break
        if reached is not None:
            break
    others = others_share(before, cpu_snapshot())
    return {"engine": engine_name, "seconds": reached, "final_accuracy": accuracy, "steps": step, "others": others}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="numpy,torch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--l2", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=2, help="threads for both engines")
    parser.add_argument("--checks-per-epoch", type=int, default=4)
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    engines = args.engines.split(",")
    data = load_mnist()
    print(f"command: python {' '.join(sys.argv)}")
    print(f"recipe: SGD nesterov lr {args.lr} l2 {args.l2}, one-cycle over {args.epochs} epochs, batch {args.batch_size}, "
          f"all 60,000 training images, seed {args.seed}; threads {args.threads} for each engine; "
          f"test accuracy checked {args.checks_per_epoch}x per epoch (clock stopped)")
    results: dict[str, list[dict]] = {e: [] for e in engines}
    for r in range(args.repeats):
        for name in engines:
            out = run_once(name, data, args)
            results[name].append(out)
            secs = f"{out['seconds']:.1f} s" if out["seconds"] is not None else "not reached"
            noisy = "  noisy" if out["others"] > 0.15 else ""
            print(f"  repeat {r + 1} {name:>6}: {secs:>12}  (final test acc {100 * out['final_accuracy']:.2f}%, "
                  f"{out['steps']} steps, others {100 * out['others']:.0f}% CPU){noisy}", flush=True)
    print(f"\n{'engine':>8} {'median s to ' + format(args.target, '.1%'):>18} {'reached':>8}")
    medians = {}
    for name, runs in results.items():
        times = [o["seconds"] for o in runs if o["seconds"] is not None]
        medians[name] = statistics.median(times) if times else None
        shown = f"{medians[name]:.1f}" if medians[name] is not None else "-"
        print(f"{name:>8} {shown:>18} {len(times)}/{len(runs)}")
    if "numpy" in results and "torch" in results:
        ratios = [a["seconds"] / b["seconds"] for a, b in zip(results["numpy"], results["torch"])
                  if a["seconds"] and b["seconds"]]
        if ratios:
            print(f"median per-pair ratio numpy/torch: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
