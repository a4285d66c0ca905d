"""Latency of the whole `lenet5 predict` command for one image, timed from outside the process.

    python benchmarks/predict_latency.py [--model PATH] [--runs 15] [--baseline-src OTHER/src]

Side by side, in turns (A B C D A B C D ...), each a fresh process:
  python        `python -c pass`: the interpreter alone, the floor;
  --version     `python -m lenet5 --version`: the CLI's own start-up;
  predict png   `python -m lenet5 predict digit.png` (a 280x280 drawing; the bundled model unless --model);
  predict 12MP  the same on a 4000x3000 phone-sized JPEG of a digit on paper;
  baseline      with --baseline-src: `predict png` again with another source tree first on PYTHONPATH (an
                older checkout's src/, to measure a change before/after in the same turns).
The commands run as an installed package does, from compiled .pyc files: PYTHONDONTWRITEBYTECODE is
removed from their environment (with it every run would compile the package's sources again).
Reported: median and spread of wall time per command, the median CPU time (user+sys) the command's
process used (steadier than wall time on a busy machine), and the share of CPU time other processes took
during each command's runs (from /proc/stat minus our children's rusage; >15% is marked noisy, see
MEASURING.md).
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
from pathlib import Path

from machine import CLK_TCK, NOISY, children_jiffies, cpu_jiffies

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, int, float, float]:
    """Run cmd once -> (seconds, return code, busy jiffies of all, jiffies of the child)."""
    busy0, _ = cpu_jiffies()
    own0 = children_jiffies()
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env or ENV)
    seconds = time.perf_counter() - start
    busy1, _ = cpu_jiffies()
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {shlex.join(cmd)}\n{proc.stderr.decode()[-2000:]}")
    return seconds, proc.returncode, busy1 - busy0, children_jiffies() - own0


def make_inputs(folder: Path) -> tuple[Path, Path]:
    import numpy as np
    from PIL import Image, ImageDraw

    small = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(small).line([(70, 60), (210, 60), (125, 240)], fill=255, width=20, joint="curve")
    small.save(folder / "digit.png")
    photo = Image.new("RGB", (4000, 3000), (235, 232, 225))
    ImageDraw.Draw(photo).line([(1500, 800), (2500, 800), (1900, 2300)], fill=(30, 30, 40), width=120)
    noise = np.random.default_rng(0).integers(-6, 7, (3000, 4000, 1))
    photo = Image.fromarray(np.clip(np.asarray(photo).astype(int) + noise, 0, 255).astype(np.uint8))
    photo.save(folder / "photo.jpg", quality=90)
    return folder / "digit.png", folder / "photo.jpg"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint to use (default: none given, the bundled model)")
    p.add_argument("--baseline-src", default=None, help="another source tree (a src/ folder) to time predict png with")
    p.add_argument("--runs", type=int, default=15, help="runs per command (default 15)")
    args = p.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        png, jpg = make_inputs(Path(tmp))
        model = ["--model", args.model] if args.model else []
        commands = {
            "python -c pass": [py, "-c", "pass"],
            "lenet5 --version": [py, "-m", "lenet5", "--version"],
            "predict 280x280 png": [py, "-m", "lenet5", "predict", *model, str(png)],
            "predict 12MP jpeg": [py, "-m", "lenet5", "predict", *model, str(jpg)],
        }
        envs = {name: ENV for name in commands}
        if args.baseline_src:
            commands["baseline predict png"] = commands["predict 280x280 png"]
            envs["baseline predict png"] = {
                **ENV,
                "PYTHONPATH": os.pathsep.join(
                    [str(Path(args.baseline_src).resolve()), *filter(None, [ENV.get("PYTHONPATH")])]
                ),
            }
        for name, cmd in commands.items():  # warm the page cache and write the .pyc files
            timed(cmd, envs[name])
        times = {name: [] for name in commands}
        cpu = {name: [] for name in commands}
        busy = {name: [0.0, 0.0, 0.0] for name in commands}  # all busy, child's own, elapsed jiffies*cpus
        ncpu = os.cpu_count() or 1
        for _ in range(args.runs):
            for name, cmd in commands.items():
                seconds, _, all_busy, child = timed(cmd, envs[name])
                times[name].append(seconds)
                cpu[name].append(child / CLK_TCK)
                busy[name][0] += all_busy
                busy[name][1] += child
                busy[name][2] += seconds * CLK_TCK * ncpu
    print(f"command: {shlex.join([py, *sys.argv])}")
    print(f"python {sys.version.split()[0]}, {ncpu} CPUs, {args.runs} runs per command, taken in turns")
    print(f"{'command':<22}{'median ms':>10}{'min ms':>9}{'max ms':>9}{'cpu ms':>9}{'others':>9}")
    for name, ts in times.items():
        others = max(0.0, busy[name][0] - busy[name][1]) / max(1.0, busy[name][2])
        flag = "  noisy" if others > NOISY else ""
        print(
            f"{name:<22}{1000 * statistics.median(ts):>10.0f}{1000 * min(ts):>9.0f}{1000 * max(ts):>9.0f}"
            f"{1000 * statistics.median(cpu[name]):>9.0f}{others:>8.0%}{flag}"
        )
    base = statistics.median(times["python -c pass"])
    print(
        "predict (png) minus bare interpreter: "
        f"{1000 * (statistics.median(times['predict 280x280 png']) - base):.0f} ms"
    )
    if args.baseline_src:
        pairs = [b / a for a, b in zip(times["predict 280x280 png"], times["baseline predict png"])]
        print(f"baseline/this predict png, median of the per-turn ratios: {statistics.median(pairs):.3f}")
    print(f"example: {shlex.join(commands['predict 280x280 png'])}")


if __name__ == "__main__":
    main()
