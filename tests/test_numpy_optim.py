"""The optimizers over the flat buffer: what L1, L2, decoupled decay and clipping each do (no torch needed)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import opt
from lenet5.config import ModelConfig, OptimizerConfig
from lenet5.engines.numpy.engine import NumpyEngine
from lenet5.engines.numpy.optim import SGD, Adam, clip_grad_norm, create_optimizer


def step(cfg: OptimizerConfig, w: np.ndarray, g: np.ndarray, lr: float, times: int = 1) -> np.ndarray:
    w = w.copy()
    optimizer = create_optimizer(cfg, w.size, w.dtype)
    for _ in range(times):
        optimizer.step(w, g.copy(), lr)
    return w


W = np.array([2.0, -1.0, 0.5, -0.25, 0.0])
ZERO = np.zeros_like(W)


def test_sgd_without_momentum_is_w_minus_lr_g():
    g = np.array([1.0, 2.0, -3.0, 0.5, 0.0])
    np.testing.assert_allclose(step(opt(name="sgd", momentum=0.0), W, g, 0.1), W - 0.1 * g)


def test_sgd_momentum_and_nesterov_follow_torchs_formulas():
    g = np.array([1.0, 2.0, -3.0, 0.5, 0.0])
    heavy = step(opt(name="sgd", momentum=0.9), W, g, 0.1, times=2)
    np.testing.assert_allclose(heavy, W - 0.1 * g - 0.1 * (0.9 * g + g))  # buf1 = g, buf2 = 0.9 g + g
    nesterov = step(opt(name="sgd", momentum=0.9, nesterov=True), W, g, 0.1, times=2)
    np.testing.assert_allclose(nesterov, W - 0.1 * (g + 0.9 * g) - 0.1 * (g + 0.9 * 1.9 * g))


def test_adam_first_step_moves_every_weight_by_lr_times_sign_of_gradient():
    g = np.array([1e-3, -5.0, 3.0, 1e-2, -2e-2])  # bias-corrected: m/sqrt(v) = sign(g) on step 1
    np.testing.assert_allclose(step(opt(name="adam"), W, g, 0.01), W - 0.01 * np.sign(g), rtol=1e-6)


def test_l2_is_a_gradient_that_adam_rescales_but_decoupled_decay_is_not():
    lr = 0.01
    l2 = step(opt(name="adam", l2=0.1), W, ZERO, lr)
    np.testing.assert_allclose(l2, W - lr * np.sign(W), rtol=1e-6)  # every weight moves by lr: rescaled
    decoupled = step(opt(name="adam", weight_decay=0.1), W, ZERO, lr)
    np.testing.assert_allclose(decoupled, W * (1 - lr * 0.1))  # shrinks in proportion to the weight


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_decoupled_weight_decay_means_the_same_for_every_optimizer(name):
    cfg = opt(name=name, weight_decay=0.5, momentum=0.0)
    np.testing.assert_allclose(step(cfg, W, ZERO, 0.1, times=3), W * (1 - 0.1 * 0.5) ** 3)


def test_l2_with_sgd_is_torchs_coupled_weight_decay():
    np.testing.assert_allclose(step(opt(name="sgd", momentum=0.0, l2=0.5), W, ZERO, 0.1), W - 0.1 * 0.5 * W)


def test_l1_pushes_weights_toward_zero_by_a_constant_step():
    out = step(opt(name="sgd", momentum=0.0, l1=0.5), W, ZERO, 0.1)
    np.testing.assert_allclose(out, W - 0.05 * np.sign(W))
    assert out[-1] == 0.0  # sign(0) = 0: a zero weight stays zero


def test_clipping_scales_the_full_gradient_to_the_max_norm():
    g = np.array([3.0, 4.0, 0.0, 0.0, 0.0])  # norm 5
    assert clip_grad_norm(g, 1.0) == pytest.approx(5.0)
    assert np.linalg.norm(g) == pytest.approx(1.0, rel=1e-6)
    small = np.array([0.3, 0.4, 0.0, 0.0, 0.0])
    clip_grad_norm(small, 1.0)
    np.testing.assert_array_equal(small, [0.3, 0.4, 0.0, 0.0, 0.0])  # under the limit: untouched
    # the penalty gradients are clipped with the data gradient: l2*w alone has norm 5 here
    w = np.array([30.0, 40.0, 0.0, 0.0, 0.0])
    out = step(opt(name="sgd", momentum=0.0, l2=0.1, grad_clip=1.0), w, np.zeros(5), 1.0)
    assert np.linalg.norm(w - out) == pytest.approx(1.0, rel=1e-6)


def test_optimizer_state_round_trip_and_validation():
    cfg = opt(name="adam")
    adam = Adam(cfg, 5, np.float64)
    w = W.copy()
    adam.step(w, np.ones(5), 0.1)
    state = adam.state_dict()
    assert set(state) == {"step", "exp_avg", "exp_avg_sq"} and int(state["step"]) == 1
    fresh = Adam(cfg, 5, np.float64)
    fresh.load_state_dict(state)
    assert fresh.t == 1 and np.array_equal(fresh.state["exp_avg"], adam.state["exp_avg"])
    with pytest.raises(ValueError, match="needs keys"):
        fresh.load_state_dict({"step": np.array(1)})
    with pytest.raises(ValueError, match="exp_avg"):
        fresh.load_state_dict({**state, "exp_avg": np.zeros(4)})
    assert set(SGD(opt(name="sgd", momentum=0.9), 5, np.float64).state_dict()) == {"step", "momentum_buffer"}


def test_engine_keeps_parameters_in_one_flat_buffer():
    engine = NumpyEngine(ModelConfig(), opt())
    flat = engine.net.params
    assert flat.ndim == 1 and flat.flags.c_contiguous and flat.size == 61706
    for _, layer in engine.net.layers:
        for view in layer.params.values():
            assert np.shares_memory(view, flat)
    before = engine.state_dict()
    x = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    engine.train_step(x, np.arange(8) % 10, 1e-3)
    after = engine.state_dict()
    assert all(not np.array_equal(before[k], after[k]) for k in before)  # the layers see the updated buffer
