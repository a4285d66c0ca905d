"""Weight initializers. Each takes a numpy.random.Generator, so the same seed gives the same weights.

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

import numpy as np

SCHEMES = (
    "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform",
    "lecun_normal", "lecun_uniform", "torch_default",
)


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight shaped (out, in, *kernel)."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def weight_std(scheme: str, shape: tuple[int, ...]) -> float:
    """Standard deviation the scheme wants for a weight of this shape."""
    fan_in, fan_out = fans(shape)
    family = scheme.rsplit("_", 1)[0]
    if family == "kaiming":
        return math.sqrt(2.0 / fan_in)
    if family == "xavier":
        return math.sqrt(2.0 / (fan_in + fan_out))
    if family == "lecun":
        return math.sqrt(1.0 / fan_in)
    if scheme == "torch_default":
        return 1.0 / math.sqrt(3.0 * fan_in)  # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    raise ValueError(f"unknown init scheme {scheme!r}; schemes are: {', '.join(SCHEMES)}")


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


def init_parameters(
    scheme: str, shapes: dict[str, tuple[int, ...]], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Draw every parameter of a network, in the order of ``shapes`` ('<layer>.weight' before '<layer>.bias')."""
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        layer, kind = name.rsplit(".", 1)
        if kind == "weight":
            out[name] = init_weight(scheme, shape, rng)
        else:
            out[name] = init_bias(scheme, shapes[f"{layer}.weight"], rng)
    return out
