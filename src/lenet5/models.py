"""What each model is, independent of any engine: the architectures, their parameters, their initial weights.

Every engine (engines/numpy, engines/torch), the checkpoint format and the ONNX export read the same
description from here, so a model is defined once. Parameters use PyTorch's names and layouts
(``conv1.weight`` (6, 1, 5, 5), ``fc1.weight`` (120, 400), ...), in the order of the layers. A model's state
dict is its parameters plus its buffers (BatchNorm's running statistics, ``<name>.running_mean``, ...), as
torch's ``state_dict()``: state that is not trained but belongs to the model and travels in checkpoints.

- ``modern``: conv1 6@5x5 pad 2 -> ReLU -> maxpool 2 -> conv2 16@5x5 -> ReLU -> maxpool 2 -> flatten 400
  -> fc1 120 -> ReLU -> fc2 84 -> ReLU -> fc3 10 logits.
- ``classic`` (LeCun et al. 1998): the 28x28 digit padded by 2 to 32x32 (conv1's padding) -> C1 6@5x5 ->
  scaled tanh -> S2 avgpool 2 -> C3 16@5x5 wired by the paper's Table I -> scaled tanh -> S4 avgpool 2 ->
  C5 120@5x5 (1x1 output) -> scaled tanh -> F6 84 -> scaled tanh -> 10 logits. The paper's trainable
  subsampling coefficients and its RBF output layer are replaced by plain average pooling and a linear layer.
- ``vgg`` (after Simonyan & Zisserman 2015): two stages of two 3x3 convolutions (32, then 64 maps), each
  convolution followed by BatchNorm and ReLU, each stage by 2x2 max pooling; global average pooling of the 7x7
  maps, then a dense layer to the 10 logits.
- ``resnet`` (after He et al. 2016, the CIFAR ResNets of section 4.2): a 3x3 stem of 16 maps with BatchNorm and
  ReLU, three basic blocks (16 maps at 28x28, 32 at 14x14, 64 at 7x7; the last two start with a stride-2
  convolution and take a 1x1 convolution with BatchNorm as their shortcut), global average pooling, dense 10.

The convolutions before a BatchNorm have no bias (BatchNorm's shift replaces it). BatchNorm normalises over the
whole batch in training: the NumPy engine runs a model that has one with each batch in one piece, in the
calling thread (engines/numpy/executors.py).

Adding a model: one entry in MODELS built from the layer kinds below (Conv, Dense, Pool, Act, Flatten,
BatchNorm, Residual). A new layer kind also needs its forward/backward in each engine and a node in export.py.

Initializers take a numpy.random.Generator, so the same seed gives the same weights in every engine.
fan_in = inputs per output unit (C*k*k for a conv weight (F, C, k, k), n_in for a dense weight (n_out, n_in)),
fan_out = F*k*k or n_out, as torch.nn.init computes them.

- kaiming (He et al. 2015): variance 2/fan_in, for ReLU networks.
- xavier (Glorot & Bengio 2010): variance 2/(fan_in + fan_out), for tanh networks.
- lecun (LeCun et al. 1998): variance 1/fan_in.
- torch_default: what nn.Conv2d / nn.Linear do on their own: weights U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  (kaiming_uniform with a=sqrt(5)), biases the same.
A uniform U(-b, b) has variance b^2/3, so each uniform scheme uses b = sqrt(3 * variance).
Biases are zero, except for torch_default. BatchNorm starts as torch's, whatever the scheme: weight (gamma) 1,
bias (beta) 0, running mean 0, running variance 1, no batches tracked.
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
    """A 2-D convolution (cross-correlation) with weight (out, in, k, k) and bias (out,), at ``stride``.

    ``table`` (out, in) of booleans keeps only some input maps per output map (LeNet-5's C3): the weights
    outside it are held at 0. ``bias=False``: no bias (a convolution followed by BatchNorm).
    """

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    padding: int = 0
    table: np.ndarray | None = None
    stride: int = 1
    bias: bool = True

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {"weight": (self.out_channels, self.in_channels, self.kernel, self.kernel)}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def output_size(self, size: int) -> int:
        """The output's height (or width) for an input ``size`` pixels high (or wide)."""
        return (size + 2 * self.padding - self.kernel) // self.stride + 1


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


@dataclass(frozen=True)
class BatchNorm:
    """Batch normalization of each of ``channels`` maps of (N, C, H, W), as torch.nn.BatchNorm2d (eps 1e-5,
    momentum 0.1): parameters weight (gamma) and bias (beta), buffers running_mean, running_var (C,) and
    num_batches_tracked (), an int64 count in a state dict."""

    name: str
    channels: int

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.channels,), "bias": (self.channels,)}

    def buffer_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"running_mean": (self.channels,), "running_var": (self.channels,), "num_batches_tracked": ()}


BN_EPS, BN_MOMENTUM = 1e-5, 0.1  # torch's defaults, in every engine and in the ONNX export
COUNT_BUFFER = "num_batches_tracked"  # the one integer entry of a state dict


@dataclass(frozen=True)
class Residual:
    """relu(body(x) + shortcut(x)): a residual block (He et al. 2016), the shortcut the identity when None.

    ``body`` and ``shortcut`` are tuples of layer specs, named inside the block: parameters are
    ``<name>.<layer>.<kind>`` for the body and ``<name>.downsample.<layer>.<kind>`` for the shortcut, as
    torchvision's BasicBlock (``block2.conv1.weight``, ``block2.downsample.0.weight``). ``name`` has no dot.
    """

    name: str
    body: tuple
    shortcut: tuple | None = None


SHORTCUT = "downsample"  # the shortcut's name inside a Residual, torchvision's


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
    family: str = "LeNet-5"  # what kind of net it is, for people (summary_lines)


def _conv_bn_relu(name: str, bn: str, in_channels: int, out_channels: int, stride: int = 1) -> tuple:
    """A 3x3 convolution (padding 1, no bias) -> BatchNorm -> ReLU."""
    conv = Conv(name, in_channels, out_channels, 3, padding=1, stride=stride, bias=False)
    return conv, BatchNorm(bn, out_channels), Act("relu")


def _basic_block(name: str, in_channels: int, out_channels: int, stride: int = 1) -> Residual:
    """ResNet's basic block as torchvision's BasicBlock: conv 3x3 (stride) - BN - ReLU - conv 3x3 - BN, plus
    the input (a 1x1 convolution with that stride and a BN where the shape changes), then ReLU."""
    body = (
        *_conv_bn_relu("conv1", "bn1", in_channels, out_channels, stride),
        Conv("conv2", out_channels, out_channels, 3, padding=1, bias=False),
        BatchNorm("bn2", out_channels),
    )
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = (Conv("0", in_channels, out_channels, 1, stride=stride, bias=False), BatchNorm("1", out_channels))
    return Residual(name, body, shortcut)


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
    "vgg": Architecture(
        "vgg",
        "3x3 convolutions 32-32-pool-64-64-pool with BatchNorm, global average pooling, dense 10",
        (
            *_conv_bn_relu("conv1", "bn1", 1, 32),
            *_conv_bn_relu("conv2", "bn2", 32, 32),
            Pool("max"),  # (N, 32, 14, 14)
            *_conv_bn_relu("conv3", "bn3", 32, 64),
            *_conv_bn_relu("conv4", "bn4", 64, 64),
            Pool("max"),  # (N, 64, 7, 7)
            Pool("avg", 7),  # global average pooling: (N, 64, 1, 1)
            Flatten(),  # (N, 64)
            Dense("fc", 64, NUM_CLASSES),
        ),
        family="VGG-style net",
    ),
    "resnet": Architecture(
        "resnet",
        "3x3 stem, basic blocks 16-32-64 with BatchNorm, global average pooling, dense 10",
        (
            *_conv_bn_relu("conv1", "bn1", 1, 16),  # (N, 16, 28, 28)
            _basic_block("block1", 16, 16),  # (N, 16, 28, 28)
            _basic_block("block2", 16, 32, stride=2),  # (N, 32, 14, 14)
            _basic_block("block3", 32, 64, stride=2),  # (N, 64, 7, 7)
            Pool("avg", 7),  # global average pooling: (N, 64, 1, 1)
            Flatten(),  # (N, 64)
            Dense("fc", 64, NUM_CLASSES),
        ),
        family="ResNet-style net",
    ),
}


def architecture(name: str) -> Architecture:
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; models are: {', '.join(MODELS)}") from None


def walk(layers: tuple, prefix: str = ""):
    """(name prefix, spec) of every layer, a Residual's body then shortcut in its place (the prefix: '' at the
    top, 'block2.' in a block's body, 'block2.downsample.' in its shortcut)."""
    for spec in layers:
        if isinstance(spec, Residual):
            yield from walk(spec.body, f"{prefix}{spec.name}.")
            if spec.shortcut is not None:
                yield from walk(spec.shortcut, f"{prefix}{spec.name}.{SHORTCUT}.")
        else:
            yield prefix, spec


def parameter_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Ordered {'conv1.weight': (6, 1, 5, 5), 'conv1.bias': (6,), ...}, PyTorch's names and layouts: the
    trained parameters, in the order of the layers (the order of every flat parameter buffer)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, layer in walk(architecture(name).layers):
        if isinstance(layer, (Conv, Dense, BatchNorm)):
            for kind, shape in layer.param_shapes().items():
                shapes[f"{prefix}{layer.name}.{kind}"] = shape
    return shapes


def buffer_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Ordered {'bn1.running_mean': (32,), ...}: the buffers (empty for LeNet-5)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, layer in walk(architecture(name).layers):
        if isinstance(layer, BatchNorm):
            for kind, shape in layer.buffer_shapes().items():
                shapes[f"{prefix}{layer.name}.{kind}"] = shape
    return shapes


def state_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Every entry of the model's state dict: parameters, then buffers."""
    return parameter_shapes(name) | buffer_shapes(name)


def has_batchnorm(name: str) -> bool:
    """Whether the model normalises by batch statistics in training (its batches cannot be cut into
    independently computed pieces)."""
    return any(isinstance(layer, BatchNorm) for _, layer in walk(architecture(name).layers))


def is_count(key: str) -> bool:
    """Whether a state-dict entry is an integer count (BatchNorm's num_batches_tracked), not a float array."""
    return key.rsplit(".", 1)[-1] == COUNT_BUFFER


def check_state_dict(name: str, state: dict) -> None:
    """A state dict for model ``name``: every parameter and buffer present, nothing else, each of its shape
    and a float dtype (an integer or float count for num_batches_tracked); ValueError naming the first that
    is not, or naming the model the state dict is of when it is another's."""
    shapes = state_shapes(name)
    if set(state) != set(shapes):
        other = model_for_weights(state)
        if other is not None:
            raise ValueError(f"the state dict is of the {other} model, not of the {name} model")
    for key in shapes:
        if key not in state:
            raise ValueError(f"state dict is missing '{key}' (the {name} model needs it)")
    for key, value in state.items():
        if key not in shapes:
            raise ValueError(f"unexpected key '{key}' in state dict for the {name} model")
        value = np.asarray(value)
        if tuple(value.shape) != shapes[key]:
            raise ValueError(f"'{key}' has shape {tuple(value.shape)}, expected {shapes[key]}")
        if is_count(key):
            if value.dtype.kind not in "iuf" or not (np.isfinite(value) and value >= 0 and value == np.rint(value)):
                raise ValueError(f"'{key}' is {value!r}, expected a count (a whole number >= 0)")
        elif not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"'{key}' has dtype {value.dtype}, expected a floating-point array")


def model_for_weights(names) -> str | None:
    """The model whose state dict has exactly these names, or None."""
    names = set(names)
    return next((model for model in MODELS if names == set(state_shapes(model))), None)


def _conv_label(layer: Conv) -> str:
    return (
        f"conv {layer.kernel}x{layer.kernel}"
        + (f" stride {layer.stride}" if layer.stride != 1 else "")
        + (f" pad {layer.padding}" if layer.padding else "")
    )


def _layer_rows(layers: tuple, shape: tuple[int, ...], prefix: str = "", indent: str = ""):
    """(rows, output shape) for a tuple of specs from an input of ``shape``; see summary_rows."""
    rows = []
    for layer in layers:
        params = 0
        if isinstance(layer, Residual):
            rows.append((f"{indent}{prefix}{layer.name} residual", (), 0))
            body_rows, out = _layer_rows(layer.body, shape, f"{prefix}{layer.name}.", indent + "  ")
            rows += body_rows
            if layer.shortcut is not None:
                short_rows, _ = _layer_rows(layer.shortcut, shape, f"{prefix}{layer.name}.{SHORTCUT}.", indent + "  ")
                rows += short_rows
            else:
                rows.append((f"{indent}  identity shortcut", shape, 0))
            shape = out
            rows.append((f"{indent}  add + relu", shape, 0))
            continue
        c, h, w = (shape + (1, 1))[:3]
        if isinstance(layer, Conv):
            h, w = layer.output_size(h), layer.output_size(w)
            shape = (layer.out_channels, h, w)
            weights = (
                int(layer.table.sum()) * layer.kernel**2
                if layer.table is not None
                else math.prod(layer.param_shapes()["weight"])
            )
            params = weights + (layer.out_channels if layer.bias else 0)
            label = f"{prefix}{layer.name} {_conv_label(layer)}"
        elif isinstance(layer, BatchNorm):
            params = 2 * layer.channels
            label = f"{prefix}{layer.name} batchnorm"
        elif isinstance(layer, Pool):
            h, w = h // layer.size, w // layer.size
            shape = (c, h, w)
            label = f"{layer.kind}pool {layer.size}" + (" (global)" if (h, w) == (1, 1) and layer.size > 2 else "")
        elif isinstance(layer, Flatten):
            shape = (math.prod(shape),)
            label = "flatten"
        elif isinstance(layer, Dense):
            shape = (layer.n_out,)
            params = layer.n_in * layer.n_out + layer.n_out
            label = f"{prefix}{layer.name} dense"
        else:
            label = layer.kind
        rows.append((indent + label, shape, params))
    return rows, shape


def summary_rows(name: str) -> list[tuple[str, tuple[int, ...], int]]:
    """(layer, output shape (C, H, W) or (n,), trained parameters) for each layer of a model, for one input
    digit; a residual block's layers follow its own row, indented, then its sum (the block's output shape)."""
    return _layer_rows(architecture(name).layers, INPUT_SHAPE)[0]


def multiply_adds(name: str) -> int:
    """Multiply-adds of one forward pass for one digit in the convolutions and dense layers (what dominates;
    BatchNorm, pooling and activations are a few element-wise passes)."""

    def count(layers: tuple, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        macs = 0
        for layer in layers:
            if isinstance(layer, Residual):
                body, out = count(layer.body, shape)
                macs += body + (count(layer.shortcut, shape)[0] if layer.shortcut is not None else 0)
                shape = out
            elif isinstance(layer, Conv):
                h, w = layer.output_size(shape[1]), layer.output_size(shape[2])
                pairs = int(layer.table.sum()) if layer.table is not None else layer.out_channels * layer.in_channels
                macs += h * w * pairs * layer.kernel**2
                shape = (layer.out_channels, h, w)
            elif isinstance(layer, Pool):
                shape = (shape[0], shape[1] // layer.size, shape[2] // layer.size)
            elif isinstance(layer, Flatten):
                shape = (math.prod(shape),)
            elif isinstance(layer, Dense):
                macs += layer.n_in * layer.n_out
                shape = (layer.n_out,)
        return macs, shape

    return count(architecture(name).layers, INPUT_SHAPE)[0]


def summary_lines(name: str) -> list[str]:
    """A model summary for people (Keras' model.summary()): each layer, its output shape, its parameters."""
    arch = architecture(name)
    rows = summary_rows(name)
    width = max(22, 2 + max(len(label) for label, _, _ in rows))
    lines = [f"{name} {arch.family} ({arch.summary})", f"  {'layer':<{width}}{'output shape':<16}{'parameters':>10}"]
    for label, shape, params in rows:
        lines.append(f"  {label:<{width}}{'x'.join(map(str, shape)):<16}{params if params else '':>10}")
    lines.append(f"  {'total':<{width + 16}}{sum(p for _, _, p in rows):>10}")
    lines.append(f"  {multiply_adds(name) / 1e6:.2f} million multiply-adds per digit (forward)")
    buffers = buffer_shapes(name)
    if buffers:
        count = sum(math.prod(s) for s in buffers.values())
        lines.append(f"  BatchNorm: {count} running statistics (buffers, saved with the weights); in training it")
        lines.append("  normalises over the whole batch, so the NumPy engine runs each batch in one piece, in the")
        lines.append("  calling thread (no worker processes); evaluation uses the running statistics")
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


def batchnorm_state(layer: BatchNorm, dtype: str = "float32") -> dict[str, np.ndarray]:
    """A fresh BatchNorm's parameters and buffers, as torch's: weight 1, bias 0, running mean 0, running
    variance 1, num_batches_tracked 0 (int64)."""
    c = layer.channels
    return {
        "weight": np.ones(c, dtype),
        "bias": np.zeros(c, dtype),
        "running_mean": np.zeros(c, dtype),
        "running_var": np.ones(c, dtype),
        COUNT_BUFFER: np.zeros((), np.int64),
    }


def initial_weights(model: str, scheme: str, seed: int, dtype: str = "float32") -> dict[str, np.ndarray]:
    """The seeded initial state dict every engine starts from: convolution and dense weights drawn by the
    scheme in the order of the layers (those outside a Conv's table at 0), BatchNorm as batchnorm_state."""
    layers = walk(architecture(model).layers)
    batchnorms = {f"{prefix}{layer.name}": layer for prefix, layer in layers if isinstance(layer, BatchNorm)}
    drawn = {k: v for k, v in parameter_shapes(model).items() if k.rsplit(".", 1)[0] not in batchnorms}
    weights = init_parameters(scheme, drawn, np.random.default_rng(seed))
    for prefix, layer in walk(architecture(model).layers):
        if isinstance(layer, Conv) and layer.table is not None:
            weights[f"{prefix}{layer.name}.weight"] *= layer.table[:, :, None, None]
    weights = {key: value.astype(dtype) for key, value in weights.items()}
    for name, layer in batchnorms.items():
        weights |= {f"{name}.{kind}": value for kind, value in batchnorm_state(layer, dtype).items()}
    return {key: weights[key] for key in state_shapes(model)}  # parameters, then buffers
