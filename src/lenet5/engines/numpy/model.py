"""LeNet-5 as a list of layers, with all parameters in one flat buffer (importable without PyTorch).

Two variants, with PyTorch's parameter names and layouts:

- ``modern``: conv1 6@5x5 pad 2 -> ReLU -> maxpool 2 -> conv2 16@5x5 -> ReLU -> maxpool 2 -> flatten 400
  -> fc1 120 -> ReLU -> fc2 84 -> ReLU -> fc3 10 logits.
- ``classic`` (LeCun et al. 1998): the 28x28 digit padded by 2 to 32x32 (conv1's padding) -> C1 6@5x5 ->
  scaled tanh -> S2 avgpool 2 -> C3 16@5x5 wired by the paper's Table I -> scaled tanh -> S4 avgpool 2 ->
  C5 120@5x5 (1x1 output) -> scaled tanh -> F6 84 -> scaled tanh -> 10 logits. The paper's trainable
  subsampling coefficients and its RBF output layer are replaced by plain average pooling and a linear layer.
"""

from __future__ import annotations

import numpy as np

from lenet5.engines.numpy.layers import AvgPool2D, Conv2D, Dense, Flatten, Layer, MaxPool2D, ReLU, ScaledTanh
from lenet5.engines.numpy.losses import softmax_cross_entropy

MODELS = ("modern", "classic")


def _c3_table() -> np.ndarray:
    """LeCun et al. 1998, Table I: which S2 maps (columns) each C3 map (rows) reads."""
    table = np.zeros((16, 6), dtype=bool)
    for j in range(6):
        table[j, [(j + d) % 6 for d in range(3)]] = True  # maps 0-5: 3 neighbouring inputs
        table[6 + j, [(j + d) % 6 for d in range(4)]] = True  # maps 6-11: 4 neighbouring inputs
    for j, inputs in enumerate([(0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5)]):
        table[12 + j, list(inputs)] = True  # maps 12-14: 4 non-neighbouring inputs
    table[15] = True  # map 15: all 6
    return table


C3_TABLE = _c3_table()  # (16, 6): row = C3 output map, column = S2 input map; 60 connections
C3_TABLE.flags.writeable = False


def build_layers(model_name: str) -> list[tuple[str | None, Layer]]:
    """The layers in order, each with its parameter prefix (None for layers without parameters)."""
    if model_name == "modern":
        # Max-pooling before the ReLU gives the same values and the same gradients as ReLU then pooling
        # (max and ReLU commute, and the first maximum is the same whenever the gradient is not zero),
        # while the ReLU works on 4x fewer values.
        return [
            ("conv1", Conv2D(1, 6, 5, padding=2, needs_input_grad=False)),
            (None, MaxPool2D(2)), (None, ReLU()),
            ("conv2", Conv2D(6, 16, 5)),
            (None, MaxPool2D(2)), (None, ReLU()),
            (None, Flatten()),
            ("fc1", Dense(400, 120)), (None, ReLU()),
            ("fc2", Dense(120, 84)), (None, ReLU()),
            ("fc3", Dense(84, 10)),
        ]
    if model_name == "classic":
        return [
            ("conv1", Conv2D(1, 6, 5, padding=2, needs_input_grad=False)), (None, ScaledTanh()),
            (None, AvgPool2D(2)),
            ("conv2", Conv2D(6, 16, 5, mask=C3_TABLE)), (None, ScaledTanh()),
            (None, AvgPool2D(2)),
            ("conv3", Conv2D(16, 120, 5)), (None, ScaledTanh()),
            (None, Flatten()),
            ("fc1", Dense(120, 84)), (None, ScaledTanh()),
            ("fc2", Dense(84, 10)),
        ]
    raise ValueError(f"unknown model {model_name!r}; models are: {', '.join(MODELS)}")


def parameter_shapes(model_name: str) -> dict[str, tuple[int, ...]]:
    """Ordered {'conv1.weight': (6, 1, 5, 5), 'conv1.bias': (6,), ...}, PyTorch's names and layouts."""
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, layer in build_layers(model_name):
        for kind, shape in layer.param_shapes().items():
            shapes[f"{prefix}.{kind}"] = shape
    return shapes


class Network:
    """The layers plus one flat parameter buffer; each layer's params are views into it."""

    def __init__(self, model_name: str, dtype=np.float32) -> None:
        self.model_name = model_name
        self.layers = build_layers(model_name)
        self.shapes = parameter_shapes(model_name)
        self.size = sum(int(np.prod(s)) for s in self.shapes.values())
        self.params = np.zeros(self.size, dtype=dtype)
        for prefix, layer in self.layers:
            if prefix is not None:
                layer.params = self.layer_views(self.params)[prefix]

    def named_views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """{'conv1.weight': view shaped (6, 1, 5, 5), ...} into a flat buffer of self.size values."""
        views, start = {}, 0
        for name, shape in self.shapes.items():
            n = int(np.prod(shape))
            views[name] = flat[start:start + n].reshape(shape)
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

    def new_workspace(self) -> list[dict]:
        """Scratch space for one thread: one dict per layer (see layers.py); pass it to forward/backward."""
        return [{} for _ in self.layers]

    def forward(self, x: np.ndarray, keep_caches: bool = True, ws: list[dict] | None = None):
        """x (N, 1, 28, 28) -> (logits (N, 10), the caches backward needs; empty if keep_caches=False)."""
        ws = ws or [None] * len(self.layers)
        caches = []
        for (_, layer), layer_ws in zip(self.layers, ws):
            x, cache = layer.forward(x, layer_ws)
            if keep_caches:
                caches.append(cache)
        return x, caches

    def backward(self, dlogits: np.ndarray, caches: list, grads: dict[str, dict[str, np.ndarray]],
                 ws: list[dict] | None = None) -> None:
        """Write every parameter gradient into ``grads`` (see layer_views), from the top layer down."""
        ws = ws or [None] * len(self.layers)
        d = dlogits
        for i in reversed(range(len(self.layers))):
            prefix, layer = self.layers[i]
            d = layer.backward(d, caches[i], grads.get(prefix, {}), ws[i])

    def loss_and_grad(self, x, labels, grads, label_smoothing: float = 0.0, total: int | None = None,
                      ws: list[dict] | None = None) -> tuple[float, int]:
        """Forward + loss + backward on one batch (or one part of it, see softmax_cross_entropy's ``total``).

        Returns (loss, number of correct predictions); the gradients land in ``grads``.
        """
        logits, caches = self.forward(x, ws=ws)
        loss, dlogits = softmax_cross_entropy(logits, labels, label_smoothing, total)
        n_correct = int(np.count_nonzero(logits.argmax(axis=1) == labels))
        self.backward(dlogits, caches, grads, ws)
        return loss, n_correct
