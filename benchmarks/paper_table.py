"""LeCun et al. (1998)'s MNIST table for LeNet-5, reproduced with this project's code, as a Markdown table.

Each row is a recipe run over seeds 0, 1, 2 by `accuracy.run_recipe` (a normal `lenet5 train --json
--seed N ...` per seed); the row's own command is printed with it, so any row can be re-run alone:

    python benchmarks/paper_table.py                 # every row, about 14 minutes on 2 cores
    python benchmarks/paper_table.py --rows classic  # rows whose name contains 'classic'
"""

from __future__ import annotations

import argparse
import statistics
import sys

from accuracy import run_recipe, summary_line

DISTORTIONS = ["--set", "augment.enabled=true"]

# (row name, test error the paper reports or None, extra `lenet5 train` arguments on top of config.yaml)
ROWS = [
    ("classic LeNet-5", 0.95, ["--set", "model.name=classic"]),
    ("classic LeNet-5, distortions", 0.80, ["--set", "model.name=classic", *DISTORTIONS, "--epochs", "20"]),
    ("modern LeNet-5", None, []),
    ("modern LeNet-5, distortions", None, [*DISTORTIONS, "--epochs", "20"]),
    ("modern LeNet-5, distortions, 30 epochs", None, [*DISTORTIONS, "--epochs", "30"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", default="", help="run only the rows whose name contains this text")
    parser.add_argument("--out", default="runs/paper_table", help="parent folder of the runs")
    args = parser.parse_args()
    print(f"command: python {' '.join(sys.argv)}", flush=True)
    table = []
    for name, paper, train_args in ROWS:
        if args.rows not in name:
            continue
        seeds = " ".join(map(str, args.seeds))
        command = f"python benchmarks/accuracy.py --seeds {seeds}" + (
            f" -- {' '.join(train_args)}" if train_args else ""
        )
        print(f"{name}: {command}", flush=True)
        r = run_recipe(train_args, args.seeds, args.out)
        print(summary_line(r), flush=True)
        errors = ", ".join(f"{100 - a:.2f}" for a in r.accuracy)
        paper_cell = f"{paper:.2f}%" if paper is not None else "-"
        table.append(
            f"| {name} | {paper_cell} | **{r.mean_error:.2f}% +- {r.spread:.2f}** | {errors} | "
            f"{statistics.median(r.train_seconds):.0f} s | `{command}` |"
        )
    print(
        "\n| model | paper's test error | our test error (mean +- std, seeds "
        + ", ".join(map(str, args.seeds))
        + ") | per seed | training time per run | command |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(table))


if __name__ == "__main__":
    main()
