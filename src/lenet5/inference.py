"""Forward-only runners: a trained model's logits, with nothing of training (evaluation mode: BatchNorm uses
its running statistics; no optimizer, no gradients).

Every runner offers the same small interface, which is all ``predict``, ``serve`` and ``evaluate`` use:

- ``model_name``: the model of lenet5.models it runs (an ``.onnx`` file's from its metadata);
- ``logits(x)``: normalized float32 images (N, 1, 28, 28) -> logits (N, 10), float32 (or the runner's dtype);
- ``close()``: give back what it holds (worker processes); nothing else is called after it.

The runners:

- ``NumpyRunner``: the NumPy engine's own layers (engines/numpy/model.py). With ``threads=1`` (``predict``,
  ``serve``: a few images at a time) in the calling thread; with more (``evaluate`` on 10,000 images) through
  the engine's executor (engines/numpy/executors.py), whose worker processes share the images out.
- ``TorchRunner``: the torch engine's module (engines/torch/model.py) on the CPU, without its optimizer.
- ``OnnxModel``: a file written by ``lenet5 export`` (export.py), run by onnxruntime.

Each imports its engine or runtime only when made, so reading a ``.safetensors`` model with the NumPy runner
imports neither torch nor onnxruntime, nor anything of training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lenet5 import models
from lenet5.blas import single_threaded_blas
from lenet5.errors import CheckpointError, Lenet5Error, first_line

PIECE = 256  # images per forward pass in the calling thread: memory stays that of one piece, however many images


class NumpyRunner:
    """``NumpyRunner(model_name, state).logits(x float32 (N, 1, 28, 28)) -> (N, 10)``; ValueError for a state
    dict that does not fit the model (models.check_state_dict).

    ``threads``: 1 runs in the calling thread, in pieces of PIECE images; n > 1 (0: the engine's default)
    gives the images to the NumPy engine's executor for n workers, as its ``logits`` does (the same pieces,
    so the same bits), with the worker processes started now and stopped by ``close()``.
    """

    def __init__(self, model_name: str, state: dict[str, np.ndarray], dtype=np.float32, threads: int = 1) -> None:
        models.check_state_dict(model_name, state)
        self.model_name = model_name
        self.dtype = np.dtype(dtype)
        self.executor = None
        if threads == 1:
            from lenet5.engines.numpy.model import Network

            self.net = Network(model_name, self.dtype)
            self.workspace = self.net.new_workspace()  # scratch arrays reused from call to call (one thread)
        else:  # the executor's workers: imported only here (its process pool, the free-cores policy)
            from lenet5.engines.numpy.executors import create_executor, default_threads
            from lenet5.engines.numpy.model import parameter_count

            grad = np.zeros(parameter_count(model_name), self.dtype)  # the executor's gradient buffer, never filled
            self.executor = create_executor(model_name, self.dtype, 0.0, threads or default_threads(), grad)
            self.net = self.executor.net  # its parameters lie where every worker reads them
        self.net.train(False)
        self.net.load_state_dict(state)

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        out = np.empty((len(x), models.NUM_CLASSES), dtype=self.dtype)
        with single_threaded_blas():  # the workers are the parallelism, not BLAS
            if self.executor is not None:
                self.executor.logits(x, out)
                return out
            for start in range(0, len(x), PIECE):
                out[start : start + PIECE] = self.net.forward(
                    x[start : start + PIECE], keep_caches=False, ws=self.workspace
                )[0]
        return out

    def close(self) -> None:
        """Stop the executor's worker processes, if any."""
        if self.executor is not None:
            self.executor.close()


class TorchRunner:
    """The torch engine's module for a model of lenet5.models (engines/torch/model.py) with these weights, in
    ``eval()`` mode under ``torch.inference_mode()``, on the CPU: ``logits(x)`` as NumpyRunner's, within float
    rounding. Only the module is imported, not the engine (its optimizers, devices, distributed training).

    ``threads`` > 0 sets torch's intra-op thread count (for the whole process, as torch has only one);
    0 leaves PyTorch's own. ValueError for a state dict that does not fit the model; Lenet5Error, with what to
    install, where PyTorch is missing.
    """

    def __init__(self, model_name: str, state: dict[str, np.ndarray], dtype=np.float32, threads: int = 1) -> None:
        models.check_state_dict(model_name, state)
        try:
            import torch

            from lenet5.engines.torch.model import LeNet5
        except ImportError as exc:
            if exc.name != "torch":
                raise
            from lenet5.engines import ENGINES

            raise Lenet5Error(f"{ENGINES['torch'][2]} (or use --engine numpy)") from None
        if threads > 0:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model_name = model_name
        self.dtype = np.dtype(dtype)
        self.module = LeNet5(model_name).to(dtype=getattr(torch, self.dtype.name)).eval()
        self.module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=self.dtype)
        out = np.empty((len(x), models.NUM_CLASSES), dtype=self.dtype)
        with self.torch.inference_mode():
            for start in range(0, len(x), PIECE):
                out[start : start + PIECE] = self.module(self.torch.from_numpy(x[start : start + PIECE])).numpy()
        return out

    def close(self) -> None:
        """Nothing to stop: the runner holds no process; torch's threads are the process's."""


class OnnxModel:
    """An exported .onnx file run by onnxruntime on the CPU: ``OnnxModel(path).logits(x)``.

    Only a LeNet-5 signature is accepted, checked when loading (CheckpointError, one line, otherwise): one
    input, float32 (N, 1, 28, 28); one output, float32 (N, 10); N a dynamic dimension or a fixed batch size
    (then the batches are fed N at a time). A trial run on zeros proves the graph gives what it declares."""

    name = "onnx"

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        from lenet5.export import ONNX_HINT, REJECT_KEYS  # the metadata keys this reads are the ones export writes

        try:
            import onnxruntime as ort
        except ImportError:
            raise Lenet5Error(ONNX_HINT) from None
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such file")
        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types for a bad file
            raise CheckpointError(f"{self.path}: not a loadable ONNX model: {first_line(exc)}") from None
        self.input_name, self.batch = self._check_signature()
        self.meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.model_name = self.meta.get("model", "unknown")
        from lenet5.calibration import check_temperature

        try:
            self.temperature = check_temperature(float(self.meta.get("temperature", "1.0")))
            floor = float(self.meta["energy_floor"]) if "energy_floor" in self.meta else None
        except ValueError as exc:
            raise CheckpointError(f"{self.path}: {exc}") from None
        self.energy_floor = floor if floor is not None and np.isfinite(floor) else None
        try:  # the reject thresholds, as lenet5 predict uses them (calibration.check_reject)
            from lenet5.calibration import check_reject

            self.reject = (
                check_reject({k: float(self.meta[f"reject_{k}"]) for k in REJECT_KEYS if f"reject_{k}" in self.meta})
                or None
            )
        except ValueError as exc:
            raise CheckpointError(f"{self.path}: {exc}") from None
        self.logits(np.zeros((1, *models.INPUT_SHAPE), np.float32))  # the graph must run and give (1, 10)

    def _check_signature(self) -> tuple[str, int | None]:
        """(the input's name, the fixed batch size or None), or CheckpointError naming what does not fit."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        want = (
            f"a lenet5 model takes one float32 input (N, {', '.join(map(str, models.INPUT_SHAPE))}) and gives one "
            f"float32 output (N, {models.NUM_CLASSES})"
        )
        if len(inputs) != 1 or len(outputs) != 1:
            raise CheckpointError(
                f"{self.path}: not a LeNet-5 ONNX model: it has {len(inputs)} input(s) and "
                f"{len(outputs)} output(s); {want}"
            )
        (x,), (y,) = inputs, outputs
        for what, arg, rank, tail in (("input", x, 4, [*models.INPUT_SHAPE]), ("output", y, 2, [models.NUM_CLASSES])):
            shape = list(arg.shape) if arg.shape is not None else None
            if arg.type != "tensor(float)" or shape is None or len(shape) != rank or shape[1:] != tail:
                dims = () if shape is None else ("?" if d is None else str(d) for d in shape)
                seen = "unknown" if shape is None else "(" + ", ".join(dims) + ")"
                raise CheckpointError(
                    f"{self.path}: not a LeNet-5 ONNX model: its {what} {arg.name!r} is "
                    f"{arg.type} of shape {seen}; {want}"
                )
        batch, out_batch = x.shape[0], y.shape[0]
        fixed = batch if isinstance(batch, int) else None  # None, or a name: dynamic
        if fixed is not None and fixed < 1:
            raise CheckpointError(f"{self.path}: not a LeNet-5 ONNX model: its batch dimension is {fixed}; {want}")
        if isinstance(out_batch, int) and out_batch != fixed:
            raise CheckpointError(
                f"{self.path}: not a LeNet-5 ONNX model: it takes a batch of {batch} images but "
                f"gives {out_batch} rows; {want}"
            )
        return x.name, fixed

    def logits(self, x: np.ndarray) -> np.ndarray:
        """x: normalized float (N,1,28,28) or (N,28,28) -> float32 logits (N, 10)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[:, None]
        if self.batch is None:
            return self._run(x)
        parts = []
        for at in range(0, len(x), self.batch):  # a fixed batch size: whole batches, the last one padded
            chunk = x[at : at + self.batch]
            pad = self.batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
            parts.append(self._run(chunk)[: self.batch - pad])
        return np.concatenate(parts) if parts else np.zeros((0, models.NUM_CLASSES), np.float32)

    def close(self) -> None:
        """Nothing to stop: onnxruntime's threads go with the session."""

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            out = self.session.run(None, {self.input_name: x})[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a graph that fails
            raise CheckpointError(
                f"{self.path}: the ONNX model fails on a batch of {len(x)}: {first_line(exc)}"
            ) from None
        out = np.asarray(out)
        if out.shape != (len(x), models.NUM_CLASSES) or out.dtype != np.float32:
            raise CheckpointError(
                f"{self.path}: not a LeNet-5 ONNX model: it gives {out.dtype} of shape "
                f"{tuple(out.shape)} for {len(x)} images, not float32 ({len(x)}, 10)"
            )
        return out
