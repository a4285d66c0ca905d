"""NumPy engine vs PyTorch eager on CPU: training seconds per epoch, inference images/s, peak memory.

Both engines train the same model (same initial weights, the default optimizer) on the SAME real MNIST batches, in one
process, in alternating timed windows (numpy, torch, numpy, torch, ...). Each window runs for a few seconds;
an epoch is 60,000 images. For every window the share of the machine's CPU time used by OTHER processes is
read from /proc/stat (total busy time minus the CPU time of this process and its worker processes); windows
above 15% are marked noisy. Peak RSS comes from a separate subprocess per engine doing a full-training-run
configuration (uint8 dataset in memory, one batch normalized at a time, training steps, then evaluation on the
10,000 test images).

    python benchmarks/engine_speed.py            # batch 32/64/128/256 x threads 1/2, ~4 minutes
    python benchmarks/engine_speed.py --quick    # batch 64/128, shorter windows, ~1 minute
    python benchmarks/engine_speed.py --model vgg --threads 1 --batch-sizes 64 --rounds 2 --steps 50

The LeNet-5s run against a hand-written torch twin; the deeper models (vgg, resnet) against the torch engine's
module (lenet5.engines.torch.model), in training mode for train steps and evaluation mode for logits. A model
with BatchNorm runs in the NumPy engine's calling thread whatever --threads says (one whole batch at a time).
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time

import numpy as np

from lenet5.config import ModelConfig, OptimizerConfig
from lenet5.data.datasets import load_mnist, normalize
from lenet5.engines.numpy.engine import NumpyEngine
from lenet5.models import MODELS
from machine import NOISY, cpu_snapshot, others_share, running_children

EPOCH = 60_000


# --- the PyTorch twin -------------------------------------------------------------------------------------


def torch_model(model: str):
    import torch
    from torch import nn
    from torch.nn import functional as F

    if model not in ("modern", "classic"):
        from lenet5.engines.torch.model import LeNet5 as Deeper

        return Deeper(model)

    class LeNet5(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            if model == "modern":
                self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)
            else:
                from lenet5.models import C3_TABLE

                self.conv3 = nn.Conv2d(16, 120, 5)
                self.fc1, self.fc2 = nn.Linear(120, 84), nn.Linear(84, 10)
                self.register_buffer("mask", torch.tensor(C3_TABLE, dtype=torch.float32)[:, :, None, None])

        def forward(self, x):
            if model == "modern":
                x = F.max_pool2d(F.relu(self.conv1(x)), 2)
                x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
                return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))
            act = lambda z: 1.7159 * torch.tanh(z * (2.0 / 3.0))  # noqa: E731
            x = F.avg_pool2d(act(self.conv1(x)), 2)
            x = F.avg_pool2d(act(F.conv2d(x, self.conv2.weight * self.mask, self.conv2.bias)), 2)
            x = act(self.conv3(x)).flatten(1)
            return self.fc2(act(self.fc1(x)))

    return LeNet5()


def torch_optimizer(params, cfg: OptimizerConfig):
    """The torch.optim twin of an OptimizerConfig (L2 = torch's weight_decay of SGD/Adam)."""
    import torch

    if cfg.l1 or cfg.grad_clip or (cfg.weight_decay and cfg.name != "adamw"):
        raise SystemExit("the benchmark mirrors l2 and AdamW's weight_decay only; set l1/grad_clip/weight_decay to 0")
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.l2)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.l2)
    return torch.optim.AdamW(
        params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay
    )


class TorchRunner:
    def __init__(self, state: dict, model: str, cfg: OptimizerConfig | None = None) -> None:
        import torch

        self.torch = torch
        self.net = torch_model(model)
        self.net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
        self.opt = torch_optimizer(self.net.parameters(), cfg or OptimizerConfig())
        self.F = torch.nn.functional

    def train_step(self, x, y, lr):
        t = self.torch
        xt, yt = t.from_numpy(x), t.from_numpy(y)
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        for group in self.opt.param_groups:
            group["lr"] = lr
        out = self.net(xt)
        loss = self.F.cross_entropy(out, yt)
        loss.backward()
        self.opt.step()
        return loss.item(), int((out.argmax(1) == yt).sum())

    def logits(self, x):
        self.net.eval()
        with self.torch.inference_mode():
            chunks = [self.net(self.torch.from_numpy(x[i : i + 1000])).numpy() for i in range(0, len(x), 1000)]
            return np.concatenate(chunks)


# --- timing -----------------------------------------------------------------------------------------------


def timed_window(step, batches, seconds: float, start: int) -> tuple[float, float, int]:
    """Run train steps for at least `seconds`; returns (seconds per epoch, others' CPU share, next batch)."""
    before, t0, images, i = cpu_snapshot(), time.perf_counter(), 0, start
    while True:
        x, y = batches[i % len(batches)]
        step(x, y, 1e-3)
        images += len(x)
        i += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    return elapsed / images * EPOCH, others_share(before, cpu_snapshot()), i


def fmt(values: list[float], shares: list[float]) -> str:
    noisy = sum(s > NOISY for s in shares)
    flag = f" NOISY x{noisy}" if noisy else ""
    return f"{statistics.median(values):6.2f} s [others {100 * max(shares):3.0f}%{flag}]"


def compare_training(mnist, model, batch_sizes, thread_counts, rounds, seconds) -> None:
    import torch
    from threadpoolctl import threadpool_info

    pool_x = normalize(mnist.train_images[:8192])
    pool_y = mnist.train_labels[:8192].astype(np.int64)
    print(
        f"\n## Training, seconds per epoch of {EPOCH:,} images (median of {rounds} windows of >= {seconds:g} s "
        "each; [max share of CPU used by other processes])"
    )
    print(f"{'batch':>5} {'threads':>7} | {'numpy':>28} | {'torch':>28} | numpy/torch (median of pairs)")
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for bs in batch_sizes:
            batches = [(pool_x[i : i + bs], pool_y[i : i + bs]) for i in range(0, len(pool_x) - bs + 1, bs)]
            npe = NumpyEngine(ModelConfig(name=model), OptimizerConfig(), seed=0, threads=threads)
            tor = TorchRunner(npe.state_dict(), model)
            # warm-up: buffers, threads, the NumPy engine's worker process (started once the free-cores policy,
            # which checks every 0.25 s, finds the second core free; ~0.3 s to start here, more on a slower
            # machine)
            _, _, i = timed_window(npe.train_step, batches, 2.0, 0)
            _, _, i = timed_window(tor.train_step, batches, 0.6, i)
            n_t, n_s, t_t, t_s, ratios = [], [], [], [], []
            for _ in range(rounds):
                a, sa, _ = timed_window(npe.train_step, batches, seconds, i)
                b, sb, i = timed_window(tor.train_step, batches, seconds, i)
                n_t.append(a), n_s.append(sa), t_t.append(b), t_s.append(sb), ratios.append(a / b)
            blas = [f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info() if p["user_api"] == "blas"]
            print(
                f"{bs:>5} {threads:>7} | {fmt(n_t, n_s):>28} | {fmt(t_t, t_s):>28} | {statistics.median(ratios):.2f}"
                f"   (numpy: {threads} worker(s), BLAS {','.join(blas)} outside the engine / 1 inside;"
                f" torch.get_num_threads()={torch.get_num_threads()})"
            )
            npe.close()


def compare_inference(mnist, model, thread_counts, rounds) -> None:
    import torch

    x = normalize(mnist.test_images)
    print(
        f"\n## Inference on the {len(x):,} test images, images/s (median of {rounds}; numpy engine.logits(x) "
        "(pieces of 32 images per worker), torch chunks of 1000 under inference_mode)"
    )
    for threads in thread_counts:
        torch.set_num_threads(threads)
        npe = NumpyEngine(ModelConfig(name=model), OptimizerConfig(), seed=0, threads=threads)
        tor = TorchRunner(npe.state_dict(), model)
        npe.logits(x[:1000]), tor.logits(x[:1000])
        rates = {"numpy": [], "torch": []}
        shares = {"numpy": [], "torch": []}
        for _ in range(rounds):
            for name, fn in (("numpy", npe.logits), ("torch", tor.logits)):
                before, t0 = cpu_snapshot(), time.perf_counter()
                fn(x)
                rates[name].append(len(x) / (time.perf_counter() - t0))
                shares[name].append(others_share(before, cpu_snapshot()))
        line = " | ".join(
            f"{n} {statistics.median(rates[n]):8,.0f} img/s [others {100 * max(shares[n]):3.0f}%"
            f"{' NOISY' if max(shares[n]) > NOISY else ''}]"
            for n in rates
        )
        ratio = statistics.median(a / b for a, b in zip(rates["numpy"], rates["torch"]))
        print(f"threads {threads}: {line} | numpy/torch {ratio:.2f}")
        npe.close()


# --- memory: one subprocess per engine --------------------------------------------------------------------


def rss_child(engine: str, model: str, steps: int) -> None:
    """A training run's shape: uint8 data in memory, batches normalized one at a time, then a full evaluation."""
    mnist = load_mnist()
    rng = np.random.default_rng(0)
    if engine == "numpy":
        runner = NumpyEngine(ModelConfig(name=model), OptimizerConfig(), seed=0)
    else:
        runner = TorchRunner(NumpyEngine(ModelConfig(name=model), OptimizerConfig(), seed=0).state_dict(), model)
    order = rng.permutation(len(mnist.train_images))
    for i in range(steps):
        idx = order[(i * 64) % 59968 :][:64]
        runner.train_step(normalize(mnist.train_images[idx]), mnist.train_labels[idx].astype(np.int64), 1e-3)
    for images in (mnist.train_images[:5000], mnist.test_images):  # validation-sized and test evaluation
        runner.logits(normalize(images))
    print(peak_rss_kb(), sum(peak_rss_kb(pid) for pid in running_children()))


def peak_rss_kb(pid: int | str = "self") -> int:
    """Peak RSS of a process in kB. VmHWM, not ru_maxrss: after fork+exec, Linux's ru_maxrss still
    includes the parent's peak (588 MB here for a child that never exceeded 210 MB)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return int(next(line for line in f if line.startswith("VmHWM:")).split()[1])
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if pid == "self" else 0


def compare_memory(model: str, steps: int) -> None:
    print(
        f"\n## Peak RSS (VmHWM) of a training-run configuration in its own process: load MNIST, batch 64,"
        f" {steps} steps, then logits of 5,000 + 10,000 images"
    )
    for engine in ("numpy", "torch"):
        out = subprocess.run(
            [sys.executable, __file__, "--rss-child", engine, "--model", model, "--steps", str(steps)],
            capture_output=True,
            text=True,
            check=True,
        )
        own, workers = map(int, out.stdout.split()[-2:])
        print(f"{engine}: {own / 1024:.0f} MB" + (f" + {workers / 1024:.0f} MB in worker processes" if workers else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="batch 64/128, 2 rounds of 1.5 s windows")
    ap.add_argument("--model", default="modern", choices=list(MODELS))
    ap.add_argument("--batch-sizes", type=int, nargs="+")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--seconds", type=float, help="length of each timed window")
    ap.add_argument("--steps", type=int, default=938, help="training steps of the memory run (938 = one epoch)")
    ap.add_argument("--rss-child", choices=["numpy", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        return rss_child(args.rss_child, args.model, args.steps)

    batch_sizes = args.batch_sizes or ([64, 128] if args.quick else [32, 64, 128, 256])
    rounds = args.rounds or (2 if args.quick else 3)
    seconds = args.seconds or (1.5 if args.quick else 3.0)
    steps = 200 if args.quick and args.steps == 938 else args.steps

    import torch

    print("command: " + shlex.join([os.path.basename(sys.executable)] + sys.argv))
    cfg = OptimizerConfig()
    print(
        f"numpy {np.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs, model {args.model}, "
        f"the default optimizer ({cfg.name}, momentum {cfg.momentum}, nesterov {cfg.nesterov}, l2 {cfg.l2}), "
        "real MNIST batches (the same for both)"
    )
    mnist = load_mnist()
    compare_training(mnist, args.model, batch_sizes, args.threads, rounds, seconds)
    compare_inference(mnist, args.model, args.threads, rounds=3)
    compare_memory(args.model, steps)


if __name__ == "__main__":
    main()
