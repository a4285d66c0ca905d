"""The NumPy engine learns real digits, reproducibly, and resumes exactly where it stopped."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import opt
from lenet5.config import ModelConfig
from lenet5.data.datasets import normalize
from lenet5.engines import create_engine
from lenet5.engines.base import Engine
from lenet5.engines.numpy.engine import NumpyEngine


@pytest.fixture(scope="module")
def digits(mnist):
    """5,000 real training digits and 1,000 held-out real test digits, normalized."""
    return (
        normalize(mnist.train_images[:5000]),
        mnist.train_labels[:5000].astype(np.int64),
        normalize(mnist.test_images[:1000]),
        mnist.test_labels[:1000].astype(np.int64),
    )


def train(engine, x, y, epochs: int, batch_size: int, lr: float, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            losses.append(engine.train_step(x[idx], y[idx], lr)[0])
    return losses


@pytest.mark.parametrize(
    "model, optimizer, lr, target",
    [
        ("modern", opt(name="adam"), 2e-3, 0.93),
        ("classic", opt(name="sgd", momentum=0.9, nesterov=True), 0.05, 0.90),
    ],
)
def test_short_training_on_real_digits_reaches_accuracy_only_a_working_network_can(
    digits, model, optimizer, lr, target
):
    x, y, x_test, y_test = digits
    engine = NumpyEngine(ModelConfig(name=model), optimizer, seed=0)
    losses = train(engine, x, y, epochs=3, batch_size=64, lr=lr)
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:5])
    accuracy = float(np.mean(engine.logits(x_test).argmax(axis=1) == y_test))
    assert accuracy > target, f"{model}: held-out accuracy {accuracy:.3f}"


def test_factory_builds_a_numpy_engine_that_fulfils_the_protocol():
    engine = create_engine("numpy", ModelConfig(), opt(), seed=3, dtype="float64", threads=1)
    assert isinstance(engine, Engine) and engine.name == "numpy" and engine.model_name == "modern"
    assert all(v.dtype == np.float64 for v in engine.state_dict().values())


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_gives_bit_identical_weights_after_training(digits, threads):
    x, y = digits[0][:640], digits[1][:640]
    a, b = (NumpyEngine(ModelConfig(), opt(), seed=11, threads=threads) for _ in range(2))
    assert all(np.array_equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    losses_a, losses_b = train(a, x, y, 1, 64, 2e-3), train(b, x, y, 1, 64, 2e-3)
    assert losses_a == losses_b
    assert all(np.array_equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    other = NumpyEngine(ModelConfig(), opt(), seed=12, threads=threads)
    assert not np.array_equal(other.state_dict()["fc1.weight"], NumpyEngine(seed=11).state_dict()["fc1.weight"])


@pytest.mark.parametrize("optimizer", [opt(name="adamw", weight_decay=0.01), opt(name="sgd", momentum=0.9, l2=1e-4)])
def test_resume_from_state_and_optimizer_state_is_bit_identical(digits, optimizer):
    x, y = digits[0][:960], digits[1][:960]
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(x), 64)]
    lrs = np.linspace(1e-3, 1e-4, len(batches)) if optimizer.name != "sgd" else np.linspace(0.05, 0.005, len(batches))

    straight = NumpyEngine(ModelConfig(), optimizer, seed=5)
    for (xb, yb), lr in zip(batches, lrs):
        straight.train_step(xb, yb, lr)

    first = NumpyEngine(ModelConfig(), optimizer, seed=5)
    for (xb, yb), lr in zip(batches[:7], lrs[:7]):
        first.train_step(xb, yb, lr)
    weights, opt_state = first.state_dict(), first.optimizer_state()
    assert all(isinstance(v, np.ndarray) for v in opt_state.values())

    resumed = NumpyEngine(ModelConfig(), optimizer, seed=99)  # different initial weights, all overwritten
    resumed.load_state_dict(weights)
    resumed.load_optimizer_state(opt_state)
    for (xb, yb), lr in zip(batches[7:], lrs[7:]):
        resumed.train_step(xb, yb, lr)
    for key, value in straight.state_dict().items():
        assert np.array_equal(resumed.state_dict()[key], value), key


def test_load_state_dict_names_the_key_that_does_not_fit():
    engine = NumpyEngine(ModelConfig(), opt())
    good = engine.state_dict()
    with pytest.raises(ValueError, match="fc3.bias"):
        engine.load_state_dict({k: v for k, v in good.items() if k != "fc3.bias"})
    with pytest.raises(ValueError, match="conv3.weight"):
        engine.load_state_dict({**good, "conv3.weight": np.zeros((120, 16, 5, 5))})
    with pytest.raises(ValueError, match="fc1.weight"):
        engine.load_state_dict({**good, "fc1.weight": np.zeros((400, 120))})
    as_float64 = {k: v.astype(np.float64) + 1.0 for k, v in good.items()}
    engine.load_state_dict(as_float64)  # any float dtype is accepted and cast
    loaded = engine.state_dict()
    assert loaded["fc1.weight"].dtype == np.float32
    np.testing.assert_allclose(loaded["fc1.weight"], good["fc1.weight"] + 1.0, rtol=1e-6)


def test_classic_keeps_c3_table_weights_at_zero_through_training(digits):
    from lenet5.models import C3_TABLE

    engine = NumpyEngine(ModelConfig(name="classic"), opt(name="adamw", weight_decay=0.1, l1=1e-4))
    assert np.all(engine.state_dict()["conv2.weight"][~C3_TABLE] == 0)
    train(engine, digits[0][:256], digits[1][:256], 1, 64, 1e-3)
    w = engine.state_dict()["conv2.weight"]
    assert np.all(w[~C3_TABLE] == 0) and np.all(w[C3_TABLE] != 0)
    engine.load_state_dict({**engine.state_dict(), "conv2.weight": np.ones((16, 6, 5, 5))})
    kept = np.broadcast_to(C3_TABLE[:, :, None, None], w.shape)
    assert np.array_equal(engine.state_dict()["conv2.weight"] != 0, kept)  # loaded ones at masked places: zeroed


def test_logits_of_many_images_are_computed_in_chunks_and_agree_with_small_batches(digits):
    engine = NumpyEngine(ModelConfig(), opt(), seed=0, dtype="float64")
    x = digits[2]  # 1,000 images: several chunks, the last one partial
    all_at_once = engine.logits(x)
    piecewise = np.concatenate([engine.logits(x[i : i + 7]) for i in range(0, len(x), 7)])
    assert all_at_once.shape == (1000, 10)
    np.testing.assert_allclose(all_at_once, piecewise, rtol=1e-12, atol=1e-12)
