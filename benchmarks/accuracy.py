"""Test accuracy of a training recipe over several seeds: mean, spread and time, one command.

Each seed is a normal `lenet5 train --json` run (extra arguments are passed through), so every number
can be repeated with `lenet5 train --seed N ...`. Example:

    python benchmarks/accuracy.py --seeds 0 1 2                          # the default config.yaml
    python benchmarks/accuracy.py --seeds 0 1 2 -- --set model.name=classic
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/accuracy", help="parent folder of the runs")
    parser.add_argument("train_args", nargs="*", help="extra arguments for lenet5 train (after --)")
    args = parser.parse_args()
    print(f"command: python {' '.join(sys.argv)}", flush=True)
    rows = []
    for seed in args.seeds:
        cmd = [sys.executable, "-m", "lenet5", "train", "--json", "--seed", str(seed), "--out", args.out, *args.train_args]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"seed {seed} failed:\n{result.stderr[-2000:]}")
        m = json.loads(result.stdout)
        rows.append(m)
        print(f"  seed {seed}: test accuracy {100 * m['test_accuracy']:.2f}%  (test error {100 * (1 - m['test_accuracy']):.2f}%, "
              f"best epoch {m['best_epoch']}/{m['epochs']}, {m['train_seconds']:.0f} s)  {m['run_dir']}", flush=True)
    acc = [100 * m["test_accuracy"] for m in rows]
    secs = [m["train_seconds"] for m in rows]
    spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
    print(f"mean test accuracy {statistics.mean(acc):.2f}% +- {spread:.2f} (std over {len(acc)} seeds; "
          f"min {min(acc):.2f}, max {max(acc):.2f}); test error {100 - statistics.mean(acc):.2f}%; "
          f"median training time {statistics.median(secs):.0f} s")


if __name__ == "__main__":
    main()
