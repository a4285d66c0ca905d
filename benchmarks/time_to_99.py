"""Time-to-99%: wall seconds of training until test accuracy first reaches 99.0%, per engine, side by side.

A short one-cycle recipe (all of the training set, no validation split) is run for the NumPy and the
PyTorch engine, alternating (numpy, torch, numpy, torch, ...). The test accuracy is measured every
``--checks-per-epoch`` of an epoch with the clock stopped; the figure is the training time until the first
check at or above the target. The two engines compute the same steps only up to float rounding, so after a
few hundred steps their trajectories differ and either may cross 99% a check earlier: hence several seeds
(each engine runs every seed; a repeat of a seed gives the same steps). Reports per engine the median time,
the median per-pair ratio numpy/torch, the same ratio per training step (which the crossing point does not
sway), and how busy the machine was (other processes' share of CPU time, see shared/MEASURING.md).

    python benchmarks/time_to_99.py                          # seeds 0 1 2, once each (~3 minutes)
    python benchmarks/time_to_99.py --seeds 0 --repeats 2 --engines numpy
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


def run_once(engine_name: str, data, args, seed: int) -> dict:
    optimizer = OptimizerConfig(name="sgd", lr=args.lr, momentum=0.9, nesterov=True, l2=args.l2)
    engine = create_engine(engine_name, ModelConfig(), optimizer, seed=seed, threads=args.threads, device="cpu")
    steps_per_epoch = num_batches(len(data.train_images), args.batch_size)
    schedule = Schedule(
        ScheduleConfig(name="onecycle", pct_start=0.25), args.lr, steps_per_epoch, steps_per_epoch * args.epochs
    )
    check_every = max(1, steps_per_epoch // args.checks_per_epoch)
    trained, step, reached, accuracy = 0.0, 0, None, 0.0
    before = cpu_snapshot()
    for epoch in range(1, args.epochs + 1):
        rng = np.random.default_rng([seed, epoch])
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
    return {
        "engine": engine_name,
        "seconds": reached,
        "final_accuracy": accuracy,
        "steps": step,
        "others": others,
        "step_seconds": (reached if reached is not None else trained) / step,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="numpy,torch")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each seed per engine")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--l2", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=2, help="threads for both engines")
    parser.add_argument("--checks-per-epoch", type=int, default=10)
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    engines = args.engines.split(",")
    data = load_mnist()
    print(f"command: python {' '.join(sys.argv)}")
    print(
        f"recipe: SGD nesterov lr {args.lr} l2 {args.l2}, one-cycle over {args.epochs} epochs, "
        f"batch {args.batch_size}, "
        f"all 60,000 training images, seeds {' '.join(map(str, args.seeds))}; "
        f"threads {args.threads} for each engine; "
        f"test accuracy checked {args.checks_per_epoch}x per epoch (clock stopped)"
    )
    results: dict[str, list[dict]] = {e: [] for e in engines}
    for seed in args.seeds:
        for r in range(args.repeats):
            for name in engines:
                out = run_once(name, data, args, seed)
                results[name].append(out)
                secs = f"{out['seconds']:.1f} s" if out["seconds"] is not None else "not reached"
                noisy = "  noisy" if out["others"] > 0.15 else ""
                print(
                    f"  seed {seed} repeat {r + 1} {name:>6}: {secs:>12}  (final test acc "
                    f"{100 * out['final_accuracy']:.2f}%, {out['steps']} steps, {1e3 * out['step_seconds']:.2f} ms "
                    f"per step, others {100 * out['others']:.0f}% CPU){noisy}",
                    flush=True,
                )
    print(f"\n{'engine':>8} {'median s to ' + format(args.target, '.1%'):>18} {'reached':>8} {'ms per step':>12}")
    for name, runs in results.items():
        times = [o["seconds"] for o in runs if o["seconds"] is not None]
        shown = f"{statistics.median(times):.1f}" if times else "-"
        per_step = statistics.median(o["step_seconds"] for o in runs)
        print(f"{name:>8} {shown:>18} {len(times)}/{len(runs)} {1e3 * per_step:>12.2f}")
    if "numpy" in results and "torch" in results:
        pairs = list(zip(results["numpy"], results["torch"]))
        ratios = [a["seconds"] / b["seconds"] for a, b in pairs if a["seconds"] and b["seconds"]]
        if ratios:
            print(
                f"median per-pair ratio numpy/torch: {statistics.median(ratios):.2f} "
                f"(each: {', '.join(f'{r:.2f}' for r in ratios)})"
            )
        step_ratios = [a["step_seconds"] / b["step_seconds"] for a, b in pairs]
        print(f"median per-pair ratio of the time per step: {statistics.median(step_ratios):.2f}")


if __name__ == "__main__":
    main()
