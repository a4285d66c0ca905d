"""The two LeNet-5 networks as torch.nn.Modules, with the NumPy engine's parameter names and layouts.

Shapes for a batch x (N, 1, 28, 28):

modern   conv1 (6,1,5,5) pad 2 -> ReLU -> maxpool 2 -> (N,6,14,14) -> conv2 (16,6,5,5) -> ReLU -> maxpool 2
         -> (N,16,5,5) -> flatten (N,400) -> fc1 (120,400) -> ReLU -> fc2 (84,120) -> ReLU -> fc3 (10,84)
classic  conv1 (6,1,5,5) pad 2 (28x28 padded like LeCun's 32x32 input) -> 1.7159*tanh(2x/3) -> avgpool 2
         -> conv2 (16,6,5,5) masked by the C3 table -> scaled tanh -> avgpool 2 -> conv3 (120,16,5,5)
         -> scaled tanh -> (N,120) -> fc1 (84,120) -> scaled tanh -> fc2 (10,84)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lenet5.engines.numpy.model import C3_TABLE

MODELS = ("modern", "classic")


def scaled_tanh(x: torch.Tensor) -> torch.Tensor:
    """LeCun's squashing function f(a) = 1.7159 * tanh(2a/3)."""
    return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class LeNet5(nn.Module):
    """Modern LeNet-5: ReLU, max pooling, full connections."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class ClassicLeNet5(nn.Module):
    """LeNet-5 after LeCun et al. 1998: scaled tanh, average pooling, C3 partial connections.

    The C3 table is a fixed (16,6,1,1) 0/1 buffer multiplied into conv2.weight in every forward pass, so
    unconnected weights get zero gradient; it is not persistent and never appears in state_dict().
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.conv3 = nn.Conv2d(16, 120, 5)
        self.fc1 = nn.Linear(120, 84)
        self.fc2 = nn.Linear(84, 10)
        mask = torch.tensor(np.asarray(C3_TABLE, dtype=np.float32)).reshape(16, 6, 1, 1)
        self.register_buffer("c3_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(scaled_tanh(self.conv1(x)), 2)
        x = F.conv2d(x, self.conv2.weight * self.c3_mask, self.conv2.bias)
        x = F.avg_pool2d(scaled_tanh(x), 2)
        x = scaled_tanh(self.conv3(x))
        x = torch.flatten(x, 1)
        x = scaled_tanh(self.fc1(x))
        return self.fc2(x)


def build_model(name: str) -> nn.Module:
    """'modern' -> LeNet5, 'classic' -> ClassicLeNet5 (torch's default initialisation)."""
    if name == "modern":
        return LeNet5()
    if name == "classic":
        return ClassicLeNet5()
    raise ValueError(f"unknown model {name!r}; models are: {', '.join(MODELS)}")
