"""A LeNet-5 of lenet5.models as a list of NumPy layers, with all parameters in one flat buffer.

Importable without PyTorch. The architecture (layers, parameter names and shapes) comes from
lenet5.models; this module only maps each layer kind to its hand-written forward/backward in layers.py.
"""

from __future__ import annotations

import numpy as np

from lenet5 import models
from lenet5.engines.numpy.layers import AvgPool2D, Conv2D, Dense, Flatten, Layer, MaxPool2D, ReLU, ScaledTanh
from lenet5.engines.numpy.losses import softmax_cross_entropy
from lenet5.workspace import Workspace


def _layer(spec, first: bool) -> tuple[str | None, Layer]:
    """The NumPy layer for one layer of a models.Architecture, with its parameter prefix (None: no parameters)."""
    if isinstance(spec, models.Conv):
        # nobody needs the gradient of the input image: the first convolution skips it
        return spec.name, Conv2D(
            spec.in_channels,
            spec.out_channels,
            spec.kernel,
            padding=spec.padding,
            needs_input_grad=not first,
            mask=spec.table,
        )
    if isinstance(spec, models.Dense):
        return spec.name, Dense(spec.n_in, spec.n_out)
    if isinstance(spec, models.Pool):
        return None, {"max": MaxPool2D, "avg": AvgPool2D}[spec.kind](spec.size)
    if isinstance(spec, models.Act):
        return None, {"relu": ReLU, "scaled_tanh": ScaledTanh}[spec.kind]()
    if isinstance(spec, models.Flatten):
        return None, Flatten()
    raise ValueError(f"the NumPy engine has no layer for {spec!r}")


def build_layers(model_name: str) -> list[tuple[str | None, Layer]]:
    """The layers in order, each with its parameter prefix (None for layers without parameters)."""
    specs = list(models.architecture(model_name).layers)
    # ReLU then max-pooling = max-pooling then ReLU, with the same values and the same gradients (max and
    # ReLU commute, and the first maximum is the same whenever the gradient is not zero); pooling first
    # lets the ReLU work on 4x fewer values.
    for i in range(len(specs) - 1):
        if specs[i] == models.Act("relu") and isinstance(specs[i + 1], models.Pool) and specs[i + 1].kind == "max":
            specs[i], specs[i + 1] = specs[i + 1], specs[i]
    return [_layer(spec, first=i == 0) for i, spec in enumerate(specs)]


def parameter_count(model_name: str) -> int:
    return sum(int(np.prod(shape)) for shape in models.parameter_shapes(model_name).values())


class Network:
    """The layers plus one flat parameter buffer; each layer's params are views into it."""

    def __init__(self, model_name: str, dtype=np.float32, params: np.ndarray | None = None) -> None:
        """``params``: a flat buffer of parameter_count(model_name) values to use (shared with worker
        processes, see workers.py); without it the network has its own, zero-filled."""
        self.model_name = model_name
        self.layers = build_layers(model_name)
        self.shapes = models.parameter_shapes(model_name)
        self.size = parameter_count(model_name)
        self.params = np.zeros(self.size, dtype=dtype) if params is None else params
        if self.params.shape != (self.size,) or self.params.dtype != np.dtype(dtype):
            raise ValueError(f"params must be a flat {np.dtype(dtype)} buffer of {self.size} values")
        for prefix, layer in self.layers:
            if prefix is not None:
                layer.params = self.layer_views(self.params)[prefix]

    def named_views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """{'conv1.weight': view shaped (6, 1, 5, 5), ...} into a flat buffer of self.size values."""
        views, start = {}, 0
        for name, shape in self.shapes.items():
            n = int(np.prod(shape))
            views[name] = flat[start : start + n].reshape(shape)
            start += n
        return views

    def layer_views(self, flat: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """{'conv1': {'weight': view, 'bias': view}, ...}: what a layer's backward writes its gradients to."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for name, view in self.named_views(flat).items():
            prefix, kind = name.rsplit(".", 1)
            out.setdefault(prefix, {})[kind] = view
        return out

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
