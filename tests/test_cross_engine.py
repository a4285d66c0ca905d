"""The NumPy engine and the PyTorch engine are the same network: same weights, same logits, same training."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lenet5.config import ModelConfig, OptimizerConfig  # noqa: E402
from lenet5.engines.numpy.engine import NumpyEngine  # noqa: E402
from lenet5.engines.torch.engine import TorchEngine  # noqa: E402
from lenet5.engines.torch.model import LeNet5  # noqa: E402

MODELS = ("modern", "classic")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def engines(model="modern", dtype="float64", seed=0, label_smoothing=0.0, init="kaiming_uniform", **opt):
    m, o = ModelConfig(name=model, init=init), OptimizerConfig(**opt)
    kw = {"seed": seed, "dtype": dtype, "label_smoothing": label_smoothing}
    return NumpyEngine(m, o, **kw), TorchEngine(m, o, device="cpu", **kw)


def digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real-ish data: each class is a smooth random 28x28 stroke pattern; samples add shifts and noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((10, 7, 7)) ** 3
    templates = np.kron(coarse, np.ones((4, 4)))  # (10, 28, 28) blocky strokes in [0, 1]
    y = rng.integers(0, 10, n)
    x = templates[y]
    shifts = rng.integers(-2, 3, (n, 2))
    x = np.stack([np.roll(img, tuple(s), axis=(0, 1)) for img, s in zip(x, shifts)])
    # Unclipped noise on purpose: runs of identical pixels make exactly tied max-pool windows, where float32
    # rounding in either engine can pick another winner and send the gradient elsewhere (float64 still agrees).
    x = x + 0.15 * rng.standard_normal(x.shape)
    return ((x - 0.1307) / 0.3081)[:, None].astype(np.float32), y.astype(np.int64)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("init", ["kaiming_uniform", "xavier_normal", "torch_default"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_gives_identical_initial_weights(model, init, dtype):
    np_engine, torch_engine = engines(model, dtype, seed=5, init=init)
    a, b = np_engine.state_dict(), torch_engine.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("model", MODELS)
def test_same_weights_give_the_same_logits(model):
    np_engine, _ = engines(model, "float32", seed=1)
    torch_engine = engines(model, "float32", seed=2)[1]
    torch_engine.load_state_dict(np_engine.state_dict())
    x, _ = digits(64)
    np.testing.assert_allclose(np_engine.logits(x), torch_engine.logits(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("model", MODELS)
def test_weights_of_a_plain_torch_module_give_the_same_logits_in_numpy(model):
    torch.manual_seed(0)
    module = LeNet5(model)  # torch's own init: classic conv2 weights outside C3 are not zero here
    np_engine, _ = engines(model, "float32")
    np_engine.load_state_dict({k: v.numpy() for k, v in module.state_dict().items()})
    x, _ = digits(16)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np_engine.logits(x), expected, rtol=0, atol=1e-5)


TRAINING = {
    "sgd-plain-f64": ({"name": "sgd", "momentum": 0.0}, "float64", 1e-9),
    "sgd-plain-f32": ({"name": "sgd", "momentum": 0.0}, "float32", 1e-4),
    "sgd-nesterov-l1-clip": (
        {"name": "sgd", "momentum": 0.9, "nesterov": True, "l1": 1e-4, "grad_clip": 0.5},
        "float64",
        1e-9,
    ),
    "adam-l2-decay": ({"name": "adam", "l2": 1e-3, "weight_decay": 1e-2}, "float64", 1e-9),
    "adamw-l2-clip-smoothing": ({"name": "adamw", "l2": 1e-4, "weight_decay": 5e-2, "grad_clip": 1.0}, "float64", 1e-9),
}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("case", list(TRAINING))
def test_training_from_the_same_init_gives_the_same_weights(model, case):
    opt, dtype, tol = TRAINING[case]
    lr = 0.05 if opt["name"] == "sgd" else 2e-3
    np_engine, torch_engine = engines(model, dtype, label_smoothing=0.1 if "smoothing" in case else 0.0, **opt)
    x, y = digits(32 * 30, seed=1)
    for i in range(30):
        xb, yb = x[32 * i : 32 * (i + 1)], y[32 * i : 32 * (i + 1)]
        loss_np, correct_np = np_engine.train_step(xb, yb, lr)
        loss_t, correct_t = torch_engine.train_step(xb, yb, lr)
        assert loss_np == pytest.approx(loss_t, abs=tol), f"step {i}"
    assert loss_t < 2.0  # it did learn something
    a, b = np_engine.state_dict(), torch_engine.state_dict()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=tol, err_msg=key)
    for slot, value in np_engine.optimizer_state().items():
        np.testing.assert_allclose(torch_engine.optimizer_state()[slot], value, rtol=0, atol=tol, err_msg=slot)


@pytest.mark.parametrize("direction", ["numpy->torch", "torch->numpy"])
def test_a_run_can_resume_in_the_other_engine(direction):
    opt = {"name": "adam", "l2": 1e-4}
    first, second = engines("modern", "float64", **opt)
    if direction == "torch->numpy":
        first, second = second, first
    reference = engines("modern", "float64", **opt)[0]
    x, y = digits(16 * 6, seed=2)
    batches = [(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)]) for i in range(6)]
    for xb, yb in batches[:3]:
        first.train_step(xb, yb, 1e-3)
        reference.train_step(xb, yb, 1e-3)
    second.load_state_dict(first.state_dict())
    second.load_optimizer_state(first.optimizer_state())
    for xb, yb in batches[3:]:
        second.train_step(xb, yb, 1e-3)
        reference.train_step(xb, yb, 1e-3)
    for key, value in reference.state_dict().items():
        np.testing.assert_allclose(second.state_dict()[key], value, rtol=0, atol=1e-10, err_msg=key)
