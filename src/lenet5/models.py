"""What a LeNet-5 is, independent of any engine: the architectures, their parameters, their initial weights.

Every engine (engines/numpy, engines/torch), the checkpoint format and the ONNX export read the same
description from here, so a model is defined once. Parameters use PyTorch's names and layouts
(``conv1.weight`` (6, 1, 5, 5), ``fc1.weight`` (120, 400), ...), in the order of the layers.

- ``modern``: conv1 6@5x5 pad 2 -> ReLU -> maxpool 2 -> conv2 16@5x5 -> ReLU -> maxpool 2 -> flatten 400
  -> fc1 120 -> ReLU -> fc2 84 -> ReLU -> fc3 10 logits.
- ``classic`` (LeCun et al. 1998): the 28x28 digit padded by 2 to 32x32 (conv1's padding) -> C1 6@5x5 ->
  scaled tanh -> S2 avgpool 2 -> C3 16@5x5 wired by the paper's Table I -> scaled tanh -> S4 avgpool 2 ->
  C5 120@5x5 (1x1 output) -> scaled tanh -> F6 84 -> scaled tanh -> 10 logits. The paper's trainable
  subsampling coefficients and its RBF output layer are replaced by plain average pooling and a linear layer.

Adding a model: one entry in MODELS built from the layer kinds below (Conv, Dense, Pool, Act, Flatten).
A new layer kind also needs its forward/backward in each engine and a node in export.py.

Initializers take a numpy.random.Generator, so the same seed gives the same weights in every engine.
fan_in = inputs per output unit (C*k*k for a conv weight (F, C, k, k), n_in for a dense weight (n_out, n_in)),
fan_out = F*k*k or n_out, as torch.nn.init computes them.

- kaiming (He et al. 2015): variance 2/fan_in, for ReLU networks.
- xavier (Glorot & Bengio 2010): variance 2/(fan_in + fan_out), for tanh networks.
- lecun (LeCun et al. 1998): variance 1/fan_in.
- torch_default: what nn.Conv2d / nn.Linear do on their own: weights U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  (kaiming_uniform with a=sqrt(5)), biases the same.
A uniform U(-b, b) has variance b^2/3, so each uniform scheme uses b = sqrt(3 * variance).
Biases are zero, except for torch_default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NUM_CLASSES = 10
IMAGE_SIZE = 28  # MNIST's digits are IMAGE_SIZE x IMAGE_SIZE grey pixels
INPUT_SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)  # one grey digit, (C, H, W)


# --------------------------------------------------------------------------------------------- layers
@dataclass(frozen=True)
class Conv:
    """A 2-D convolution (cross-correlation) with weight (out, in, k, k) and bias (out,); stride 1.

    ``table`` (out, in) of booleans keeps only some input maps per output map (LeNet-5's C3): the weights
    outside it are held at 0.
    """

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    padding: int = 0
    table: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.out_channels, self.in_channels, self.kernel, self.kernel), "bias": (self.out_channels,)}


@dataclass(frozen=True)
class Dense:
    """y = x @ weight.T + bias, weight (n_out, n_in) as torch.nn.Linear."""

    name: str
    n_in: int
    n_out: int

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.n_out, self.n_in), "bias": (self.n_out,)}


@dataclass(frozen=True)
class Pool:
    """Non-overlapping ``kind`` ('max' or 'avg') pooling over size x size windows."""

    kind: str
    size: int = 2


@dataclass(frozen=True)
class Act:
    """An element-wise activation: 'relu', or 'scaled_tanh' (LeCun's 1.7159 * tanh(2x/3))."""

    kind: str


@dataclass(frozen=True)
class Flatten:
    """(N, C, H, W) -> (N, C*H*W)."""


SCALED_TANH_A, SCALED_TANH_S = 1.7159, 2.0 / 3.0  # f(x) = A * tanh(S * x)


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


# --------------------------------------------------------------------------------------------- models
@dataclass(frozen=True)
class Architecture:
    name: str
    summary: str
    layers: tuple


MODELS: dict[str, Architecture] = {
    "modern": Architecture(
        "modern",
        "ReLU, max pooling, full connections",
        (
            Conv("conv1", 1, 6, 5, padding=2),
            Act("relu"),
            Pool("max"),  # (N, 6, 14, 14)
            Conv("conv2", 6, 16, 5),
            Act("relu"),
            Pool("max"),  # (N, 16, 5, 5)
            Flatten(),  # (N, 400)
            Dense("fc1", 400, 120),
            Act("relu"),
            Dense("fc2", 120, 84),
            Act("relu"),
            Dense("fc3", 84, NUM_CLASSES),
        ),
    ),
    "classic": Architecture(
        "classic",
        "LeCun et al. 1998: scaled tanh, average pooling, the C3 table",
        (
            Conv("conv1", 1, 6, 5, padding=2),
            Act("scaled_tanh"),
            Pool("avg"),  # (N, 6, 14, 14)
            Conv("conv2", 6, 16, 5, table=C3_TABLE),
            Act("scaled_tanh"),
            Pool("avg"),  # (N, 16, 5, 5)
            Conv("conv3", 16, 120, 5),
            Act("scaled_tanh"),  # (N, 120, 1, 1)
            Flatten(),  # (N, 120)
            Dense("fc1", 120, 84),
            Act("scaled_tanh"),
            Dense("fc2", 84, NUM_CLASSES),
        ),
    ),
}


def architecture(name: str) -> Architecture:
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; models are: {', '.join(MODELS)}") from None


def parameter_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Ordered {'conv1.weight': (6, 1, 5, 5), 'conv1.bias': (6,), ...}, PyTorch's names and layouts."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in architecture(name).layers:
        if isinstance(layer, (Conv, Dense)):
            for kind, shape in layer.param_shapes().items():
                shapes[f"{layer.name}.{kind}"] = shape
    return shapes


def check_state_dict(name: str, state: dict) -> None:
    """A state dict for model ``name``: every parameter present, nothing else, each of its shape and a float
    dtype; ValueError naming the first that is not."""
    shapes = parameter_shapes(name)
    for key in shapes:
        if key not in state:
            raise ValueError(f"state dict is missing '{key}' (the {name} model needs it)")
    for key, value in state.items():
        if key not in shapes:
            raise ValueError(f"unexpected key '{key}' in state dict for the {name} model")
        value = np.asarray(value)
        if tuple(value.shape) != shapes[key]:
            raise ValueError(f"'{key}' has shape {tuple(value.shape)}, expected {shapes[key]}")
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"'{key}' has dtype {value.dtype}, expected a floating-point array")


def model_for_weights(names) -> str | None:
    """The model whose parameters are exactly these names, or None."""
    names = set(names)
    return next((model for model in MODELS if names == set(parameter_shapes(model))), None)


def summary_rows(name: str) -> list[tuple[str, tuple[int, ...], int]]:
    """(layer, output shape (C, H, W) or (n,), parameters) for each layer of a model, for one input digit."""
    c, h, w = INPUT_SHAPE
    shape: tuple[int, ...] = INPUT_SHAPE
    rows = []
    for layer in architecture(name).layers:
        params = 0
        if isinstance(layer, Conv):
            h, w = h + 2 * layer.padding - layer.kernel + 1, w + 2 * layer.padding - layer.kernel + 1
            c, shape = layer.out_channels, (layer.out_channels, h, w)
            params = (
                int(
                    layer.table.sum() * layer.kernel**2
                    if layer.table is not None
                    else math.prod(layer.param_shapes()["weight"])
                )
                + layer.out_channels
            )
            label = f"{layer.name} conv {layer.kernel}x{layer.kernel}" + (
                f" pad {layer.padding}" if layer.padding else ""
            )
        elif isinstance(layer, Pool):
            h, w = h // layer.size, w // layer.size
            shape = (c, h, w)
            label = f"{layer.kind}pool {layer.size}"
        elif isinstance(layer, Flatten):
            shape = (c * h * w,)
            label = "flatten"
        elif isinstance(layer, Dense):
            shape = (layer.n_out,)
            params = layer.n_in * layer.n_out + layer.n_out
            label = f"{layer.name} dense"
        else:
            label = layer.kind
        rows.append((label, shape, params))
    return rows


def summary_lines(name: str) -> list[str]:
    """A model summary for people (Keras' model.summary()): each layer, its output shape, its parameters."""
    rows = summary_rows(name)
    lines = [f"{name} LeNet-5 ({architecture(name).summary})", f"  {'layer':<22}{'output shape':<16}{'parameters':>10}"]
    for label, shape, params in rows:
        lines.append(f"  {label:<22}{'x'.join(map(str, shape)):<16}{params if params else '':>10}")
    lines.append(f"  {'total':<38}{sum(p for _, _, p in rows):>10}")
    return lines


# ---------------------------------------------------------------------------------------- initializers
INITIALIZERS = (
    "kaiming_normal",
    "kaiming_uniform",
    "xavier_normal",
    "xavier_uniform",
    "lecun_normal",
    "lecun_uniform",
    "torch_default",
)


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight shaped (out, in, *kernel)."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def weight_std(scheme: str, shape: tuple[int, ...]) -> float:
    """Standard deviation the scheme wants for a weight of this shape."""
    fan_in, fan_out = fans(shape)
    family = scheme.rsplit("_", 1)[0]
    if scheme not in INITIALIZERS:
        raise ValueError(f"unknown init scheme {scheme!r}; schemes are: {', '.join(INITIALIZERS)}")
    if family == "kaiming":
        return math.sqrt(2.0 / fan_in)
    if family == "xavier":
        return math.sqrt(2.0 / (fan_in + fan_out))
    if family == "lecun":
        return math.sqrt(1.0 / fan_in)
    return 1.0 / math.sqrt(3.0 * fan_in)  # torch_default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))


def init_weight(scheme: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A float64 weight array drawn as the scheme says."""
    std = weight_std(scheme, shape)
    if scheme.endswith("_normal"):
        return rng.normal(0.0, std, size=shape)
    bound = math.sqrt(3.0) * std
    return rng.uniform(-bound, bound, size=shape)


def init_bias(scheme: str, weight_shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Zero, or for torch_default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as nn.Conv2d/nn.Linear."""
    n = weight_shape[0]
    if scheme != "torch_default":
        weight_std(scheme, weight_shape)  # validates the name
        return np.zeros(n)
    bound = 1.0 / math.sqrt(fans(weight_shape)[0])
    return rng.uniform(-bound, bound, size=n)


def init_parameters(scheme: str, shapes: dict[str, tuple[int, ...]], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw every parameter of a network, in the order of ``shapes`` ('<layer>.weight' before '<layer>.bias')."""
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        layer, kind = name.rsplit(".", 1)
        if kind == "weight":
            out[name] = init_weight(scheme, shape, rng)
        else:
            out[name] = init_bias(scheme, shapes[f"{layer}.weight"], rng)
    return out


def initial_weights(model: str, scheme: str, seed: int, dtype: str = "float32") -> dict[str, np.ndarray]:
    """The seeded initial weights every engine starts from, with the weights outside a Conv's table at 0."""
    weights = init_parameters(scheme, parameter_shapes(model), np.random.default_rng(seed))
    for layer in architecture(model).layers:
        if isinstance(layer, Conv) and layer.table is not None:
            weights[f"{layer.name}.weight"] *= layer.table[:, :, None, None]
    return {key: value.astype(dtype) for key, value in weights.items()}
