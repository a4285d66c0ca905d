"""A model of lenet5.models as a list of NumPy layers, with all parameters in one flat buffer and all
buffers (BatchNorm's running statistics) in another.

Importable without PyTorch. The architecture (layers, parameter names and shapes) comes from
lenet5.models; this module only maps each layer kind to its hand-written forward/backward in layers.py
(and blocks.py: BatchNorm, residual blocks).
"""

from __future__ import annotations

import numpy as np

from lenet5 import models
from lenet5.engines.numpy.blocks import BatchNorm, Residual, Sequential
from lenet5.engines.numpy.layers import AvgPool2D, Conv2D, Dense, Flatten, Layer, MaxPool2D, ReLU, ScaledTanh
from lenet5.engines.numpy.losses import softmax_cross_entropy
from lenet5.workspace import Workspace


def _layer(spec, first: bool, dtype=np.float32) -> tuple[str | None, Layer]:
    """The NumPy layer for one layer of a models.Architecture, with its parameter prefix (None: no parameters)."""
    if isinstance(spec, models.Conv):
        # nobody needs the gradient of the input image: the first convolution skips it
        return spec.name, Conv2D(
            spec.in_channels,
            spec.out_channels,
            spec.kernel,
            stride=spec.stride,
            padding=spec.padding,
            needs_input_grad=not first,
            mask=spec.table,
            bias=spec.bias,
        )
    if isinstance(spec, models.BatchNorm):
        return spec.name, BatchNorm(spec.channels, eps=models.BN_EPS, momentum=models.BN_MOMENTUM, dtype=dtype)
    if isinstance(spec, models.Residual):
        shortcut = None if spec.shortcut is None else _sequential(spec.shortcut, dtype)
        return spec.name, Residual(_sequential(spec.body, dtype), shortcut, shortcut_name=models.SHORTCUT)
    if isinstance(spec, models.Dense):
        return spec.name, Dense(spec.n_in, spec.n_out)
    if isinstance(spec, models.Pool):
        return None, {"max": MaxPool2D, "avg": AvgPool2D}[spec.kind](spec.size)
    if isinstance(spec, models.Act):
        return None, {"relu": ReLU, "scaled_tanh": ScaledTanh}[spec.kind]()
    if isinstance(spec, models.Flatten):
        return None, Flatten()
    raise ValueError(f"the NumPy engine has no layer for {spec!r}")


def _sequential(specs: tuple, dtype) -> Sequential:
    """The layers of a residual block's branch, under their names (parameters as '<name>.<kind>'); layers
    without parameters are named by their place."""
    layers = [_layer(spec, first=False, dtype=dtype) for spec in specs]
    return Sequential([(prefix if prefix is not None else f"_{i}", layer) for i, (prefix, layer) in enumerate(layers)])


def build_layers(model_name: str, dtype=np.float32) -> list[tuple[str | None, Layer]]:
    """The layers in order, each with its parameter prefix (None for layers without parameters)."""
    specs = list(models.architecture(model_name).layers)
    # ReLU then max-pooling = max-pooling then ReLU, with the same values and the same gradients (max and
    # ReLU commute, and the first maximum is the same whenever the gradient is not zero); pooling first
    # lets the ReLU work on 4x fewer values.
    for i in range(len(specs) - 1):
        if specs[i] == models.Act("relu") and isinstance(specs[i + 1], models.Pool) and specs[i + 1].kind == "max":
            specs[i], specs[i + 1] = specs[i + 1], specs[i]
    return [_layer(spec, first=i == 0, dtype=dtype) for i, spec in enumerate(specs)]


def parameter_count(model_name: str) -> int:
    return sum(int(np.prod(shape)) for shape in models.parameter_shapes(model_name).values())


def _views(shapes: dict[str, tuple[int, ...]], flat: np.ndarray) -> dict[str, np.ndarray]:
    """{name: view of ``flat`` shaped shapes[name]}, the arrays one after another in the order of ``shapes``."""
    views, start = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        views[name] = flat[start : start + n].reshape(shape)
        start += n
    return views


def _by_layer(views: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """{'conv1': {'weight': ..., 'bias': ...}, 'block2': {'conv1.weight': ..., 'downsample.0.weight': ...}}:
    names grouped by the top-level layer (the part before the first dot), the rest as that layer names it."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, view in views.items():
        prefix, key = name.split(".", 1)
        out.setdefault(prefix, {})[key] = view
    return out


class Network:
    """The layers plus one flat parameter buffer and one flat buffer of buffers (BatchNorm's running
    statistics, empty for LeNet-5); each layer's params and buffers are views into them.

    ``train(mode)`` picks training or evaluation behaviour for every layer (BatchNorm: batch or running
    statistics); a new network is in training mode.
    """

    def __init__(self, model_name: str, dtype=np.float32, params: np.ndarray | None = None) -> None:
        """``params``: a flat buffer of parameter_count(model_name) values to use (shared with worker
        processes, see workers.py); without it the network has its own, zero-filled. Buffers start as a fresh
        BatchNorm's (running mean 0, running variance 1, no batches tracked)."""
        self.model_name = model_name
        self.layers = build_layers(model_name, dtype)
        self.shapes = models.parameter_shapes(model_name)
        self.buffer_shapes = models.buffer_shapes(model_name)
        self.size = parameter_count(model_name)
        self.params = np.zeros(self.size, dtype=dtype) if params is None else params
        if self.params.shape != (self.size,) or self.params.dtype != np.dtype(dtype):
            raise ValueError(f"params must be a flat {np.dtype(dtype)} buffer of {self.size} values")
        # num_batches_tracked is kept as a float count here (exact up to 2^24 batches in float32), an int64
        # in the state dict
        self.buffers = np.zeros(sum(int(np.prod(s)) for s in self.buffer_shapes.values()), dtype=dtype)
        for name, view in self.named_buffers().items():
            if name.endswith(".running_var"):
                view[...] = 1
        params_by_layer, buffers_by_layer = self.layer_views(self.params), _by_layer(self.named_buffers())
        for prefix, layer in self.layers:
            if prefix is not None:
                layer.params = params_by_layer[prefix]
                if prefix in buffers_by_layer:
                    layer.buffers = buffers_by_layer[prefix]

    def named_views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """{'conv1.weight': view shaped (6, 1, 5, 5), ...} into a flat buffer of self.size values."""
        return _views(self.shapes, flat)

    def named_buffers(self) -> dict[str, np.ndarray]:
        """{'bn1.running_mean': view shaped (32,), ...} into the network's buffers."""
        return _views(self.buffer_shapes, self.buffers)

    def layer_views(self, flat: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """{'conv1': {'weight': view, 'bias': view}, 'block1': {'conv1.weight': view, ...}, ...}: what a layer's
        backward writes its gradients to, by the top-level layer's name."""
        return _by_layer(self.named_views(flat))

    def train(self, mode: bool = True) -> Network:
        """Training (True) or evaluation (False) behaviour for every layer."""
        for _, layer in self.layers:
            layer.train(mode)
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters, then the buffers (num_batches_tracked as int64, as torch's)."""
        state = {key: view.copy() for key, view in self.named_views(self.params).items()}
        for key, view in self.named_buffers().items():
            state[key] = np.array(np.rint(view), np.int64) if models.is_count(key) else view.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Take the values of a state dict (checked whole first, models.check_state_dict)."""
        models.check_state_dict(self.model_name, state)
        dtype = self.params.dtype
        for views in (self.named_views(self.params), self.named_buffers()):
            for key, view in views.items():
                view[...] = np.asarray(state[key], dtype=dtype)
        self.apply_masks()

    def apply_masks(self) -> None:
        """Zero the weights a connection table leaves out (classic conv2), so the state dict shows them as 0."""
        for _, layer in self.layers:
            if getattr(layer, "mask", None) is not None:
                layer.params["weight"] *= layer.mask

    def new_workspace(self) -> list[Workspace]:
        """Scratch space for one thread: one Workspace per layer (see layers.py); pass it to forward/backward."""
        return [Workspace() for _ in self.layers]

    def forward(self, x: np.ndarray, keep_caches: bool = True, ws: list[Workspace] | None = None):
        """x (N, 1, 28, 28) -> (logits (N, 10), the caches backward needs; empty if keep_caches=False)."""
        ws = ws or [None] * len(self.layers)
        caches = []
        for (_, layer), layer_ws in zip(self.layers, ws):
            x, cache = layer.forward(x, layer_ws)
            if keep_caches:
                caches.append(cache)
        return x, caches

    def backward(
        self,
        dlogits: np.ndarray,
        caches: list,
        grads: dict[str, dict[str, np.ndarray]],
        ws: list[Workspace] | None = None,
    ) -> None:
        """Write every parameter gradient into ``grads`` (see layer_views), from the top layer down."""
        ws = ws or [None] * len(self.layers)
        d = dlogits
        for i in reversed(range(len(self.layers))):
            prefix, layer = self.layers[i]
            d = layer.backward(d, caches[i], grads.get(prefix, {}), ws[i])

    def loss_and_grad(
        self,
        x,
        labels,
        grads,
        label_smoothing: float = 0.0,
        total: int | None = None,
        ws: list[Workspace] | None = None,
    ) -> tuple[float, int]:
        """Forward + loss + backward on one batch (or one part of it, see softmax_cross_entropy's ``total``).

        Returns (loss, number of correct predictions); the gradients land in ``grads``.
        """
        logits, caches = self.forward(x, ws=ws)
        loss, dlogits = softmax_cross_entropy(logits, labels, label_smoothing, total)
        n_correct = int(np.count_nonzero(logits.argmax(axis=1) == labels))
        self.backward(dlogits, caches, grads, ws)
        return loss, n_correct
