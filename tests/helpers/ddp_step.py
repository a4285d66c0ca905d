"""Train TorchEngines for a few steps on fixed global batches of real MNIST digits; save the result (a test
helper).

    python tests/helpers/ddp_step.py OUT.npz                      # one process: the reference
    torchrun --nproc_per_node=2 tests/helpers/ddp_step.py OUT.npz  # data-parallel: rank r writes OUT.rank<r>.npz

Each rank sees the same global batches (same seed); TorchEngine.train_step takes its share. Every rank saves
its final weights (so the test can check the replicas stayed in sync); rank 0 also writes OUT.npz.

The settings are ones under which the loss falls step by step (the test checks that it does): comparing two
runs that diverge would compare float32 noise amplified by the divergence, not data parallelism.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from lenet5.config import ModelConfig, OptimizerConfig
from lenet5.data.datasets import load_mnist, normalize
from lenet5.engines.torch import distributed as ddp
from lenet5.engines.torch.engine import TorchEngine

STEPS = 20
GLOBAL_BATCH = 37  # odd on purpose: the two ranks get 19 and 18 samples
# tag: (model, optimizer, dtype, label smoothing, learning rate)
RUNS = {
    "modern": (
        ModelConfig(name="modern"),
        OptimizerConfig(name="adam", l2=1e-3, weight_decay=1e-2, grad_clip=1.0),
        "float32",
        0.1,
        1e-3,
    ),
    "classic": (
        ModelConfig(name="classic"),
        OptimizerConfig(name="sgd", momentum=0.9, nesterov=True, l1=1e-4),
        "float64",
        0.0,
        0.01,
    ),
}


def main(out: Path) -> None:
    rank, world = ddp.init_from_env()
    mnist = load_mnist()  # the cached real digits
    pick = np.random.default_rng(0).permutation(len(mnist.train_images))[: STEPS * GLOBAL_BATCH]
    xs = normalize(mnist.train_images[pick]).reshape(STEPS, GLOBAL_BATCH, 1, 28, 28)
    ys = mnist.train_labels[pick].astype(np.int64).reshape(STEPS, GLOBAL_BATCH)
    result = {"world_size": np.array(world)}
    for tag, (model, optimizer, dtype, smoothing, lr) in RUNS.items():
        engine = TorchEngine(model, optimizer, seed=0, dtype=dtype, label_smoothing=smoothing, threads=1, device="cpu")
        losses, correct = [], []
        for x, y in zip(xs, ys):
            x = x.astype(np.float64) if dtype == "float64" else x
            loss, n = engine.train_step(x, y, lr)
            losses.append(loss)
            correct.append(n)
        result[f"{tag}/loss"] = np.array(losses)
        result[f"{tag}/correct"] = np.array(correct)
        result[f"{tag}/logits"] = engine.logits(xs[0])
        result.update({f"{tag}/{k}": v for k, v in engine.state_dict().items()})
    if world > 1:
        np.savez(out.with_suffix(f".rank{rank}.npz"), **result)
    if ddp.is_main_process():
        np.savez(out, **result)
    ddp.barrier()
    ddp.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
