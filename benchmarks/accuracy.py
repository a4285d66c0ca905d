"""Test accuracy of a training recipe over several seeds: mean, spread and time, one command.

Each seed is a normal `lenet5 train --json` run (extra arguments are passed through), so every number
can be repeated with `lenet5 train --seed N ...`. Example:

    python benchmarks/accuracy.py --seeds 0 1 2                          # the default config.yaml
    python benchmarks/accuracy.py --seeds 0 1 2 -- --set model.name=classic

Next to the training time it prints the share of CPU time other processes took meanwhile
(shared/MEASURING.md); accuracy does not depend on it, the time does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass

from machine import NOISY, children_jiffies, cpu_jiffies


@dataclass
class RecipeResult:
    """Test accuracies (%) and training seconds of one recipe, one entry per seed."""

    seeds: list[int]
    accuracy: list[float]
    train_seconds: list[float]
    others_share: float  # share of all CPU time taken by other processes during the runs

    @property
    def mean_error(self) -> float:
        return 100.0 - statistics.mean(self.accuracy)

    @property
    def spread(self) -> float:
        """Sample standard deviation over seeds (of accuracy, equally of error)."""
        return statistics.stdev(self.accuracy) if len(self.accuracy) > 1 else 0.0


def run_recipe(train_args: list[str], seeds: list[int], out: str) -> RecipeResult:
    """Train once per seed with `lenet5 train --json --seed N <train_args>`, printing a line per seed."""
    busy0, total0 = cpu_jiffies()
    ours0 = children_jiffies()
    accuracy, seconds = [], []
    for seed in seeds:
        cmd = [sys.executable, "-m", "lenet5", "train", "--json", "--seed", str(seed), "--out", out, *train_args]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"seed {seed} failed:\n{result.stderr[-2000:]}")
        m = json.loads(result.stdout)
        accuracy.append(100 * m["test_accuracy"])
        seconds.append(m["train_seconds"])
        print(
            f"  seed {seed}: test accuracy {accuracy[-1]:.2f}%  (test error {100 - accuracy[-1]:.2f}%, "
            f"best epoch {m['best_epoch']}/{m['epochs']}, {m['train_seconds']:.0f} s)  {m['run_dir']}",
            flush=True,
        )
    busy1, total1 = cpu_jiffies()
    others = (busy1 - busy0) - (children_jiffies() - ours0)
    share = max(0.0, others / (total1 - total0)) if total1 > total0 else 0.0
    return RecipeResult(list(seeds), accuracy, seconds, share)


def summary_line(r: RecipeResult) -> str:
    noisy = "  NOISY: times are not comparable" if r.others_share > NOISY else ""
    return (
        f"mean test accuracy {statistics.mean(r.accuracy):.2f}% +- {r.spread:.2f} "
        f"(std over {len(r.accuracy)} seeds; "
        f"min {min(r.accuracy):.2f}, max {max(r.accuracy):.2f}); test error {r.mean_error:.2f}%; "
        f"median training time {statistics.median(r.train_seconds):.0f} s; "
        f"other processes took {100 * r.others_share:.0f}% of the CPU{noisy}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/accuracy", help="parent folder of the runs")
    parser.add_argument("train_args", nargs="*", help="extra arguments for lenet5 train (after --)")
    args = parser.parse_args()
    print(f"command: python {' '.join(sys.argv)}", flush=True)
    print(summary_line(run_recipe(args.train_args, args.seeds, args.out)))


if __name__ == "__main__":
    main()
