"""What TensorBoard logging (train.logger: tensorboard) costs a NumPy-engine training epoch.

In one process, in alternating windows (round after round, the order rotating so that each triple is measured
side by side), one real training epoch each through the Trainer (the default config: modern model, SGD, one-cycle,
batch 64, 55,000 training and 5,000 validation digits; --images fewer for a quick look), with:

    none          no callback (train.logger: none; the run folder's own callbacks are the same either way and
                  are left out)
    hook          a callback whose on_step does nothing: the price of the per-step hook itself
    tensorboard   TensorBoardLogger writing into a temporary folder (step scalars every 50 steps, epoch scalars)

The figure is each window's epoch (training steps + validation) in seconds; the ratio is the median of the
per-round ratios to ``none``. The logger's one-off costs are timed apart: on_start (event file, config text)
and on_end (test scalars, the confusion matrix and predictions pictures rendered to PNG). For every window
the share of the machine's CPU time used by OTHER processes is printed; above 15% is marked noisy.

    python benchmarks/tensorboard_overhead.py                 # 8 rounds of one epoch, ~2 min idle
    python benchmarks/tensorboard_overhead.py --quick         # 3 rounds of 20,000 images
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import statistics
import sys
import tempfile
import time

import numpy as np

from lenet5.config import Config
from lenet5.data.datasets import MNIST, load_mnist
from lenet5.training.callbacks import Callback
from lenet5.training.tensorboard import STEP_EVERY, TensorBoardLogger
from lenet5.training.trainer import Trainer
from machine import NOISY, cpu_snapshot, others_share

KINDS = ("none", "hook", "tensorboard")


class NoOpStep(Callback):
    def on_step(self, trainer, loss, correct, batch_size, lr):
        pass


def window(kind: str, cfg: Config, data: MNIST, folder: str) -> dict:
    """One epoch with ``kind``; returns its seconds, others' CPU share, and the logger's one-off seconds."""
    trainer = Trainer(cfg, data, log=lambda msg: None)
    logger = TensorBoardLogger(folder) if kind == "tensorboard" else None
    trainer.callbacks = {"none": [], "hook": [NoOpStep()], "tensorboard": [logger]}[kind]
    t0 = time.perf_counter()
    trainer._tell("on_start")
    start = time.perf_counter() - t0
    before, t0 = cpu_snapshot(), time.perf_counter()
    for _ in trainer.epochs():
        pass
    after = cpu_snapshot()
    seconds, cpu, share = time.perf_counter() - t0, after[2] - before[2], others_share(before, after)
    end = 0.0
    if logger is not None:
        result = trainer._finish(False)
        t0 = time.perf_counter()
        logger.on_end(trainer, result)
        end = time.perf_counter() - t0
    if hasattr(trainer.engine, "close"):
        trainer.engine.close()
    return {"seconds": seconds, "cpu": cpu, "share": share, "start": start, "end": end}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 rounds of 20,000 images")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 8)")
    ap.add_argument("--images", type=int, default=None, help="training images per window (default 55,000)")
    ap.add_argument("--threads", type=int, default=0, help="engine threads (0: its default, as lenet5 train)")
    args = ap.parse_args()
    rounds = args.rounds or (3 if args.quick else 8)
    n = args.images or (20_000 if args.quick else 55_000)

    from threadpoolctl import threadpool_info

    mnist = load_mnist()
    val = 5000
    data = dataclasses.replace(
        mnist, train_images=mnist.train_images[: n + val], train_labels=mnist.train_labels[: n + val]
    )
    cfg = Config()
    cfg = dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, epochs=1, threads=args.threads),
        data=dataclasses.replace(cfg.data, val_size=val),
    )
    probe = Trainer(cfg, data, log=lambda msg: None)
    blas = ",".join(f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info() if p["user_api"] == "blas")
    print("command: " + shlex.join([os.path.basename(sys.executable)] + sys.argv))
    print(
        f"numpy {np.__version__}, {os.cpu_count()} CPUs, batch {cfg.train.batch_size}, {n:,} training + {val:,} "
        f"validation digits per window ({probe.steps_per_epoch} steps, a point every {STEP_EVERY}), {rounds} rounds; "
        f"engine threads {getattr(probe.engine, 'threads', args.threads)}, BLAS outside {blas}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        small = dataclasses.replace(data, train_images=data.train_images[:7000], train_labels=data.train_labels[:7000])
        for kind in KINDS:  # warm-up: imports, first figures, caches
            window(kind, cfg, small, os.path.join(tmp, "warmup"))
        runs = {k: [] for k in KINDS}
        for r in range(rounds):
            for kind in KINDS[r % 3 :] + KINDS[: r % 3]:
                w = window(kind, cfg, data, os.path.join(tmp, f"r{r}"))
                runs[kind].append(w)
                print(
                    f"  round {r + 1} {kind:<12} {w['seconds']:6.2f} s  cpu {w['cpu']:6.2f} s  [others "
                    f"{100 * w['share']:3.0f}%"
                    f"{' NOISY' if w['share'] > NOISY else ''}]",
                    file=sys.stderr,
                    flush=True,
                )

    print(
        f"\n## Seconds per epoch (median of {rounds}; [max share of CPU used by others]); vs none: median of the "
        "per-round ratios (min-max). cpu: this process's CPU seconds (all its threads: the logger's writer too),\n"
        "## steadier than wall time when other processes share the cores"
    )
    print(f"{'logger':<12} {'s/epoch':>8}  {'others':>12}  {'wall vs none':>26}  {'cpu s':>7}  {'cpu vs none':>26}")
    for kind in KINDS:
        cells = []
        for key in ("seconds", "cpu"):
            values = [w[key] for w in runs[kind]]
            ratios = [w[key] / b[key] for w, b in zip(runs[kind], runs["none"])]
            cells.append((statistics.median(values), statistics.median(ratios), min(ratios), max(ratios)))
        noisy = sum(w["share"] > NOISY for w in runs[kind])
        flag = f" NOISY x{noisy}" if noisy else ""
        (wall, wr, wlo, whi), (cpu, cr, clo, chi) = cells
        print(
            f"{kind:<12} {wall:8.2f}  [{100 * max(w['share'] for w in runs[kind]):3.0f}%{flag:>8}]  "
            f"{wr:6.3f}x ({wlo:.3f}-{whi:.3f})      {cpu:7.2f}  {cr:6.3f}x ({clo:.3f}-{chi:.3f})"
        )
    tb = runs["tensorboard"]
    print(
        f"\ntensorboard one-off costs (median): on_start {statistics.median(w['start'] for w in tb):.3f} s, "
        f"on_end (test scalars + 2 pictures) {statistics.median(w['end'] for w in tb):.2f} s"
    )
    per_step = statistics.median(w["seconds"] for w in runs["none"]) / probe.steps_per_epoch
    with tempfile.TemporaryDirectory() as tmp:
        direct = [on_step_cost(tmp) for _ in range(5)]
    print(
        f"on_step alone, timed directly (median of 5 x 100,000 calls, a point every {STEP_EVERY}): "
        f"{1e6 * statistics.median(direct):.2f} us per step = {100 * statistics.median(direct) / per_step:.3f}% "
        f"of a {1e3 * per_step:.2f} ms training step (the epoch above over its steps, validation included)"
    )


def on_step_cost(folder: str, calls: int = 100_000) -> float:
    """Seconds per TensorBoardLogger.on_step call (writing its points), without the engine: noise-free."""

    class FakeTrainer:
        cfg, step = Config(), 0

    trainer, logger = FakeTrainer(), TensorBoardLogger(folder)
    logger.on_start(trainer)
    t0 = time.perf_counter()
    for _ in range(calls):
        trainer.step += 1
        logger.on_step(trainer, 0.25, 60, 64, 0.05)
    seconds = time.perf_counter() - t0
    logger._close()
    return seconds / calls


if __name__ == "__main__":
    main()
