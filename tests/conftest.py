"""Shared fixtures. The real MNIST is fetched once per machine through the real code path (cached)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lenet5.config import OptimizerConfig
from lenet5.data.datasets import MNIST, load_mnist

TRAINING_FIXTURES = {"trained_checkpoint"}  # session fixtures that train a model first


def pytest_collection_modifyitems(items):
    """A test that needs a model trained on the full dataset is slow (`-m "not slow"` leaves it out), like the
    tests marked @pytest.mark.slow by hand (full-dataset training, or more than ~10 s)."""
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


LENET5 = [sys.executable, "-m", "lenet5"]  # the CLI as a user runs it, with this interpreter


def lenet5(
    *args, cwd=None, check: bool = False, env: dict | None = None, timeout: float = 600, **popen
) -> subprocess.CompletedProcess:
    """`python -m lenet5 ARGS` in a real subprocess: text output captured, unbuffered, extra ``env`` on top of
    this process's environment. ``check=True``: a non-zero exit fails the test and shows stderr."""
    result = subprocess.run(
        [*LENET5, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        **popen,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def opt(name: str = "adam", **settings) -> OptimizerConfig:
    """An optimizer config stating every setting a test relies on (the project's defaults may change)."""
    plain = dict(
        momentum=0.0, nesterov=False, beta1=0.9, beta2=0.999, eps=1e-8, l1=0.0, l2=0.0, weight_decay=0.0, grad_clip=0.0
    )
    return OptimizerConfig(name=name, **{**plain, **settings})


@pytest.fixture(scope="session")
def mnist() -> MNIST:
    """The real MNIST (uint8), from the cache or fetched and verified by lenet5.data.sources."""
    return load_mnist()


def write_mnist_subset(mnist: MNIST, folder: Path, n_train: int, n_test: int) -> Path:
    """The first n_train / n_test real digits as the four IDX files, for `--dataset idx --data-dir folder`."""
    from lenet5.data.idx import write_idx
    from lenet5.data.sources import FILES

    arrays = (
        mnist.train_images[:n_train],
        mnist.train_labels[:n_train],
        mnist.test_images[:n_test],
        mnist.test_labels[:n_test],
    )
    for name, array in zip(FILES, arrays):
        write_idx(folder / name, array)
    return folder


@pytest.fixture(scope="session")
def small_mnist(mnist, tmp_path_factory) -> Path:
    """6,000 real training digits and 1,000 real test digits as IDX files (--dataset idx)."""
    return write_mnist_subset(mnist, tmp_path_factory.mktemp("small-mnist"), 6000, 1000)


@pytest.fixture()
def one_torch_thread():
    """One intra-op torch thread: on a small shared machine torch with 2 threads slows down many times under load."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory) -> Path:
    """A freshly initialised modern LeNet-5 (numpy engine, seed 0): for tests where the weights' values do not
    matter (a server's work per request, a damaged file, a port in use), so they need not wait for training."""
    from lenet5.checkpoint import save_checkpoint
    from lenet5.config import ModelConfig
    from lenet5.engines import create_engine

    engine = create_engine("numpy", ModelConfig(), OptimizerConfig(), seed=0)
    path = tmp_path_factory.mktemp("untrained-model") / "model.safetensors"
    save_checkpoint(path, engine.state_dict(), engine="numpy", model="modern")
    return path


@pytest.fixture(scope="session")
def trained_checkpoint(mnist, tmp_path_factory):
    """A modern LeNet-5 trained for one epoch on 55,000 real MNIST digits by the NumPy engine (~98% test
    accuracy), calibrated like `lenet5 train` does on the 5,000 held-out training digits."""
    from lenet5.calibration import calibrate
    from lenet5.checkpoint import save_checkpoint
    from lenet5.config import Config, OptimizerConfig
    from lenet5.data.datasets import iterate_batches
    from lenet5.engines import create_engine
    from lenet5.training.trainer import engine_logits

    cfg = Config(optimizer=OptimizerConfig(name="adam", lr=1e-3, l2=0.0))
    engine = create_engine("numpy", cfg.model, cfg.optimizer, seed=0)
    train_x, train_y = mnist.train_images[:55000], mnist.train_labels[:55000]
    for x, y in iterate_batches(train_x, train_y, 64, np.random.default_rng(0)):
        engine.train_step(x, y, 1e-3)
    calibration = calibrate(engine_logits(engine, mnist.train_images[55000:]), mnist.train_labels[55000:])
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_checkpoint(
        path,
        engine.state_dict(),
        engine="numpy",
        model="modern",
        config=cfg.to_dict(),
        epoch=1,
        calibration=calibration,
    )
    return path
