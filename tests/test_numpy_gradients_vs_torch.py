"""The NumPy engine against PyTorch autograd and torch.optim: same weights and batch, same numbers."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import opt
from lenet5.config import ModelConfig, OptimizerConfig
from lenet5.data.datasets import normalize
from lenet5.engines.numpy.engine import NumpyEngine
from lenet5.engines.numpy.layers import AvgPool2D, Conv2D, MaxPool2D
from lenet5.engines.numpy.pieces import plan
from lenet5.models import C3_TABLE

torch = pytest.importorskip("torch")
F = torch.nn.functional


TOLERANCE = {"float64": 1e-8, "float32": 1e-4}


def torch_lenet(p: dict, x, model: str):
    """The same networks written with torch.nn.functional, in the textbook order (ReLU before pooling)."""
    if model == "modern":
        h = F.max_pool2d(F.relu(F.conv2d(x, p["conv1.weight"], p["conv1.bias"], padding=2)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, p["conv2.weight"], p["conv2.bias"])), 2).flatten(1)
        h = F.relu(F.linear(h, p["fc1.weight"], p["fc1.bias"]))
        h = F.relu(F.linear(h, p["fc2.weight"], p["fc2.bias"]))
        return F.linear(h, p["fc3.weight"], p["fc3.bias"])

    def act(z):
        return 1.7159 * torch.tanh(2.0 / 3.0 * z)

    mask = torch.tensor(C3_TABLE, dtype=x.dtype)[:, :, None, None]
    h = F.avg_pool2d(act(F.conv2d(x, p["conv1.weight"], p["conv1.bias"], padding=2)), 2)
    h = F.avg_pool2d(act(F.conv2d(h, p["conv2.weight"] * mask, p["conv2.bias"])), 2)
    h = act(F.conv2d(h, p["conv3.weight"], p["conv3.bias"])).flatten(1)
    h = act(F.linear(h, p["fc1.weight"], p["fc1.bias"]))
    return F.linear(h, p["fc2.weight"], p["fc2.bias"])


def to_torch(state: dict) -> dict:
    return {k: torch.tensor(v, requires_grad=True) for k, v in state.items()}


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def tie_batch(rng, n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Digits-like inputs: a flat background (MNIST's normalized 0 is -0.4242) with a few bright blobs."""
    x = np.full((n, 1, 28, 28), -0.4242)
    x[:, :, 6:22, 6:22] += (rng.random((n, 1, 16, 16)) > 0.6) * 3.0
    x[: n // 4] = 0.0  # some images entirely flat
    return x, rng.integers(0, 10, n)


def check_against_torch(engine: NumpyEngine, x, y, smoothing: float, dtype: str) -> None:
    loss, n_correct, grads = engine.loss_and_gradients(x, y)
    p = to_torch(engine.state_dict())
    logits = torch_lenet(p, torch.tensor(x.astype(dtype)), engine.model_name)
    torch_loss = F.cross_entropy(logits, torch.tensor(y, dtype=torch.int64), label_smoothing=smoothing)
    torch_loss.backward()
    tol = TOLERANCE[dtype]
    assert rel(engine.logits(x), logits.detach().numpy()) < tol
    assert abs(loss - torch_loss.item()) < tol * abs(torch_loss.item())
    assert n_correct == int((logits.argmax(1).numpy() == y).sum())
    for name, g in grads.items():
        assert rel(g, p[name].grad.numpy()) < tol, name


@pytest.mark.parametrize("model", ["modern", "classic"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("threads", [1, 2])
def test_loss_logits_and_gradients_match_torch_on_ties(model, dtype, threads):
    rng = np.random.default_rng(3)
    engine = NumpyEngine(ModelConfig(name=model), opt(), seed=1, dtype=dtype, label_smoothing=0.1, threads=threads)
    x, y = tie_batch(rng)
    check_against_torch(engine, x, y, 0.1, dtype)


@pytest.mark.parametrize("model", ["modern", "classic"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("threads", [1, 2])
def test_gradients_match_torch_on_real_digits(mnist, model, dtype, threads):
    # 160 images: the engine runs them in several pieces (5 x 32 on one thread; 64 + 32 and 64 on two)
    x = normalize(mnist.test_images[:160]).astype(dtype)
    y = mnist.test_labels[:160].astype(np.int64)
    engine = NumpyEngine(ModelConfig(name=model, init="torch_default"), opt(), seed=2, dtype=dtype, threads=threads)
    assert len(plan(len(x), engine.threads)[0]) > 1
    check_against_torch(engine, x, y, 0.0, dtype)


def layer_vs_torch(layer, x: np.ndarray, torch_fn, params: dict) -> None:
    """One layer: output, input gradient and parameter gradients against torch's, for dy = R (random)."""
    y, cache = layer.forward(x)
    R = np.random.default_rng(0).standard_normal(y.shape)
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    dx = layer.backward(R, cache, grads)
    xt = torch.tensor(x, requires_grad=True)
    pt = to_torch(params)
    yt = torch_fn(xt, **pt)
    (yt * torch.tensor(R)).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    if dx is not None:
        np.testing.assert_array_equal(dx == 0, xt.grad.numpy() == 0)  # the gradient lands on the same pixels
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    for k in params:
        np.testing.assert_allclose(grads[k], pt[k].grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("stride, padding", [(1, 0), (1, 2), (2, 1), (3, 0)])
def test_conv_layer_matches_torch(stride, padding):
    rng = np.random.default_rng(stride * 10 + padding)
    layer = Conv2D(3, 4, 3, stride=stride, padding=padding)
    layer.params = {"weight": rng.standard_normal((4, 3, 3, 3)), "bias": rng.standard_normal(4)}
    x = rng.standard_normal((2, 3, 9, 8))
    layer_vs_torch(layer, x, lambda x, weight, bias: F.conv2d(x, weight, bias, stride, padding), layer.params)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("pool, torch_pool", [(MaxPool2D, F.max_pool2d), (AvgPool2D, F.avg_pool2d)])
def test_pooling_layers_match_torch_on_ties(k, pool, torch_pool):
    rng = np.random.default_rng(k)
    x = rng.integers(0, 3, size=(2, 3, 3 * k + 1, 2 * k + 1)).astype(np.float64)  # ties everywhere, odd sizes
    x[0, 0] = 0.0
    layer_vs_torch(pool(k), x, lambda x: torch_pool(x, k), {})


# (name, OptimizerConfig overrides, torch optimizer factory(params, cfg), manual: penalties/clip/decay done by hand)
OPTIMIZERS = [
    (
        "sgd_momentum_l2",
        dict(name="sgd", momentum=0.9, l2=1e-3),
        lambda ps, c: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=c.l2),
        False,
    ),
    (
        "sgd_nesterov_l2",
        dict(name="sgd", momentum=0.9, nesterov=True, l2=1e-3),
        lambda ps, c: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=c.l2),
        False,
    ),
    (
        "sgd_plain_decay_clip",
        dict(name="sgd", momentum=0.0, weight_decay=0.05, grad_clip=0.3),
        lambda ps, c: torch.optim.SGD(ps, lr=0.1),
        True,
    ),
    (
        "sgd_momentum_l1_clip",
        dict(name="sgd", momentum=0.5, l1=1e-3, grad_clip=0.3),
        lambda ps, c: torch.optim.SGD(ps, lr=0.1, momentum=0.5),
        True,
    ),
    ("adam_l2", dict(name="adam", l2=1e-3), lambda ps, c: torch.optim.Adam(ps, lr=0.1, weight_decay=c.l2), False),
    (
        "adamw_decay",
        dict(name="adamw", weight_decay=0.05, beta1=0.8, beta2=0.99),
        lambda ps, c: torch.optim.AdamW(ps, lr=0.1, weight_decay=c.weight_decay, betas=(0.8, 0.99)),
        False,
    ),
    (
        "adam_decoupled_decay_is_adamw",
        dict(name="adam", weight_decay=0.05),
        lambda ps, c: torch.optim.AdamW(ps, lr=0.1, weight_decay=c.weight_decay),
        False,
    ),
    (
        "adam_l1_l2_clip",
        dict(name="adam", l1=1e-4, l2=1e-3, grad_clip=0.3),
        lambda ps, c: torch.optim.Adam(ps, lr=0.1),
        True,
    ),
]


def torch_steps(state, cfg: OptimizerConfig, make, manual: bool, batches, lrs, model, smoothing):
    p = to_torch(state)
    opt = make(list(p.values()), cfg)
    clipped = []
    for (x, y), lr in zip(batches, lrs):
        opt.zero_grad()
        logits = torch_lenet(p, torch.tensor(x), model)
        F.cross_entropy(logits, torch.tensor(y), label_smoothing=smoothing).backward()
        with torch.no_grad():
            if manual:
                for w in p.values():
                    w.grad += cfg.l2 * w + cfg.l1 * torch.sign(w)
                if cfg.grad_clip:
                    norm = torch.nn.utils.clip_grad_norm_(list(p.values()), cfg.grad_clip)
                    clipped.append(float(norm) > cfg.grad_clip)
                if cfg.weight_decay:
                    for w in p.values():
                        w.mul_(1 - lr * cfg.weight_decay)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    return {k: v.detach().numpy() for k, v in p.items()}, clipped


@pytest.mark.parametrize("case", OPTIMIZERS, ids=[c[0] for c in OPTIMIZERS])
@pytest.mark.parametrize("model", ["modern", "classic"])
def test_optimizer_steps_match_torch_optim(case, model):
    _, overrides, make, manual = case
    cfg = opt(**overrides)
    rng = np.random.default_rng(5)
    batches = [tie_batch(rng, 16) for _ in range(3)]
    lrs = [0.05, 0.02, 0.01] if cfg.name == "sgd" else [2e-3, 1e-3, 5e-4]  # a schedule: lr changes per step
    engine = NumpyEngine(ModelConfig(name=model), cfg, seed=4, dtype="float64", label_smoothing=0.05)
    expected, clipped = torch_steps(engine.state_dict(), cfg, make, manual, batches, lrs, model, 0.05)
    if cfg.grad_clip:
        assert any(clipped), "the clipping threshold should bite at least once, or the test proves nothing"
    for (x, y), lr in zip(batches, lrs):
        engine.train_step(x, y, lr)
    for name, value in engine.state_dict().items():
        assert rel(value, expected[name]) < 1e-8, name


def test_one_adam_step_matches_torch_in_float32():
    cfg = opt(name="adam", l2=1e-3, weight_decay=0.0)
    rng = np.random.default_rng(6)
    batch = tie_batch(rng, 32)
    engine = NumpyEngine(ModelConfig(), cfg, seed=0, dtype="float32")
    x32 = batch[0].astype(np.float32)
    adam_l2 = OPTIMIZERS[4][2]
    expected, _ = torch_steps(engine.state_dict(), cfg, adam_l2, False, [(x32, batch[1])], [1e-3], "modern", 0.0)
    engine.train_step(x32, batch[1], 1e-3)
    for name, value in engine.state_dict().items():
        assert value.dtype == np.float32
        assert rel(value, expected[name]) < 1e-4, name
