"""The optimizers of config.OPTIMIZERS as the torch engine uses them: one OptimizerKind each, in TORCH_OPTIMIZERS.

The engine applies l2, l1 and grad_clip by hand to every parameter's gradient (so that clipping sees them), and
the decoupled weight_decay too unless the optimizer applies it itself: see engine.py's module docstring for what
each setting means. What an optimizer saves (optimizer_state) is the NumPy engine's format: 'step' and its
slots, each one flat buffer over all parameters, so a run resumes in either engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lenet5.config import OptimizerConfig


@dataclass(frozen=True)
class OptimizerKind:
    """What the torch engine needs to know of one optimizer of config.OPTIMIZERS.

    The lr is set before every step; l2, l1 and grad_clip are applied by hand (engine.py), and so is the
    decoupled weight_decay unless the optimizer applies it itself (``decays_weights``), in the same way.
    """

    build: Callable[[list[torch.Tensor], OptimizerConfig], torch.optim.Optimizer]
    slots: Callable[[OptimizerConfig], tuple[str, ...]]  # its per-parameter state tensors, under torch's names
    decays_weights: bool = False  # applies OptimizerConfig.weight_decay inside its step
    counts_steps: bool = False  # keeps a per-parameter 'step' tensor next to its slots (restored from 'step')


def _adam_slots(cfg: OptimizerConfig) -> tuple[str, ...]:
    return ("exp_avg", "exp_avg_sq")


TORCH_OPTIMIZERS = {
    "sgd": OptimizerKind(
        build=lambda params, c: torch.optim.SGD(
            params, lr=c.lr, momentum=c.momentum, dampening=0.0, nesterov=c.nesterov and c.momentum > 0
        ),
        slots=lambda c: ("momentum_buffer",) if c.momentum > 0 else (),
    ),
    "adam": OptimizerKind(
        build=lambda params, c: torch.optim.Adam(params, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps),
        slots=_adam_slots,
        counts_steps=True,
    ),
    "adamw": OptimizerKind(
        build=lambda params, c: torch.optim.AdamW(
            params, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps, weight_decay=c.weight_decay
        ),
        slots=_adam_slots,
        decays_weights=True,
        counts_steps=True,
    ),
}


def optimizer_kind(name: str) -> OptimizerKind:
    if name not in TORCH_OPTIMIZERS:
        raise ValueError(f"the torch engine has no optimizer {name!r}; it has: {', '.join(TORCH_OPTIMIZERS)}")
    return TORCH_OPTIMIZERS[name]
