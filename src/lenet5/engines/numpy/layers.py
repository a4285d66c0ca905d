"""The layers of LeNet-5, forward and backward written by hand with NumPy.

Every layer is a small class with two methods:

- ``forward(x, ws=None) -> (y, cache)``: the output and whatever the backward pass needs;
- ``backward(dy, cache, grads, ws=None) -> dx``: the gradient with respect to the input, and the gradients of
  the layer's parameters written into ``grads`` (a dict of arrays shaped like ``params``).

The cache is returned instead of being kept on the layer, so two threads can run the same layer on two halves
of a batch at once. Parameters live in ``self.params`` (views into the network's one flat buffer).

``ws`` is an optional workspace (lenet5.workspace.Workspace), one per layer and per thread, in which the
layer keeps its output and scratch arrays from one call to the next. Fresh arrays of a few MB each step cost
page faults that took half of the training time; reused ones are already mapped. Without ``ws`` every call
allocates (simple, for tests).

Images are NCHW as in PyTorch. Inside the network the arrays *look* NCHW but are *stored* batch-last
(memory order C, H, W, N): a convolution is one matmul ``W (F, C*k*k) @ cols (C*k*k, Ho*Wo*N)`` whose result
is already in that order, so nothing is copied between layers, and every strided view (im2col windows,
pooling windows, the shifted slices of the input gradient) still reads N contiguous values at a time.
NumPy's element-wise operations keep the memory order of their input, and Flatten's (N, C*H*W) is then a
transposed view that matmul takes as it is.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from lenet5.models import SCALED_TANH_A, SCALED_TANH_S
from lenet5.workspace import Workspace


def _buffer(ws: Workspace | None, key: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A C-ordered array for ``key``: from the workspace (zero-filled when made), else a fresh zeroed one."""
    return np.zeros(shape, dtype) if ws is None else ws(key, shape, dtype)


def _buffer_like(ws: Workspace | None, key: str, x: np.ndarray) -> np.ndarray:
    """An array shaped and laid out like x (as np.empty_like), from the workspace when there is one."""
    return np.empty_like(x) if ws is None else ws.like(key, x)


# Matmuls whose long side is the batch's pixels (conv1: 784 columns per image) run in blocks of this many
# columns: OpenBLAS on one thread ran W (6, 25) @ cols (25, 25088) and its weight gradient 2-2.7x faster in
# blocks of 2,048-4,096 columns than in one call (benchmarks/roofline.py, "inside the convolutions").
COLUMN_BLOCK = 4096


def _matmul_by_columns(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = a (M, K) @ b (K, L), computed COLUMN_BLOCK columns of b at a time (same values as one matmul)."""
    for start in range(0, b.shape[1], COLUMN_BLOCK):
        np.matmul(a, b[:, start : start + COLUMN_BLOCK], out=out[:, start : start + COLUMN_BLOCK])
    return out


def _weight_gradient(dy: np.ndarray, cols: np.ndarray, out: np.ndarray, ws: Workspace | None) -> np.ndarray:
    """out (F, K) = dy (F, L) @ cols (K, L).T, computed as cols @ dy.T in blocks of COLUMN_BLOCK columns
    (rounds differently from one matmul). The long dimension L is summed over; OpenBLAS ran conv2's
    (150, 3200) @ (3200, 16) 1.6x faster than (16, 3200) @ (3200, 150), and wrote a transposed out= slower
    than a copy of the small result."""
    part = _buffer(ws, "weight_grad_part", (cols.shape[0], dy.shape[0]), dy.dtype)  # (K, F)
    for start in range(0, dy.shape[1], COLUMN_BLOCK):
        np.matmul(cols[:, start : start + COLUMN_BLOCK], dy[:, start : start + COLUMN_BLOCK].T, out=part)
        if start == 0:
            np.copyto(out, part.T)
        else:
            out += part.T
    return out


def _windows(ws: Workspace | None, x: np.ndarray, k: int, s: int) -> np.ndarray:
    """The k x k windows of x (C, H, W, N) at stride s, as a view shaped (C, k, k, Ho, Wo, N); kept in the
    workspace for the same input buffer (building it cost ~60 us, 3% of a training step)."""

    def make(x):
        return sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s].transpose(0, 4, 5, 1, 2, 3)

    return make(x) if ws is None else ws.view(f"windows{k},{s}", x, make)


class Layer:
    """Base class: a layer without parameters.

    ``buffers`` holds state that is not trained but belongs to the model (BatchNorm's running statistics):
    no gradient, but a checkpoint carries it. ``training`` picks the behaviour of layers that differ between
    training and evaluation (BatchNorm: batch or running statistics); ``train(False)`` switches a layer and
    everything inside it to evaluation.
    """

    training = True

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def buffer_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def train(self, mode: bool = True) -> Layer:
        self.training = mode
        return self

    def forward(self, x: np.ndarray, ws: Workspace | None = None) -> tuple[np.ndarray, object]:
        raise NotImplementedError

    def backward(self, dy: np.ndarray, cache, grads: dict[str, np.ndarray], ws: Workspace | None = None):
        raise NotImplementedError


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as PyTorch): weight (F, C, k, k), bias (F,).

    Forward is im2col + one matmul, with the bias folded in: a row of ones under the columns and the bias as
    the weight matrix's last column (no pass over the output to add it, and its gradient, the sum of dy, comes
    out of the weight gradient's matmul). The input gradient is one matmul over k width-shifted copies of dy
    and k row-shifted slice-adds (never a loop per pixel). ``needs_input_grad=False`` skips it
    (the first layer: nobody needs the gradient of the image). ``mask`` (F, C) of 0/1 keeps only some
    input maps per output map (LeNet-5's C3 table): the weight is multiplied by it, and so is its gradient.
    ``bias=False`` leaves the bias out (a convolution followed by BatchNorm, whose shift makes it redundant):
    no row of ones, no ``bias`` parameter.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        needs_input_grad: bool = True,
        mask: np.ndarray | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.C, self.F, self.k = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.needs_input_grad = stride, padding, needs_input_grad
        self.mask = None if mask is None else np.asarray(mask, dtype=bool)[:, :, None, None]
        self.has_bias = bias

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {"weight": (self.F, self.C, self.k, self.k)}
        if self.has_bias:
            shapes["bias"] = (self.F,)
        return shapes

    def _weight_matrix(self) -> np.ndarray:
        w = self.params["weight"] if self.mask is None else self.params["weight"] * self.mask
        return w.reshape(self.F, -1)  # (F, C*k*k)

    def forward(self, x, ws=None):
        # x (N, C, H, W) -> out (N, F, Ho, Wo); cache: x's shape and the columns cols (C*k*k [+ 1], Ho*Wo*N)
        N, C, H, W = x.shape
        F, k, s, p = self.F, self.k, self.stride, self.padding
        Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1

        xc = x.transpose(1, 2, 3, 0)  # (C, H, W, N): free when x is stored batch-last
        if p:
            padded = _buffer(ws, "padded", (C, H + 2 * p, W + 2 * p, N), x.dtype)  # border stays 0
            padded[:, p : p + H, p : p + W] = xc
            xc = padded
        windows = _windows(ws, xc, k, s)  # (C, k, k, Ho, Wo, N), a view
        K = C * k * k
        rows = K + 1 if self.has_bias else K
        cols = _buffer(ws, "cols", (rows, Ho * Wo * N), x.dtype)  # row K: ones, the bias's input
        if self.has_bias and cols[K, 0] != 1:  # a new buffer
            cols[K] = 1
        np.copyto(cols[:K].reshape(C, k, k, Ho, Wo, N), windows)  # the one copy
        weights = _buffer(ws, "weights", (F, rows), x.dtype)  # [weight | bias]
        weights[:, :K] = self._weight_matrix()
        if self.has_bias:
            weights[:, K] = self.params["bias"]
        out = _matmul_by_columns(weights, cols, _buffer(ws, "out", (F, Ho * Wo * N), x.dtype))
        return out.reshape(F, Ho, Wo, N).transpose(3, 0, 1, 2), (x.shape, cols)

    def backward(self, dy, cache, grads, ws=None):
        # dy (N, F, Ho, Wo) -> dx (N, C, H, W) (None without needs_input_grad); grads weight (F, C, k, k), bias (F,)
        (N, C, H, W), cols = cache
        _, F, Ho, Wo = dy.shape
        k, s, p = self.k, self.stride, self.padding

        dy2 = dy.transpose(1, 2, 3, 0).reshape(F, Ho * Wo * N)  # free when dy is stored batch-last
        K = C * k * k
        both = _weight_gradient(dy2, cols, _buffer(ws, "weight_bias_grad", (F, cols.shape[0]), dy.dtype), ws)
        grads["weight"].reshape(F, K)[...] = both[:, :K]
        if self.has_bias:
            grads["bias"][...] = both[:, K]  # the ones row: the sum of dy over pixels and images
        if self.mask is not None:
            grads["weight"] *= self.mask
        if not self.needs_input_grad:
            return None

        # dx[c, s*ho + i, s*wo + j] += weight[f, c, i, j] * dy[f, ho, wo], as one matmul: the k shifts along the
        # width are copied out of a zero-padded (for s > 1, dilated) dy, the k along the height are added
        # after it. Measured on conv2: 0.37 ms a piece of 32 against 0.65 for a matmul into k*k column blocks
        # and k*k shifted slice-adds (the im2col transpose), which moved 3x the data.
        Wc = s * (Wo - 1) + k  # input columns the windows cover: the padded width, less any right-hand rest
        spread = _buffer(ws, "dy_spread", (F, Ho, Wc + k - 1, N), dy.dtype)  # zero but where dy lands
        spread[:, :, k - 1 : k - 1 + s * Wo : s] = dy2.reshape(F, Ho, Wo, N)
        shifted = _buffer(ws, "dy_shifted", (F, k, Ho, Wc, N), dy.dtype)  # [f, j, ho, w] = dy[f, ho, (w - j) / s]
        for j in range(k):
            shifted[:, j] = spread[:, :, k - 1 - j : k - 1 - j + Wc]
        w = self._weight_matrix().reshape(F, C, k, k).transpose(1, 2, 0, 3).reshape(C * k, F * k)  # [(c, i), (f, j)]
        rows = _buffer(ws, "dx_rows", (C * k, Ho * Wc * N), dy.dtype)
        np.matmul(w, shifted.reshape(F * k, Ho * Wc * N), out=rows)
        rows = rows.reshape(C, k, Ho, Wc, N)  # [c, i, ho, w]: what kernel row i sends to input row s*ho + i
        dx = _buffer(ws, "dx", (C, H + 2 * p, W + 2 * p, N), dy.dtype)
        dx.fill(0)
        for i in range(k):
            dx[:, i : i + s * Ho : s, :Wc] += rows[:, i]
        return dx[:, p : p + H, p : p + W].transpose(3, 0, 1, 2)


def _pool_views(x: np.ndarray, k: int) -> list[np.ndarray]:
    """The k*k strided views x[:, :, i::k, j::k] of non-overlapping k x k windows, in row-major order."""
    Ho, Wo = x.shape[2] // k, x.shape[3] // k
    return [x[:, :, i : i + k * Ho : k, j : j + k * Wo : k] for i in range(k) for j in range(k)]


def _pool_grad_buffer(ws: Workspace | None, x: np.ndarray, k: int) -> np.ndarray:
    """Gradient buffer laid out like x; rows/columns that no window covers (odd sizes) are zero."""
    dx = _buffer_like(ws, "dx", x)
    H, W = x.shape[2:]
    dx[:, :, H - H % k :] = 0
    dx[:, :, :, W - W % k :] = 0
    return dx


class MaxPool2D(Layer):
    """Max pooling over non-overlapping k x k windows (stride k), as nn.MaxPool2d(k).

    The gradient goes to the FIRST maximum of each window in row-major order, exactly as PyTorch does; on
    MNIST's flat black background ties are everywhere, so this matters for matching PyTorch.
    """

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.k = kernel_size

    def forward(self, x, ws=None):
        # x (N, C, H, W) -> out (N, C, H // k, W // k); cache: x and where each window's first maximum is
        if self.k == 2:
            return self._forward_2x2(x, ws)
        views = _pool_views(x, self.k)
        out = np.copy(views[0], order="K")
        winner = np.zeros(out.shape, dtype=np.uint8)  # index of the first maximum in each window
        for t, v in enumerate(views[1:], start=1):
            bigger = v > out  # strictly: an equal later value does not take over
            np.copyto(out, v, where=bigger)
            np.copyto(winner, t, where=bigger)
        return out, (x, winner)

    def _forward_2x2(self, x, ws):
        # A knock-out between the 4 views (top-left, top-right, bottom-left, bottom-right); each match
        # keeps the earlier player on a tie. Three 0/1 results say where each window's first maximum is.
        v00, v01, v10, v11 = _pool_views(x, 2)
        top = np.maximum(v00, v01, out=_buffer_like(ws, "top", v00))
        bottom = np.maximum(v10, v11, out=_buffer_like(ws, "bottom", v00))
        out = np.maximum(top, bottom, out=_buffer_like(ws, "out", v00))
        right_top = np.greater(v01, v00, out=_buffer_like(ws, "right_top", out))  # 1.0: v01 beat v00
        right_bottom = np.greater(v11, v10, out=_buffer_like(ws, "right_bottom", out))
        in_bottom = np.greater(bottom, top, out=_buffer_like(ws, "in_bottom", out))
        return out, (x, (right_top, right_bottom, in_bottom))

    def backward(self, dy, cache, grads, ws=None):
        x, routing = cache  # dy (N, C, H // k, W // k) -> dx (N, C, H, W), non-zero only at the maxima
        dx = _pool_grad_buffer(ws, x, self.k)
        views = _pool_views(dx, self.k)
        if self.k == 2:
            d00, d01, d10, d11 = views
            right_top, right_bottom, in_bottom = routing
            d_bottom = np.multiply(dy, in_bottom, out=_buffer_like(ws, "d_bottom", in_bottom))
            d_top = np.subtract(dy, d_bottom, out=_buffer_like(ws, "d_top", in_bottom))  # dy or 0, exactly
            np.multiply(d_top, right_top, out=d01)
            np.subtract(d_top, d01, out=d00)
            np.multiply(d_bottom, right_bottom, out=d11)
            np.subtract(d_bottom, d11, out=d10)
            return dx
        for t, view in enumerate(views):
            view[...] = np.where(routing == t, dy, 0)
        return dx


class AvgPool2D(Layer):
    """Average pooling over non-overlapping k x k windows (stride k), as nn.AvgPool2d(k)."""

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.k = kernel_size

    def forward(self, x, ws=None):
        # x (N, C, H, W) -> out (N, C, H // k, W // k): the mean of the k*k views
        views = _pool_views(x, self.k)
        out = _buffer_like(ws, "out", views[0])
        np.copyto(out, views[0])
        for v in views[1:]:
            out += v
        out *= 1.0 / (self.k * self.k)
        return out, x

    def backward(self, dy, cache, grads, ws=None):
        dx = _pool_grad_buffer(ws, cache, self.k)  # each input pixel gets 1/k^2 of its window's gradient
        share = np.multiply(dy, 1.0 / (self.k * self.k), out=_buffer_like(ws, "share", dy))
        for view in _pool_views(dx, self.k):
            view[...] = share
        return dx


class Dense(Layer):
    """Fully connected: y = x @ W.T + b with weight (out, in), bias (out,) as nn.Linear."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.n_in, self.n_out = in_features, out_features

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.n_out, self.n_in), "bias": (self.n_out,)}

    def forward(self, x, ws=None):
        N = x.shape[0]  # x (N, in) -> y (N, out)
        y = np.matmul(x, self.params["weight"].T, out=_buffer(ws, "y", (N, self.n_out), x.dtype))
        y += self.params["bias"]
        return y, x

    def backward(self, dy, cache, grads, ws=None):
        x = cache  # dy (N, out), x (N, in)
        np.matmul(dy.T, x, out=grads["weight"])
        np.sum(dy, axis=0, out=grads["bias"])
        # dx laid out like x: after Flatten that is batch-last, so the layers below keep their layout (a ReLU
        # multiplying a C-ordered dy with its batch-last mask took 14x as long)
        return np.matmul(dy, self.params["weight"], out=_buffer_like(ws, "dx", x))


class ReLU(Layer):
    def forward(self, x, ws=None):
        y = np.maximum(x, 0, out=_buffer_like(ws, "y", x))
        return y, y

    def backward(self, dy, cache, grads, ws=None):
        # PyTorch's convention: zero gradient where the output is 0
        return np.multiply(dy, cache > 0, out=_buffer_like(ws, "dx", cache))


class Tanh(Layer):
    """y = scale * tanh(slope * x). Tanh() is the plain tanh; ScaledTanh() is LeCun's 1.7159*tanh(2x/3)."""

    def __init__(self, scale: float = 1.0, slope: float = 1.0) -> None:
        super().__init__()
        self.scale, self.slope = scale, slope

    def forward(self, x, ws=None):
        t = np.multiply(x, self.slope, out=_buffer_like(ws, "t", x))
        np.tanh(t, out=t)
        y = np.multiply(t, self.scale, out=_buffer_like(ws, "y", x))
        return y, t

    def backward(self, dy, cache, grads, ws=None):
        t = cache  # dy/dx = scale * slope * (1 - tanh^2)
        d = np.multiply(t, t, out=_buffer_like(ws, "dx", t))
        np.subtract(1.0, d, out=d)
        d *= dy
        d *= self.scale * self.slope
        return d


class ScaledTanh(Tanh):
    """LeCun et al. 1998, Appendix A: f(a) = A tanh(S a) with A = 1.7159 and S = 2/3."""

    def __init__(self) -> None:
        super().__init__(scale=SCALED_TANH_A, slope=SCALED_TANH_S)


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W) in PyTorch's x.flatten(1) order (a view when stored batch-last)."""

    def forward(self, x, ws=None):
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, dy, cache, grads, ws=None):
        return dy.reshape(cache)
