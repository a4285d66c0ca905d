"""LeNet-5 on MNIST to 99% test accuracy with nothing but NumPy: the whole idea of lenet5 on one page.

    python examples/minimal.py        (about 30 s on one CPU core: 99.3% with seed 0)

The architecture is data (lenet5.models), the NumPy engine is every layer's forward and backward written out
(lenet5/engines/numpy/), and the rest is a plain loop: shuffled batches, one SGD step each, a learning rate
that rises and falls once (one-cycle), the test set read once at the end.
"""

import numpy as np

from lenet5.config import ModelConfig, OptimizerConfig
from lenet5.data.datasets import iterate_batches, load_mnist, normalize
from lenet5.engines import create_engine

EPOCHS, BATCH, PEAK_LR = 6, 64, 0.05


def main() -> float:
    mnist = load_mnist()  # the four IDX files, fetched once and checked by SHA-256
    net = create_engine("numpy", ModelConfig(name="modern"), OptimizerConfig(lr=PEAK_LR), seed=0, threads=1)
    steps = EPOCHS * -(-len(mnist.train_images) // BATCH)
    step = 0
    for epoch in range(EPOCHS):
        rng = np.random.default_rng([0, epoch])
        for x, y in iterate_batches(mnist.train_images, mnist.train_labels, BATCH, rng):
            lr = PEAK_LR * min(step / (0.3 * steps), (steps - step) / (0.7 * steps))  # up, then down to 0
            loss, correct = net.train_step(x, y, max(lr, 1e-4))
            step += 1
        print(f"epoch {epoch + 1}: last batch loss {loss:.3f}, {correct}/{len(y)} right")
    logits = np.concatenate([net.logits(normalize(mnist.test_images[i : i + 1000])) for i in range(0, 10000, 1000)])
    accuracy = float(np.mean(logits.argmax(axis=1) == mnist.test_labels))
    print(f"test accuracy {accuracy:.2%}")
    net.close()
    return accuracy


if __name__ == "__main__":
    main()
