"""Training speed on a quiet machine vs one where another process keeps a core busy, per engine and thread policy.

Each policy runs in its own worker process (an OpenMP wait policy only counts if it is in the environment
before PyTorch's OpenMP runtime loads), built once, warmed up, then asked again and again to run the SAME
fixed number of training steps (engine.train_step, batch 64, real MNIST, the default model and optimizer).
In every round each policy is timed quiet and busy back to back (busy first in every other round): busy means
a ``python -c "while True: pass"`` process pinned to CPU 0, started for that window and killed after it.
Reported per policy: the median seconds per condition, the median of the per-round busy/quiet ratios (and
the same over the clean rounds only), and the worker's CPU seconds per window (spinning threads show up
there). Next to each figure, the share of the machine's CPU time taken by processes other than the worker
and the busy loop (/proc/stat minus their own counters; see MEASURING.md): above 15% a window is noisy.

    python benchmarks/busy_machine.py                 # 200 steps, 5 rounds, the main policies (~7 minutes)
    python benchmarks/busy_machine.py --policies numpy torch-default torch-2-interop1 torch-1-passive
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 64

# name -> (engine, threads passed to the engine, extra environment, interop threads, import torch first)
# "import torch first" loads PyTorch (and its OpenMP runtime) before lenet5.engines.torch, as a program that
# imports torch itself does: whatever the engine package puts in os.environ is then too late.
POLICIES = {
    "numpy": ("numpy", 0, {}, 0, False),
    "torch-default": ("torch", 0, {}, 0, False),  # TorchEngine(threads=0): the engine's own policy
    "torch-2-spin": ("torch", 2, {}, 0, True),  # PyTorch's defaults: 2 threads, libgomp spins
    "torch-1": ("torch", 1, {}, 0, True),  # torch.set_num_threads(1)
    "torch-2-passive": ("torch", 2, {"OMP_WAIT_POLICY": "PASSIVE"}, 0, True),
    "torch-2-interop1": ("torch", 2, {}, 1, True),  # torch.set_num_interop_threads(1)
    "torch-1-passive": ("torch", 1, {"OMP_WAIT_POLICY": "PASSIVE"}, 0, True),
}
DEFAULT_POLICIES = ("numpy", "torch-default", "torch-2-spin", "torch-1", "torch-2-passive")


# --- the worker: one engine, timed on request -------------------------------------------------------------


def worker(policy: str, steps: int) -> None:
    engine_name, threads, _, interop, torch_first = POLICIES[policy]
    if torch_first:
        import torch

        if interop:
            torch.set_num_interop_threads(interop)
    from lenet5.config import ModelConfig, OptimizerConfig
    from lenet5.data.datasets import load_mnist, normalize
    from lenet5.engines import create_engine

    mnist = load_mnist()
    x = normalize(mnist.train_images[: steps * BATCH])
    y = mnist.train_labels[: steps * BATCH].astype("int64")
    batches = [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, steps * BATCH, BATCH)]

    def build():
        return create_engine(engine_name, ModelConfig(), OptimizerConfig(), seed=0, threads=threads, device="cpu")

    sys.path.insert(0, HERE)
    from machine import CLK_TCK, own_jiffies

    def cpu() -> float:  # this process's and its worker processes' (the NumPy engine's) CPU seconds
        return own_jiffies() / CLK_TCK

    engine = build()
    warm_until = time.perf_counter() + 2.0  # warm-up: buffers, threads, the NumPy engine's worker process
    while time.perf_counter() < warm_until:
        for bx, by in batches[:10]:
            engine.train_step(bx, by, 0.01)
    print(json.dumps({"ready": True, "threads": _threads(engine)}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t0, c0 = time.perf_counter(), cpu()
        for bx, by in batches:
            engine.train_step(bx, by, 0.01)
        print(
            json.dumps({"seconds": time.perf_counter() - t0, "cpu": cpu() - c0, "threads": _threads(engine)}),
            flush=True,
        )


def _threads(engine) -> int:
    if engine.name == "torch":
        import torch

        return torch.get_num_threads()
    return engine.workers_in_use  # at the end of the window


# --- the parent: alternate quiet and busy ------------------------------------------------------------------


def start_busy_loop() -> subprocess.Popen:
    def pin():
        try:
            os.sched_setaffinity(0, {0})
        except (AttributeError, OSError):
            pass

    return subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=pin)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200, help=f"training steps of batch {BATCH} per window (default 200)")
    p.add_argument("--rounds", type=int, default=5, help="quiet+busy rounds (default 5)")
    p.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES), choices=list(POLICIES))
    p.add_argument("--worker", choices=list(POLICIES), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.steps)

    sys.path.insert(0, HERE)
    from machine import CLK_TCK, NOISY, cpu_snapshot, process_jiffies

    workers = {}
    for name in args.policies:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
        env.update(POLICIES[name][2])
        workers[name] = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", name, "--steps", str(args.steps)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
    for w in workers.values():  # each worker says it is ready with a first line
        json.loads(w.stdout.readline())
    results = {name: {"quiet": [], "busy": []} for name in workers}  # (seconds, cpu, others' share, threads)
    loop = None

    def window(name: str) -> tuple[float, float, float, int]:
        """One timed window of one policy -> (seconds, its CPU seconds, others' share, threads at the end)."""
        before = cpu_snapshot()
        loop_before = process_jiffies(loop.pid) if loop else 0
        w = workers[name]
        w.stdin.write("run\n")
        w.stdin.flush()
        out = json.loads(w.stdout.readline())
        after = cpu_snapshot()
        loop_cpu = (process_jiffies(loop.pid) - loop_before) / CLK_TCK if loop else 0.0
        total = after[0] - before[0]
        others = (after[1] - before[1]) - out["cpu"] - loop_cpu
        return out["seconds"], out["cpu"], max(0.0, others / total) if total > 0 else 0.0, out["threads"]

    try:
        for r in range(args.rounds):
            for name in workers:  # quiet and busy back to back, in turns: busy first in every other round
                for condition in ("quiet", "busy") if r % 2 == 0 else ("busy", "quiet"):
                    if condition == "busy":
                        loop = start_busy_loop()
                        time.sleep(0.5)
                    results[name][condition].append(window(name))
                    s = results[name][condition][-1]
                    print(
                        f"round {r + 1} {condition:5} {name:18} {s[0]:7.2f} s  cpu {s[1]:6.2f} s  "
                        f"threads {s[3]}  others {s[2]:4.0%}",
                        file=sys.stderr,
                        flush=True,
                    )
                    if loop:
                        loop.kill()
                        loop.wait()
                        loop = None
                    time.sleep(0.3)
    finally:
        if loop:
            loop.kill()
            loop.wait()
        for w in workers.values():
            w.stdin.close()
            w.wait()

    load = os.getloadavg()
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"{os.cpu_count()} CPUs; load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"{args.steps} steps of batch {BATCH} per window, {args.rounds} rounds, median per condition; "
        "busy = a `while True: pass` process pinned to CPU 0; busy/quiet = median of the per-round ratios; "
        "clean pairs: "
        f"the same over rounds where other processes took at most {NOISY:.0%} of the CPU in both windows (how many); "
        f"others: median share of the CPU used by other processes (windows above {NOISY:.0%} counted as noisy)"
    )
    print(
        "| policy | threads quiet / busy | quiet s | busy s | busy/quiet | clean pairs | cpu s quiet / busy "
        "| others quiet / busy |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, res in results.items():
        q, b = res["quiet"], res["busy"]
        ratio = statistics.median(bs[0] / qs[0] for qs, bs in zip(q, b))
        clean = [bs[0] / qs[0] for qs, bs in zip(q, b) if max(qs[2], bs[2]) <= NOISY]
        clean_txt = f"{statistics.median(clean):.2f} ({len(clean)})" if clean else "- (0)"
        used = "/".join(",".join(map(str, sorted({s[3] for s in c}))) for c in (q, b))
        noisy = sum(s[2] > NOISY for s in q + b)
        print(
            f"| {name} | {used} | {statistics.median(s[0] for s in q):.2f} | "
            f"{statistics.median(s[0] for s in b):.2f} | {ratio:.2f} | {clean_txt} | "
            f"{statistics.median(s[1] for s in q):.2f} / {statistics.median(s[1] for s in b):.2f} | "
            f"{statistics.median(s[2] for s in q):.0%} / {statistics.median(s[2] for s in b):.0%}"
            f"{f' (noisy x{noisy})' if noisy else ''} |"
        )


if __name__ == "__main__":
    main()
