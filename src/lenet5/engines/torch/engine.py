"""TorchEngine: the PyTorch twin of the NumPy engine, behind the same Engine protocol and the same config.

Initial weights come from lenet5.models.initial_weights (numpy.random.default_rng(seed), the same
ModelConfig.init scheme) as in the NumPy engine, so ``TorchEngine(..., seed=s)`` and ``NumpyEngine(..., seed=s)``
start from identical weights and a cross-engine comparison needs no copying. optimizer_state() uses the
same format as the NumPy engine (flat buffers), so a run can resume in either engine.

Optimizer keys mean exactly what config.py says, in both engines:
- ``l2``: coupled L2, grad += l2*w (what torch's SGD/Adam ``weight_decay=`` argument does);
- ``l1``: grad += l1*sign(w);
- ``weight_decay``: decoupled, w <- w*(1 - lr*wd) just before the update (AdamW's meaning, for every
  optimizer; 'adamw' uses torch.optim.AdamW(weight_decay=wd), sgd/adam apply it by hand);
- ``grad_clip`` > 0: clip_grad_norm_ over the full gradient (data + penalty gradients) before the step.
Penalties are added by hand to every parameter's gradient (so clipping sees them); the returned loss
excludes them. Under torchrun see distributed.py for how a global batch is shared between ranks.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from lenet5.config import ModelConfig, OptimizerConfig
from lenet5.engines import DEVICES
from lenet5.engines.base import Engine
from lenet5.engines.torch import distributed as ddp
from lenet5.engines.torch.model import LeNet5
from lenet5.engines.torch.optim import optimizer_kind
from lenet5.errors import Lenet5Error
from lenet5.free_cores import adaptive
from lenet5.models import NUM_CLASSES, initial_weights, is_count

DEFAULT_THREADS = torch.get_num_threads()  # PyTorch's own count (the cores, or OMP_NUM_THREADS), before we change it
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
EVAL_CHUNK = 2000


def resolve_device(device: str) -> torch.device:
    """'auto' picks cuda (this rank's GPU under torchrun), then mps, then cpu; an unavailable choice is an error."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise Lenet5Error("--device cuda was asked for but PyTorch sees no CUDA device; use --device cpu")
        return torch.device("cuda", ddp.local_rank() if ddp.world_size() > 1 else torch.cuda.current_device())
    if device == "mps":
        if not has_mps:
            raise Lenet5Error("--device mps was asked for but this PyTorch has no MPS backend; use --device cpu")
        return torch.device("mps")
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {device!r}; devices are: {', '.join(DEVICES)}")


class TorchEngine(Engine):
    name = "torch"

    def __init__(
        self,
        model: ModelConfig,
        optimizer: OptimizerConfig,
        *,
        seed: int = 0,
        dtype: str = "float32",
        label_smoothing: float = 0.0,
        threads: int = 0,
        device: str = "auto",
    ) -> None:
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; dtypes are: {', '.join(TORCH_DTYPES)}")
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0: default), got {threads}")
        torch.manual_seed(seed)
        self.model_name = model.name
        self.opt_cfg = optimizer
        self.label_smoothing = float(label_smoothing)
        self.device = resolve_device(device)
        # threads=0 on the CPU: as many threads as the cores other processes leave free (free_cores.py,
        # measured); with OMP_NUM_THREADS set, PyTorch's own count stays
        self._threads = None
        if threads > 0:
            torch.set_num_threads(threads)
        elif self.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            self._threads = adaptive(torch.set_num_threads, DEFAULT_THREADS)
        if self.device.type == "mps" and dtype == "float64":
            raise Lenet5Error("MPS has no float64; use --dtype float32 or --device cpu")
        if self.device.type == "cuda":
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        self.dtype = TORCH_DTYPES[dtype]
        self.np_dtype = self.input_dtype = np.dtype(dtype)
        self.model = LeNet5(model.name).to(device=self.device, dtype=self.dtype)
        self._names = [n for n, _ in self.model.named_parameters()]
        self._params = [p for _, p in self.model.named_parameters()]
        self.load_state_dict(initial_weights(model.name, model.init, seed, dtype))
        self.optimizer_kind = optimizer_kind(optimizer.name)
        self.optimizer = self.optimizer_kind.build(self._params, optimizer)
        self._step = 0

    def _slots(self) -> tuple[str, ...]:
        """Per-parameter optimizer state tensors, under torch's names."""
        return self.optimizer_kind.slots(self.opt_cfg)

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=self.np_dtype)).to(self.device)

    # --- training ---------------------------------------------------------------------------------------

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> tuple[float, int]:
        """x (N,1,28,28), y (N,): one update; under torchrun this rank's share of the global batch."""
        n_global = len(x)
        world = ddp.world_size()
        if world > 1:
            start, stop = ddp.shard_bounds(n_global, ddp.rank(), world)
            x, y = x[start:stop], y[start:stop]
        if self._threads is not None:
            self._threads.tick()
        xt = self._tensor(x)
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(self.device)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(xt)
        loss_sum = F.cross_entropy(out, yt, reduction="sum", label_smoothing=self.label_smoothing)
        (loss_sum / n_global).backward()
        with torch.no_grad():
            for p in self._params:
                if p.grad is None:  # an empty share on this rank
                    p.grad = torch.zeros_like(p)
            acc = torch.float32 if self.device.type == "mps" else torch.float64  # MPS has no float64
            totals = torch.stack([loss_sum.detach().to(acc), (out.argmax(1) == yt).sum().to(acc)])
            if world > 1:
                self._all_reduce_grads()
                ddp.all_reduce_sum_(totals)
            self._apply_update(lr)
        loss, correct = totals.tolist()
        self._step += 1
        return loss / n_global, int(round(correct))

    def _all_reduce_grads(self) -> None:
        flat = torch.cat([p.grad.reshape(-1) for p in self._params])
        ddp.all_reduce_sum_(flat)
        offset = 0
        for p in self._params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p))
            offset += n

    def _apply_update(self, lr: float) -> None:
        c = self.opt_cfg
        for p in self._params:
            if c.l2:
                p.grad.add_(p, alpha=c.l2)
            if c.l1:
                p.grad.add_(torch.sign(p), alpha=c.l1)
        if c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self._params, c.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if c.weight_decay and not self.optimizer_kind.decays_weights:
            for p in self._params:
                p.mul_(1.0 - lr * c.weight_decay)
        self.optimizer.step()

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, 10) in the engine's dtype; evaluated in chunks, no autograd."""
        self.model.eval()
        outs = []
        with torch.inference_mode():
            for i in range(0, len(x), EVAL_CHUNK):
                if self._threads is not None:
                    self._threads.tick()
                outs.append(self.model(self._tensor(x[i : i + EVAL_CHUNK])).cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, NUM_CLASSES), self.np_dtype)

    # --- state --------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Load float arrays of any dtype; every name and shape is checked before anything is changed."""
        expected = self.model.state_dict()
        for key in state:
            if key not in expected:
                raise ValueError(
                    f"unexpected key {key!r} for the {self.model_name} model; keys are: {', '.join(expected)}"
                )
        arrays = {}
        for key, target in expected.items():
            if key not in state:
                raise ValueError(f"missing key {key!r} for the {self.model_name} model")
            value = state[key]
            arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            if is_count(key):  # BatchNorm's num_batches_tracked: a whole number, int64 in torch
                if arr.dtype.kind not in "iuf" or arr.shape != () or not arr >= 0 or arr != np.rint(arr):
                    raise ValueError(f"{key!r} must be a count (a whole number >= 0), got {arr!r}")
            elif not np.issubdtype(arr.dtype, np.floating):
                raise ValueError(f"{key!r} must hold floating-point values, got dtype {arr.dtype}")
            if arr.shape != tuple(target.shape):
                raise ValueError(f"{key!r} has shape {arr.shape}, expected {tuple(target.shape)}")
            arrays[key] = arr
        with torch.no_grad():
            for key, target in expected.items():
                target.copy_(torch.from_numpy(np.array(arrays[key], order="C")).to(target.dtype))  # 0-d stays 0-d
            for name, mask in self.model.masks().items():  # as the NumPy engine: weights outside a table read 0
                getattr(self.model, name).weight.mul_(mask.to(self.dtype))

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """{'step': int64 scalar, slot: flat buffer}, the NumPy engine's format, so either engine can resume.

        Slots use torch's names ('momentum_buffer' for SGD with momentum, 'exp_avg'/'exp_avg_sq' for Adam(W));
        each is one flat array over all parameters in state_dict order.
        """
        out = {"step": np.array(self._step, dtype=np.int64)}
        for slot in self._slots():
            parts = []
            for p in self._params:
                buf = self.optimizer.state.get(p, {}).get(slot)
                parts.append(np.zeros(p.numel(), self.np_dtype) if buf is None else buf.detach().cpu().numpy().ravel())
            out[slot] = np.concatenate(parts)
        return out

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what optimizer_state() returned (from either engine); checks keys and sizes first."""
        expected = {"step", *self._slots()}
        if set(state) != expected:
            raise ValueError(
                f"optimizer state for {self.opt_cfg.name} needs keys {sorted(expected)}, got {sorted(state)}"
            )
        size = sum(p.numel() for p in self._params)
        flats = {}
        for slot in self._slots():
            flat = np.asarray(state[slot])
            if flat.shape != (size,):
                raise ValueError(f"optimizer state {slot!r} has shape {flat.shape}, expected ({size},)")
            flats[slot] = flat
        step = np.asarray(state["step"])
        if step.size != 1 or step.dtype.kind not in "iu" or step.reshape(-1)[0] < 0:
            raise ValueError(f"optimizer state 'step' must be one whole number >= 0, got {step.dtype} {step.shape}")
        step = int(step.reshape(-1)[0])
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        if step > 0 and flats:
            offset = 0
            for i, p in enumerate(self._params):
                n = p.numel()
                entry = {
                    s: torch.from_numpy(np.array(f[offset : offset + n], dtype=self.np_dtype)).view_as(p)
                    for s, f in flats.items()
                }
                if self.optimizer_kind.counts_steps:
                    entry["step"] = torch.tensor(float(step))
                per_param[i] = entry
                offset += n
        groups = self.optimizer.state_dict()["param_groups"]
        self.optimizer.load_state_dict({"state": per_param, "param_groups": groups})
        self._step = step

    def hurry(self) -> None:
        pass  # a step waits on no worker process

    def close(self) -> None:
        pass  # nothing held besides the weights and the optimizer, which Python frees
