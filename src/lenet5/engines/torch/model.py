"""A model of lenet5.models as a torch.nn.Module, with the same parameter and buffer names and layouts.

The architecture comes from lenet5.models; this module maps each layer kind to torch's modules and functional
ops. For a batch x (N, 1, 28, 28) the modern model's activations are (N,6,28,28) -> pool (N,6,14,14) ->
(N,16,10,10) -> pool (N,16,5,5) -> (N,400) -> (N,120) -> (N,84) -> logits (N,10). BatchNorm layers are
nn.BatchNorm2d: batch statistics in ``train()`` mode, running statistics in ``eval()`` mode, the running
statistics and num_batches_tracked in state_dict() as buffers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lenet5 import models


class _Layers(nn.Module):
    """A tuple of layer specs as modules under their names (a parameter is '<name>.<kind>'), applied in order."""

    def __init__(self, specs: tuple) -> None:
        super().__init__()
        self.specs = specs
        for spec in specs:
            if isinstance(spec, models.Conv):
                conv = nn.Conv2d(
                    spec.in_channels,
                    spec.out_channels,
                    spec.kernel,
                    stride=spec.stride,
                    padding=spec.padding,
                    bias=spec.bias,
                )
                self.add_module(spec.name, conv)
                if spec.table is not None:
                    mask = torch.tensor(np.asarray(spec.table, dtype=np.float32))[:, :, None, None]
                    self.register_buffer(f"{spec.name}_mask", mask, persistent=False)
            elif isinstance(spec, models.Dense):
                self.add_module(spec.name, nn.Linear(spec.n_in, spec.n_out))
            elif isinstance(spec, models.BatchNorm):
                self.add_module(
                    spec.name, nn.BatchNorm2d(spec.channels, eps=models.BN_EPS, momentum=models.BN_MOMENTUM)
                )
            elif isinstance(spec, models.Residual):
                self.add_module(spec.name, _Residual(spec))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for spec in self.specs:
            if isinstance(spec, models.Conv):
                conv = getattr(self, spec.name)
                weight = conv.weight if spec.table is None else conv.weight * getattr(self, f"{spec.name}_mask")
                x = F.conv2d(x, weight, conv.bias, stride=spec.stride, padding=spec.padding)
            elif isinstance(spec, (models.Dense, models.BatchNorm, models.Residual)):
                x = getattr(self, spec.name)(x)
            elif isinstance(spec, models.Pool):
                x = (F.max_pool2d if spec.kind == "max" else F.avg_pool2d)(x, spec.size)
            elif isinstance(spec, models.Act):
                x = F.relu(x) if spec.kind == "relu" else models.SCALED_TANH_A * torch.tanh(x * models.SCALED_TANH_S)
            else:
                x = torch.flatten(x, 1)
        return x


class _Residual(_Layers):
    """relu(body(x) + shortcut(x)): the body's layers as this module's own children, the shortcut (when not the
    identity) under 'downsample', as torchvision's BasicBlock."""

    def __init__(self, spec: models.Residual) -> None:
        super().__init__(spec.body)
        self.has_shortcut = spec.shortcut is not None
        if self.has_shortcut:
            self.add_module(models.SHORTCUT, _Layers(spec.shortcut))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = getattr(self, models.SHORTCUT)(x) if self.has_shortcut else x
        return F.relu(super().forward(x) + shortcut)


class LeNet5(_Layers):
    """``LeNet5('modern')``, ``LeNet5('classic')``, or any other model of lenet5.models (``LeNet5('resnet')``),
    with torch's default initialisation.

    A Conv's connection table (classic conv2, the C3 table) is a fixed (out, in, 1, 1) 0/1 buffer multiplied
    into the weight in every forward pass, so unconnected weights get zero gradient; it is not persistent
    and never appears in state_dict().
    """

    def __init__(self, model_name: str = "modern") -> None:
        super().__init__(models.architecture(model_name).layers)
        self.model_name = model_name

    def masks(self) -> dict[str, torch.Tensor]:
        """{conv name: its (out, in, 1, 1) connection mask} for the convolutions that have a table."""
        return {
            s.name: getattr(self, f"{s.name}_mask")
            for s in self.specs
            if isinstance(s, models.Conv) and s.table is not None
        }
