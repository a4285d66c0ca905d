"""What both engines promise beyond the maths: close() and ``with``, hurry(), and one optimizer state format."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import opt
from lenet5.config import OPTIMIZERS, ModelConfig
from lenet5.engines import create_engine
from lenet5.engines.base import Engine

# The keys of optimizer_state() for each optimizer: the checkpoint format, the same for both engines (a run
# resumes in either), and the same as in checkpoints written before.
STATE_KEYS = {
    ("sgd", 0.0): {"step"},
    ("sgd", 0.9): {"step", "momentum_buffer"},
    ("adam", 0.0): {"step", "exp_avg", "exp_avg_sq"},
    ("adamw", 0.0): {"step", "exp_avg", "exp_avg_sq"},
}


def engine_names() -> list[str]:
    names = ["numpy"]
    try:
        import torch  # noqa: F401

        names.append("torch")
    except ImportError:
        pass
    return names


def make(engine: str, **settings) -> Engine:
    return create_engine(engine, ModelConfig(), opt(**settings), seed=0, threads=1, device="cpu")


def batch(n: int = 16):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, n).astype(np.int64)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("engine", engine_names())
def test_an_engine_is_a_context_manager_that_closes_and_stays_usable(engine):
    x, y = batch()
    with make(engine) as e:
        assert isinstance(e, Engine) and e.name == engine
        e.train_step(x, y, 1e-3)
        e.hurry()
    e.close()  # closing twice does nothing
    assert e.logits(x).shape == (16, 10)  # closed: still usable
    e.close()


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("engine", engine_names())
@pytest.mark.parametrize(("name", "momentum"), list(STATE_KEYS))
def test_each_optimizer_saves_the_same_state_keys_in_both_engines(engine, name, momentum):
    assert {n for n, _ in STATE_KEYS} == set(OPTIMIZERS)
    with make(engine, name=name, momentum=momentum) as e:
        e.train_step(*batch(), 1e-3)
        state = e.optimizer_state()
        assert set(state) == STATE_KEYS[name, momentum]
        assert state["step"].dtype == np.int64 and int(state["step"]) == 1
        e.load_optimizer_state(state)
