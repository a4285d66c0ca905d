"""SGD (momentum, Nesterov), Adam and AdamW over one flat parameter buffer, with the formulas of torch.optim.

Every update is a handful of vectorized operations over the whole buffer (no loop over tensors).

Regularization (the same meaning for every optimizer, see config.OptimizerConfig):

- L2 (``l2``) adds 0.5*l2*||w||^2 to the loss, so l2*w joins the gradient and is then rescaled like any
  gradient (by Adam's adaptive step too); it is torch's ``weight_decay`` argument of SGD and Adam.
- L1 (``l1``) adds l1*|w| to the loss, so l1*sign(w) joins the gradient; it drives small weights to exactly 0.
- Decoupled weight decay (``weight_decay``) shrinks the weights directly, w <- w - lr*weight_decay*w, outside
  the gradient, so Adam never rescales it (Loshchilov & Hutter); it is done before the gradient step, as
  torch.optim.AdamW does, for all three optimizers.

Order of one step: gradient += penalty gradients (L2, L1); the full gradient is clipped to the global L2 norm
``grad_clip`` (as torch.nn.utils.clip_grad_norm_ would clip it); decoupled decay; the optimizer's update.
Penalties apply to every parameter, biases included, as torch does by default.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lenet5.config import OptimizerConfig


class Optimizer:
    """Base: regularization and clipping; subclasses implement _update(params, grad, lr)."""

    state_names: tuple[str, ...] = ()

    def __init__(self, cfg: OptimizerConfig, size: int, dtype) -> None:
        self.cfg = cfg
        self.t = 0  # steps taken
        self.state = {name: np.zeros(size, dtype=dtype) for name in self.state_names}
        self._tmp = np.empty(size, dtype=dtype)

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """One update of ``params`` in place. ``grad`` holds the data-loss gradient and is used as scratch."""
        cfg = self.cfg
        if cfg.l2:
            np.multiply(params, cfg.l2, out=self._tmp)
            grad += self._tmp
        if cfg.l1:
            np.sign(params, out=self._tmp)
            self._tmp *= cfg.l1
            grad += self._tmp
        if cfg.grad_clip:
            clip_grad_norm(grad, cfg.grad_clip)
        if cfg.weight_decay:
            params *= 1.0 - lr * cfg.weight_decay
        self.t += 1
        self._update(params, grad, lr)

    def _update(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {"step": np.array(self.t, dtype=np.int64)}
        out.update({name: buf.copy() for name, buf in self.state.items()})
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        expected = {"step", *self.state_names}
        if set(state) != expected:
            raise ValueError(
                f"optimizer state for {type(self).__name__} needs keys {sorted(expected)}, got {sorted(state)}"
            )
        for name, buf in self.state.items():
            value = np.asarray(state[name])
            if value.shape != buf.shape:
                raise ValueError(f"optimizer state '{name}' has shape {value.shape}, expected {buf.shape}")
            buf[...] = value
        step = np.asarray(state["step"])
        if step.size != 1 or step.dtype.kind not in "iu" or step.reshape(-1)[0] < 0:
            raise ValueError(f"optimizer state 'step' must be one whole number >= 0, got {step.dtype} {step.shape}")
        self.t = int(step.reshape(-1)[0])


def clip_grad_norm(grad: np.ndarray, max_norm: float) -> float:
    """Scale grad in place so its global L2 norm is at most max_norm (torch's formula); returns the norm."""
    norm = math.sqrt(float(np.dot(grad, grad)))
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        grad *= coef
    return norm


class SGD(Optimizer):
    """torch.optim.SGD with dampening 0: buf = momentum*buf + g; step along buf (or g + momentum*buf, Nesterov)."""

    def __init__(self, cfg: OptimizerConfig, size: int, dtype) -> None:
        self.state_names = ("momentum_buffer",) if cfg.momentum else ()
        super().__init__(cfg, size, dtype)

    def _update(self, params, grad, lr):
        mu = self.cfg.momentum
        if mu:
            buf = self.state["momentum_buffer"]
            buf *= mu  # the first step gives buf = g, as torch's clone
            buf += grad
            if self.cfg.nesterov:
                np.multiply(buf, mu, out=self._tmp)
                grad += self._tmp
            else:
                grad = buf
        np.multiply(grad, lr, out=self._tmp)
        params -= self._tmp


class Adam(Optimizer):
    """torch.optim.Adam (and AdamW: the same update; the decoupled decay is in Optimizer.step)."""

    state_names = ("exp_avg", "exp_avg_sq")

    def _update(self, params, grad, lr):
        b1, b2, tmp = self.cfg.beta1, self.cfg.beta2, self._tmp
        m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
        m *= b1  # m = b1*m + (1-b1)*g
        np.multiply(grad, 1.0 - b1, out=tmp)
        m += tmp
        v *= b2  # v = b2*v + (1-b2)*g^2
        np.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - b2
        v += tmp
        bias_correction1 = 1.0 - b1**self.t
        bias_correction2 = 1.0 - b2**self.t
        np.sqrt(v, out=tmp)  # denominator sqrt(v / bc2) + eps
        tmp /= math.sqrt(bias_correction2)
        tmp += self.cfg.eps
        np.divide(m, tmp, out=tmp)
        tmp *= lr / bias_correction1
        params -= tmp


# Every name of config.OPTIMIZERS. AdamW is Adam's update with the decoupled weight decay that
# Optimizer.step applies for every optimizer.
OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": Adam}


def create_optimizer(cfg: OptimizerConfig, size: int, dtype) -> Optimizer:
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.name!r}; optimizers are: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[cfg.name](cfg, size, dtype)
