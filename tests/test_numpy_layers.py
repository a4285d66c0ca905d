"""The NumPy layers: finite-difference gradient checks, a naive convolution oracle, the model's structure."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradients import numerical_grad
from lenet5.engines.numpy.layers import (
    AvgPool2D,
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    ReLU,
    ScaledTanh,
    Tanh,
)
from lenet5.engines.numpy.losses import softmax_cross_entropy
from lenet5.engines.numpy.model import Network
from lenet5.models import C3_TABLE, INITIALIZERS, fans, init_parameters, parameter_shapes
from reference_conv import conv2d_naive, maxpool_naive

FAST = settings(max_examples=20, deadline=None)
seeds = st.integers(0, 2**32 - 1)


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-12))


def batch_last(x: np.ndarray) -> np.ndarray:
    """The same NCHW values stored in memory as (C, H, W, N), the layout the network uses inside."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def check_layer_gradients(layer, x: np.ndarray, rng: np.random.Generator) -> None:
    """Analytic input and parameter gradients of sum(layer(x) * R) against finite differences."""
    y, cache = layer.forward(x)
    R = rng.standard_normal(y.shape)
    grads = {k: np.zeros_like(v) for k, v in layer.params.items()}
    dx = layer.backward(R.copy(), cache, grads)
    x = np.ascontiguousarray(x)

    def f() -> float:
        return float(np.sum(layer.forward(x)[0] * R))

    if dx is not None:
        assert dx.shape == x.shape
        assert rel_error(dx, numerical_grad(f, x)) < 1e-6
    for name, p in layer.params.items():
        assert rel_error(grads[name], numerical_grad(f, p)) < 1e-6, name


def make_conv(rng, C, F, k, stride, padding, mask=None):
    layer = Conv2D(C, F, k, stride=stride, padding=padding, mask=mask)
    layer.params = {"weight": rng.standard_normal((F, C, k, k)), "bias": rng.standard_normal(F)}
    return layer


@FAST
@given(
    seed=seeds,
    N=st.integers(1, 2),
    C=st.integers(1, 3),
    F=st.integers(1, 3),
    H=st.integers(3, 8),
    W=st.integers(3, 8),
    k=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
    stored_batch_last=st.booleans(),
)
def test_conv_gradients_match_finite_differences(seed, N, C, F, H, W, k, stride, padding, stored_batch_last):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    check_layer_gradients(make_conv(rng, C, F, k, stride, padding), batch_last(x) if stored_batch_last else x, rng)


@FAST
@given(
    seed=seeds,
    N=st.integers(1, 3),
    C=st.integers(1, 4),
    F=st.integers(1, 4),
    H=st.integers(1, 11),
    W=st.integers(1, 11),
    k=st.integers(1, 5),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
)
def test_conv_forward_matches_naive_loops(seed, N, C, F, H, W, k, stride, padding):
    if H + 2 * padding < k or W + 2 * padding < k:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    layer = make_conv(rng, C, F, k, stride, padding)
    expected = conv2d_naive(x, layer.params["weight"], layer.params["bias"], stride, padding)
    np.testing.assert_allclose(layer.forward(x)[0], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.forward(batch_last(x))[0], expected, rtol=1e-12, atol=1e-12)


def test_conv_in_column_blocks_matches_naive_loops_and_finite_differences(rng, monkeypatch):
    # the matmuls over the batch's pixels run in blocks of COLUMN_BLOCK columns (conv1's are 25,088 long);
    # blocks of 7 cut every matmul here into several, uneven ones
    from lenet5.engines.numpy import layers

    monkeypatch.setattr(layers, "COLUMN_BLOCK", 7)
    x = rng.standard_normal((3, 2, 6, 5))
    layer = make_conv(rng, 2, 3, 3, 1, 1)
    expected = conv2d_naive(x, layer.params["weight"], layer.params["bias"], 1, 1)
    np.testing.assert_allclose(layer.forward(batch_last(x))[0], expected, rtol=1e-12, atol=1e-12)
    check_layer_gradients(layer, batch_last(x), rng)


def test_masked_conv_ignores_and_never_trains_masked_weights(rng):
    layer = make_conv(rng, 6, 16, 5, 1, 0, mask=C3_TABLE)
    x = rng.standard_normal((2, 6, 9, 9))
    y, cache = layer.forward(x)
    kept = layer.params["weight"] * C3_TABLE[:, :, None, None]
    np.testing.assert_allclose(y, conv2d_naive(x, kept, layer.params["bias"]), rtol=1e-12, atol=1e-12)
    grads = {k: np.zeros_like(v) for k, v in layer.params.items()}
    layer.backward(np.ones_like(y), cache, grads)
    assert np.all(grads["weight"][~C3_TABLE] == 0)
    assert np.all(grads["weight"][C3_TABLE] != 0)
    check_layer_gradients(layer, x, rng)


@FAST
@given(
    seed=seeds,
    N=st.integers(1, 2),
    C=st.integers(1, 3),
    H=st.integers(2, 9),
    W=st.integers(2, 9),
    k=st.sampled_from([2, 3]),
    pool=st.sampled_from([MaxPool2D, AvgPool2D]),
    stored_batch_last=st.booleans(),
)
def test_pooling_gradients_match_finite_differences(seed, N, C, H, W, k, pool, stored_batch_last):
    if H < k or W < k:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    check_layer_gradients(pool(k), batch_last(x) if stored_batch_last else x, rng)


@pytest.mark.parametrize("k", [2, 3])
def test_maxpool_routes_gradient_to_first_maximum_on_ties(rng, k):
    x = rng.integers(0, 2, size=(3, 2, 3 * k, 2 * k)).astype(np.float64)  # ties in almost every window
    x[0] = 0.0  # a flat background, as MNIST's
    expected_out, expected_route = maxpool_naive(x, k)
    layer = MaxPool2D(k)
    for stored in (x, batch_last(x)):
        y, cache = layer.forward(stored)
        np.testing.assert_array_equal(y, expected_out)
        np.testing.assert_array_equal(layer.backward(np.ones_like(y), cache, {}), expected_route)


@FAST
@given(seed=seeds, N=st.integers(1, 4), n_in=st.integers(1, 12), n_out=st.integers(1, 12))
def test_dense_gradients_match_finite_differences(seed, N, n_in, n_out):
    rng = np.random.default_rng(seed)
    layer = Dense(n_in, n_out)
    layer.params = {"weight": rng.standard_normal((n_out, n_in)), "bias": rng.standard_normal(n_out)}
    check_layer_gradients(layer, rng.standard_normal((N, n_in)), rng)


@FAST
@given(
    seed=seeds, shape=st.sampled_from([(3, 7), (2, 3, 4, 5)]), make=st.sampled_from([ReLU, Tanh, ScaledTanh, Flatten])
)
def test_elementwise_and_flatten_gradients_match_finite_differences(seed, shape, make):
    rng = np.random.default_rng(seed)
    check_layer_gradients(make(), rng.standard_normal(shape) * 2, rng)


def test_scaled_tanh_is_lecuns_function():
    x = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(ScaledTanh().forward(x)[0], 1.7159 * np.tanh(2 * x / 3), rtol=1e-15)


def test_flatten_uses_torchs_order_for_batch_last_storage(rng):
    x = rng.standard_normal((4, 3, 2, 5))
    np.testing.assert_array_equal(Flatten().forward(batch_last(x))[0], x.reshape(4, -1))


@FAST
@given(
    seed=seeds,
    N=st.integers(1, 6),
    K=st.integers(2, 10),
    smoothing=st.sampled_from([0.0, 0.1, 0.3]),
    scale=st.sampled_from([1.0, 5.0]),
)  # larger logits: p - q of the true class loses digits to 1 - p
def test_cross_entropy_gradient_matches_finite_differences(seed, N, K, smoothing, scale):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((N, K)) * scale
    labels = rng.integers(0, K, N)
    _, grad = softmax_cross_entropy(logits, labels, smoothing)
    numeric = numerical_grad(lambda: softmax_cross_entropy(logits, labels, smoothing)[0], logits)
    # centred differences of a loss near 1 carry ~1e-16 / 1e-6 = 1e-10 of rounding: when every gradient is tiny
    # (a confident right answer, e.g. 5e-6) that is a relative error above 1e-6 of the *numeric* side
    assert rel_error(grad, numeric) < 1e-6 or np.abs(grad - numeric).max() < 1e-8


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [-1e4, 1e4, 0.0]])
    loss, grad = softmax_cross_entropy(logits, np.array([0, 0]), 0.1)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    # row 0: 0.1/3 * (1000 + 2000); row 1: (0.9 + 0.1/3) * 2e4 + 0.1/3 * 1e4
    assert loss == pytest.approx((100.0 + 19000.0) / 2)


@pytest.mark.parametrize("model", ["modern", "classic"])
def test_network_gradients_match_finite_differences(model):
    rng = np.random.default_rng(7)
    net = Network(model, np.float64)
    for name, value in init_parameters("xavier_uniform", net.shapes, rng).items():
        net.named_views(net.params)[name][...] = value
    net.named_views(net.params)["conv1.bias"][...] = rng.standard_normal(6) * 0.1  # all parameters non-zero
    net.apply_masks()
    x, labels = rng.standard_normal((3, 1, 28, 28)), np.array([1, 7, 3])
    grad = np.zeros_like(net.params)
    net.loss_and_grad(x, labels, net.layer_views(grad), label_smoothing=0.1)

    def loss() -> float:
        return softmax_cross_entropy(net.forward(x, keep_caches=False)[0], labels, 0.1)[0]

    start = 0
    for name, shape in net.shapes.items():  # 12 entries of every tensor, in the one flat buffer
        n = int(np.prod(shape))
        picked = start + rng.choice(n, size=min(n, 12), replace=False)
        assert rel_error(grad[picked], numerical_grad(loss, net.params, indices=picked)) < 1e-6, name
        start += n


def test_parameter_shapes_are_pytorchs():
    assert parameter_shapes("modern") == {
        "conv1.weight": (6, 1, 5, 5),
        "conv1.bias": (6,),
        "conv2.weight": (16, 6, 5, 5),
        "conv2.bias": (16,),
        "fc1.weight": (120, 400),
        "fc1.bias": (120,),
        "fc2.weight": (84, 120),
        "fc2.bias": (84,),
        "fc3.weight": (10, 84),
        "fc3.bias": (10,),
    }
    assert list(parameter_shapes("modern"))[:3] == ["conv1.weight", "conv1.bias", "conv2.weight"]  # ordered
    assert parameter_shapes("classic") == {
        "conv1.weight": (6, 1, 5, 5),
        "conv1.bias": (6,),
        "conv2.weight": (16, 6, 5, 5),
        "conv2.bias": (16,),
        "conv3.weight": (120, 16, 5, 5),
        "conv3.bias": (120,),
        "fc1.weight": (84, 120),
        "fc1.bias": (84,),
        "fc2.weight": (10, 84),
        "fc2.bias": (10,),
    }
    with pytest.raises(ValueError, match="unknown model"):
        parameter_shapes("transformer")


def test_c3_table_is_lecuns_table_one():
    assert C3_TABLE.shape == (16, 6) and C3_TABLE.sum() == 60
    rows = [set(np.flatnonzero(r)) for r in C3_TABLE]
    assert rows[0] == {0, 1, 2} and rows[5] == {5, 0, 1}  # 3 neighbouring maps
    assert rows[6] == {0, 1, 2, 3} and rows[11] == {5, 0, 1, 2}  # 4 neighbouring maps
    assert rows[12:15] == [{0, 1, 3, 4}, {1, 2, 4, 5}, {0, 2, 3, 5}] and rows[15] == set(range(6))
    # Table I read by its rows (input maps): input 0 feeds C3 maps 0, 4, 5, 6, 9, 10, 11, 12, 14, 15.
    assert list(np.flatnonzero(C3_TABLE[:, 0])) == [0, 4, 5, 6, 9, 10, 11, 12, 14, 15]


def test_model_module_imports_without_torch():
    code = (
        "import sys, lenet5.engines.numpy.engine, lenet5.models, lenet5.checkpoint, lenet5.export; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("scheme", INITIALIZERS)
def test_initializers_draw_the_documented_spread(scheme):
    shapes = parameter_shapes("modern")
    params = init_parameters(scheme, shapes, np.random.default_rng(0))
    w = params["fc1.weight"]  # 48,000 draws: the sample std is within ~1% of the target
    fan_in, fan_out = fans(w.shape)
    std = {
        "kaiming": np.sqrt(2 / fan_in),
        "xavier": np.sqrt(2 / (fan_in + fan_out)),
        "lecun": np.sqrt(1 / fan_in),
        "torch": np.sqrt(1 / (3 * fan_in)),
    }[scheme.split("_")[0]]
    assert w.std() == pytest.approx(std, rel=0.03)
    if scheme.endswith("_uniform") or scheme == "torch_default":
        assert np.abs(w).max() <= np.sqrt(3) * std
    if scheme == "torch_default":
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(params["fc1.bias"]).max() <= bound and params["fc1.bias"].std() > bound / 3
    else:
        assert all(np.all(v == 0) for k, v in params.items() if k.endswith(".bias"))
    again = init_parameters(scheme, shapes, np.random.default_rng(0))
    assert all(np.array_equal(params[k], again[k]) for k in shapes)
    assert fans((6, 1, 5, 5)) == (25, 150)
