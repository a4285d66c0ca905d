"""The layers for deeper nets (blocks.py: BatchNorm, Residual, Sequential; Conv2D without bias) against
torch.nn modules with the same weights, torch autograd and finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from gradients import numerical_grad
from lenet5.engines.numpy.blocks import BatchNorm, Residual, Sequential, basic_block
from lenet5.engines.numpy.layers import Conv2D, ReLU
from lenet5.workspace import Workspace

torch = pytest.importorskip("torch")
nn = torch.nn

F64 = dict(rtol=1e-8, atol=1e-10)  # float64: agreement to many digits, not to the last bit


def batch_last(x: np.ndarray) -> np.ndarray:
    """The same NCHW values stored in memory as (C, H, W, N), the layout the network uses inside."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def random_params(layer, rng, dtype=np.float64) -> None:
    """Random values for every parameter (BatchNorm's gamma around 1) and random running statistics."""
    params = {}
    for name, shape in layer.param_shapes().items():
        kind = name.rsplit(".", 1)[-1]
        is_bn = kind in ("weight", "bias") and len(shape) == 1
        base = 1.0 if is_bn and kind == "weight" else 0.0
        params[name] = (base + (0.3 if is_bn else 0.4) * rng.standard_normal(shape)).astype(dtype)
    layer.params = params
    buffers = {}
    for name, shape in layer.buffer_shapes().items():
        kind = name.rsplit(".", 1)[-1]
        value = {"running_mean": 0.2 * rng.standard_normal(shape), "running_var": rng.uniform(0.5, 2.0, shape)}
        buffers[name] = value.get(kind, np.zeros(shape)).astype(dtype)
    layer.buffers = buffers


def torch_state(layer) -> dict:
    """The layer's parameters and buffers as a torch state dict (num_batches_tracked as torch's int64)."""
    state = {k: torch.tensor(np.array(v)) for k, v in (layer.params | layer.buffers).items()}
    for k in state:
        if k.endswith("num_batches_tracked"):
            state[k] = state[k].to(torch.int64)
    return state


def step(layer, x: np.ndarray, R: np.ndarray, ws=None):
    """Forward, then backward of sum(y * R): (y, dx, parameter gradients)."""
    y, cache = layer.forward(x, ws)
    y = y.copy()  # the workspace's buffer is reused by the next call
    grads = {k: np.zeros_like(v) for k, v in layer.params.items()}
    dx = layer.backward(R, cache, grads, ws).copy()
    return y, dx, grads


def torch_step(module, x: np.ndarray, R: np.ndarray):
    xt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    module.zero_grad()
    yt = module(xt)
    (yt * torch.tensor(R)).sum().backward()
    grads = {k: p.grad.numpy() for k, p in module.named_parameters()}
    return yt.detach().numpy(), xt.grad.numpy(), grads


def assert_same_state(layer, module, **tol) -> None:
    expected = {k: v.numpy() for k, v in module.state_dict().items()}
    assert set(layer.params | layer.buffers) == set(expected)
    for k, v in (layer.params | layer.buffers).items():
        np.testing.assert_allclose(v, expected[k], err_msg=k, **tol)


def check_finite_differences(layer, x: np.ndarray, rng, samples: int = 40) -> None:
    """Input and parameter gradients of sum(layer(x) * R) against centred differences, float64, at up to
    ``samples`` random entries of each array."""
    x = np.ascontiguousarray(x)
    y, cache = layer.forward(x)
    R = rng.standard_normal(y.shape)
    grads = {k: np.zeros_like(v) for k, v in layer.params.items()}
    dx = layer.backward(R, cache, grads)

    def f() -> float:
        return float(np.sum(layer.forward(x)[0] * R))

    for name, analytic, array in [("x", dx, x)] + [(k, grads[k], p) for k, p in layer.params.items()]:
        idx = rng.choice(array.size, size=min(samples, array.size), replace=False)
        numeric = numerical_grad(f, array, indices=idx).reshape(-1)
        np.testing.assert_allclose(analytic.reshape(-1)[idx], numeric, rtol=1e-5, atol=1e-7, err_msg=name)


# ------------------------------------------------------------------------------------------- BatchNorm
def torch_batchnorm(layer: BatchNorm, ndim: int):
    module = (nn.BatchNorm2d if ndim == 4 else nn.BatchNorm1d)(layer.C, eps=layer.eps, momentum=layer.momentum)
    module = module.to(torch.float64 if layer.params["weight"].dtype == np.float64 else torch.float32)
    module.load_state_dict(torch_state(layer))
    return module


@pytest.mark.parametrize("shape", [(5, 3, 7, 6), (1, 4, 3, 5), (7, 6)], ids=["maps", "one_image", "vectors"])
@pytest.mark.parametrize("stored_batch_last", [True, False])
def test_batchnorm_training_matches_torch_over_several_steps(shape, stored_batch_last, rng):
    layer = BatchNorm(shape[1], momentum=0.2, dtype=np.float64)
    random_params(layer, rng)
    module = torch_batchnorm(layer, len(shape)).train()
    ws = Workspace()
    for i in range(3):  # batches of different means and scales; the running statistics follow each
        x = rng.standard_normal(shape) * (1 + i) + 3.0 * i
        if stored_batch_last and len(shape) == 4:
            x = batch_last(x)
        R = rng.standard_normal(shape)
        y, dx, grads = step(layer, x, R, ws)
        y_t, dx_t, grads_t = torch_step(module, x, R)
        np.testing.assert_allclose(y, y_t, **F64)
        np.testing.assert_allclose(dx, dx_t, **F64)
        for k in grads:
            np.testing.assert_allclose(grads[k], grads_t[k], err_msg=k, **F64)
        assert_same_state(layer, module, **F64)
    assert layer.buffers["num_batches_tracked"] == 3


@pytest.mark.parametrize("shape", [(5, 3, 7, 6), (1, 3, 1, 1), (1, 6), (3, 6)], ids=["maps", "one_pixel", "one", "odd"])
def test_batchnorm_evaluation_uses_running_statistics_as_torch(shape, rng):
    layer = BatchNorm(shape[1], dtype=np.float64)
    random_params(layer, rng)
    before = {k: v.copy() for k, v in layer.buffers.items()}
    module = torch_batchnorm(layer, len(shape)).eval()
    layer.train(False)
    x, R = rng.standard_normal(shape) + 1.0, rng.standard_normal(shape)
    y, dx, grads = step(layer, x, R, Workspace())
    y_t, dx_t, grads_t = torch_step(module, x, R)
    np.testing.assert_allclose(y, y_t, **F64)
    np.testing.assert_allclose(dx, dx_t, **F64)
    for k in grads:
        np.testing.assert_allclose(grads[k], grads_t[k], err_msg=k, **F64)
    for k, v in before.items():  # evaluation leaves the running statistics alone
        np.testing.assert_array_equal(layer.buffers[k], v)


def test_batchnorm_mode_switch(rng):
    layer = BatchNorm(3, dtype=np.float64)
    x = rng.standard_normal((4, 3, 5, 5)) * 2 + 1
    y_train, _ = layer.forward(x)
    np.testing.assert_allclose(y_train.mean(axis=(0, 2, 3)), 0, atol=1e-12)  # batch statistics
    np.testing.assert_allclose(y_train.var(axis=(0, 2, 3)), 1, rtol=1e-3)  # 1 up to eps
    assert layer.buffers["num_batches_tracked"] == 1
    running = layer.buffers["running_mean"].copy()
    y_eval, _ = layer.train(False).forward(x)
    np.testing.assert_array_equal(layer.buffers["running_mean"], running)
    np.testing.assert_allclose(
        y_eval, (x - running[:, None, None]) / np.sqrt(layer.buffers["running_var"] + 1e-5)[:, None, None]
    )
    y_again, _ = layer.train().forward(x)  # back to batch statistics
    np.testing.assert_allclose(y_again, y_train, **F64)
    assert layer.buffers["num_batches_tracked"] == 2


def test_batchnorm_in_training_refuses_a_single_value_per_channel():
    layer = BatchNorm(2, dtype=np.float64)
    with pytest.raises(ValueError, match="more than one value per channel"):
        layer.forward(np.ones((1, 2, 1, 1)))
    with pytest.raises(ValueError, match="more than one value per channel"):
        layer.forward(np.ones((1, 2)))
    assert layer.train(False).forward(np.ones((1, 2)))[0].shape == (1, 2)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(3, 2, 4, 5), (5, 4)])
def test_batchnorm_gradients_match_finite_differences(training, shape, rng):
    layer = BatchNorm(shape[1], dtype=np.float64)
    random_params(layer, rng)
    layer.train(training)
    check_finite_differences(layer, rng.standard_normal(shape) * 1.5 + 0.5, rng)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_float32_matches_torch(training, rng):
    # float32 rounds differently from torch's kernels: compared as relative norms, not to the bit
    layer = BatchNorm(16)
    random_params(layer, rng, np.float32)
    module = torch_batchnorm(layer, 4).train(training)
    layer.train(training)
    x = batch_last((rng.standard_normal((32, 16, 14, 14)) * 3 + 5).astype(np.float32))
    R = rng.standard_normal(x.shape).astype(np.float32)
    y, dx, grads = step(layer, x, R, Workspace())
    assert y.dtype == dx.dtype == np.float32
    y_t, dx_t, grads_t = torch_step(module, x, R)
    assert rel(y, y_t) < 1e-5 and rel(dx, dx_t) < 1e-4
    for k in grads:
        assert rel(grads[k], grads_t[k]) < 1e-4, k
    for k, v in layer.buffers.items():
        assert rel(v, module.state_dict()[k].numpy()) < 1e-5, k


# ------------------------------------------------------------------------------------------- convolutions
@pytest.mark.parametrize("k, stride, padding", [(3, 1, 1), (3, 2, 1), (1, 2, 0), (1, 1, 0)])
def test_conv_without_bias_matches_torch(k, stride, padding, rng):
    layer = Conv2D(3, 5, k, stride=stride, padding=padding, bias=False)
    assert layer.param_shapes() == {"weight": (5, 3, k, k)}
    layer.params = {"weight": rng.standard_normal((5, 3, k, k))}
    module = nn.Conv2d(3, 5, k, stride=stride, padding=padding, bias=False).double()
    module.load_state_dict({"weight": torch.tensor(layer.params["weight"])})
    for x in (rng.standard_normal((3, 3, 7, 8)), batch_last(rng.standard_normal((2, 3, 8, 7)))):
        R = rng.standard_normal(module(torch.tensor(np.ascontiguousarray(x))).shape)
        y, dx, grads = step(layer, x, R, Workspace())
        y_t, dx_t, grads_t = torch_step(module, x, R)
        np.testing.assert_allclose(y, y_t, **F64)
        np.testing.assert_allclose(dx, dx_t, **F64)
        np.testing.assert_allclose(grads["weight"], grads_t["weight"], **F64)


# ------------------------------------------------------------------------------------------- residual block
class TorchBasicBlock(nn.Module):
    """torchvision's BasicBlock, written out: the reference the NumPy block is compared against."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


BLOCKS = [(4, 4, 1), (4, 6, 2), (3, 5, 1)]  # identity shortcut; 1x1 stride-2 shortcut; 1x1 for channels only


def make_block(cin, cout, stride, rng):
    block = basic_block(cin, cout, stride, dtype=np.float64)
    random_params(block, rng)
    module = TorchBasicBlock(cin, cout, stride).double()
    module.load_state_dict(torch_state(block))
    return block, module


@pytest.mark.parametrize("cin, cout, stride", BLOCKS)
def test_basic_block_has_torchvisions_names(cin, cout, stride):
    block, module = basic_block(cin, cout, stride), TorchBasicBlock(cin, cout, stride)
    assert block.param_shapes() == {k: tuple(p.shape) for k, p in module.named_parameters()}
    assert block.buffer_shapes() == {k: tuple(b.shape) for k, b in module.named_buffers()}
    assert (block.shortcut is None) == (module.downsample is None)


@pytest.mark.parametrize("cin, cout, stride", BLOCKS)
def test_basic_block_matches_torch_in_training_then_evaluation(cin, cout, stride, rng):
    block, module = make_block(cin, cout, stride, rng)
    ws = Workspace()
    for i in range(2):  # two training steps (running statistics updated twice), odd sizes, odd batch
        x = batch_last(rng.standard_normal((3, cin, 7, 7)) + 0.5 * i)
        R = rng.standard_normal((3, cout, 6 // stride + 1, 6 // stride + 1))
        y, dx, grads = step(block, x, R, ws)
        y_t, dx_t, grads_t = torch_step(module, x, R)
        np.testing.assert_allclose(y, y_t, **F64)
        np.testing.assert_allclose(dx, dx_t, **F64)
        assert set(grads) == set(grads_t)
        for k in grads:
            np.testing.assert_allclose(grads[k], grads_t[k], err_msg=k, **F64)
        assert_same_state(block, module, **F64)
    block.train(False)
    module.eval()
    assert all(not layer.training for layer in block.body.layers.values())
    for n in (1, 5):  # evaluation: any batch size, one image included
        x = rng.standard_normal((n, cin, 7, 7))
        R = rng.standard_normal((n, cout, 6 // stride + 1, 6 // stride + 1))
        y, dx, grads = step(block, x, R, ws)
        y_t, dx_t, grads_t = torch_step(module, x, R)
        np.testing.assert_allclose(y, y_t, **F64)
        np.testing.assert_allclose(dx, dx_t, **F64)
        for k in grads:
            np.testing.assert_allclose(grads[k], grads_t[k], err_msg=k, **F64)
    assert_same_state(block, module, **F64)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("cin, cout, stride", BLOCKS[:2])
def test_basic_block_gradients_match_finite_differences(cin, cout, stride, training, rng):
    block = basic_block(cin, cout, stride, dtype=np.float64)
    random_params(block, rng)
    block.train(training)
    check_finite_differences(block, rng.standard_normal((2, cin, 5, 5)), rng, samples=12)


def test_residual_gradient_flows_into_both_branches(rng):
    # body = a 1x1 convolution: y = relu(W x + x), so where y > 0, dx = W.T dy + dy
    conv = Conv2D(3, 3, 1, bias=False)
    block = Residual(Sequential([("conv", conv)]))
    block.params = {"conv.weight": rng.standard_normal((3, 3, 1, 1))}
    x, R = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    y, dx, grads = step(block, x, R)
    W = block.params["conv.weight"][:, :, 0, 0]
    ds = R * (y > 0)
    np.testing.assert_allclose(dx, np.einsum("fc,nfhw->nchw", W, ds) + ds, **F64)
    np.testing.assert_allclose(grads["conv.weight"][:, :, 0, 0], np.einsum("nfhw,nchw->fc", ds, x), **F64)


def test_block_parameters_and_buffers_can_be_views_into_flat_arrays(rng):
    # as a network holds them: one flat array of parameters, one of buffers, every layer's arrays views into them
    block = basic_block(2, 4, 2, dtype=np.float64)
    flat = {}
    for kind, shapes in (("params", block.param_shapes()), ("buffers", block.buffer_shapes())):
        flat[kind] = np.zeros(sum(int(np.prod(s)) for s in shapes.values()))
        views, start = {}, 0
        for name, shape in shapes.items():
            n = int(np.prod(shape))
            views[name] = flat[kind][start : start + n].reshape(shape)
            np.copyto(views[name], getattr(block, kind).get(name, 0.0))  # BN's initial values; conv weights 0
            start += n
        setattr(block, kind, views)
    assert all(np.shares_memory(v, flat["params"]) for v in block.params.values())
    assert all(np.shares_memory(v, flat["buffers"]) for v in block.buffers.values())
    assert block.body.layers["bn1"].buffers["running_var"].tolist() == [1.0] * 4
    flat["params"][:] = rng.standard_normal(flat["params"].size)
    x = rng.standard_normal((3, 2, 6, 6))
    before = flat["buffers"].copy()
    block.forward(x)
    assert block.buffers["downsample.1.num_batches_tracked"] == 1
    assert np.count_nonzero(flat["buffers"] != before) == 3 * (4 + 4 + 1)  # updated in place, every entry
    grads = {k: np.zeros_like(v) for k, v in block.params.items()}
    y, cache = block.forward(x)
    block.backward(np.ones_like(y), cache, grads)
    assert all(np.any(g != 0) for k, g in grads.items() if not k.endswith("bias")), "every weight gets a gradient"


def test_workspaces_reuse_gives_the_same_numbers_as_fresh_arrays(rng):
    block = basic_block(3, 4, 2, dtype=np.float64)
    random_params(block, rng)
    block.train(False)  # the same running statistics for every call
    ws = Workspace()
    for n in (4, 3, 4):  # the workspace is reused, then sized anew, then reused
        x, R = rng.standard_normal((n, 3, 8, 8)), rng.standard_normal((n, 4, 4, 4))
        with_ws = step(block, batch_last(x), R, ws)
        fresh = step(block, x, R)
        for a, b in zip(with_ws[:2], fresh[:2]):
            np.testing.assert_allclose(a, b, **F64)
        for k in fresh[2]:
            np.testing.assert_allclose(with_ws[2][k], fresh[2][k], err_msg=k, **F64)
    assert len(block._child_ws) == 1  # one set of child workspaces, kept for this workspace


def test_vgg_style_stack_runs_forward_and_backward(rng):
    # conv3x3-BN-ReLU twice, then the existing pooling: the VGG pattern from the layers here
    from lenet5.engines.numpy.layers import MaxPool2D

    net = Sequential(
        [
            ("0", Conv2D(1, 4, 3, padding=1, bias=False)),
            ("1", BatchNorm(4, dtype=np.float64)),
            ("2", ReLU()),
            ("3", Conv2D(4, 4, 3, padding=1, bias=False)),
            ("4", BatchNorm(4, dtype=np.float64)),
            ("5", ReLU()),
            ("6", MaxPool2D(2)),
        ]
    )
    random_params(net, rng)
    check_finite_differences(net, rng.standard_normal((2, 1, 6, 6)), rng, samples=10)
