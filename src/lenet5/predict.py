"""Load a trained LeNet-5 once and classify digits: uint8 arrays, image files, folders, globs, .npy stacks.

The NumPy engine is the default, so predicting never imports torch. A ``.onnx`` model (from
``lenet5 export``) runs through onnxruntime instead.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from lenet5 import MNIST_MEAN, MNIST_STD
from lenet5.errors import CheckpointError, ImageError, Lenet5Error

PREDICT_ENGINES = ("numpy", "torch")
INPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".npy")
GLOB_CHARS = set("*?[")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for any logits without NaN: exp(z - max z) / sum. A row with +inf logits
    shares all probability among them; a row of only -inf is uniform."""
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=1, keepdims=True)
    with np.errstate(over="ignore", invalid="ignore"):  # -1e308 - 1e308 is -inf: its probability is 0
        z = np.where(np.isposinf(top), np.where(np.isposinf(z), 0.0, -np.inf), z - top)
    z = np.where(np.isneginf(top), 0.0, z)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Predictor:
    """A model loaded once: ``probabilities(uint8 (N, 28, 28)) -> (N, 10)``."""

    def __init__(self, model, model_name: str, path: Path, mean: float = MNIST_MEAN, std: float = MNIST_STD):
        self.model = model  # anything with logits(x float32 (N,1,28,28)) -> (N, 10)
        self.model_name = model_name
        self.path = Path(path)
        self.mean, self.std = float(mean), float(std)

    @classmethod
    def from_checkpoint(cls, path: str | Path, engine: str = "numpy", threads: int = 1) -> "Predictor":
        path = Path(path)
        if path.suffix.lower() == ".onnx":
            try:
                from lenet5.export import OnnxModel
            except ImportError:
                raise CheckpointError(f"{path}: .onnx models need lenet5.export, which this install lacks") from None
            model = OnnxModel(path, threads=1)
            return cls(model, model.model_name, path)
        if engine not in PREDICT_ENGINES:
            raise Lenet5Error(f"unknown engine {engine!r}; engines are: {', '.join(PREDICT_ENGINES)}")
        from lenet5.checkpoint import load_checkpoint
        from lenet5.config import ModelConfig, OptimizerConfig
        from lenet5.engines import create_engine

        ckpt = load_checkpoint(path)
        net = create_engine(engine, ModelConfig(name=ckpt.model), OptimizerConfig(), threads=threads)
        try:
            net.load_state_dict(ckpt.weights)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        norm = ckpt.meta.get("normalization") or {}
        return cls(net, ckpt.model, path, norm.get("mean", MNIST_MEAN), norm.get("std", MNIST_STD))

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), the way the model was trained."""
        if self.mean == MNIST_MEAN and self.std == MNIST_STD:
            from lenet5.data.datasets import normalize

            return normalize(images)
        x = images.astype(np.float32) / 255.0
        return ((x - np.float32(self.mean)) / np.float32(self.std))[:, None, :, :]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 28, 28) MNIST-style digits -> float64 (N, 10) class probabilities."""
        images = np.asarray(images)
        if images.ndim == 2:
            images = images[None]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"expected uint8 (N, 28, 28), got shape {images.shape}")
        with np.errstate(over="ignore", invalid="ignore"):  # judged below, not warned about
            logits = np.asarray(self.model.logits(self.normalize(images)), dtype=np.float64)
        if np.isnan(logits).any():
            raise CheckpointError(f"{self.path.name}: the model's outputs are NaN for this input: its weights are "
                                  "out of range (a damaged or diverged checkpoint)")
        return softmax(logits)

    def classify_files(self, inputs: list[str], top_k: int = 3, save_prepared: str | Path | None = None) -> list[dict]:
        """Files, folders and globs -> one result dict per digit: {file, digit, probability, top_k}
        or {file, error}. A failed file never stops the others."""
        results: list[dict] = []
        prepared: list[tuple[str, np.ndarray]] = []
        from lenet5.data.images import prepare_file

        for name, problem in expand_inputs(inputs):
            if problem:
                results.append({"file": name, "error": problem})
                continue
            try:
                digits = prepare_file(name)
            except ImageError as exc:
                results.append({"file": name, "error": str(exc)})
                continue
            if name.lower().endswith(".npy"):  # a stack: one result per digit, file[i]
                labels = [f"{name}[{i}]" for i in range(len(digits))]
            else:
                labels = [name]
            results.extend({"file": label} for label in labels)
            prepared.extend(zip(labels, digits))
        if prepared:
            probs = self.probabilities(np.stack([d for _, d in prepared]))
            by_label = {label: p for (label, _), p in zip(prepared, probs)}
            for r in results:
                if r["file"] in by_label and "error" not in r:
                    r.update(describe(by_label[r["file"]], top_k))
        if save_prepared is not None and prepared:
            write_prepared(prepared, Path(save_prepared))
        return results


def describe(probs: np.ndarray, top_k: int) -> dict:
    """One row of probabilities -> {digit, probability, top_k: [[digit, probability], ...]}."""
    order = np.argsort(-probs, kind="stable")[: max(1, top_k)]
    return {
        "digit": int(order[0]),
        "probability": round(float(probs[order[0]]), 6),
        "top_k": [[int(d), round(float(probs[d]), 6)] for d in order],
    }


def expand_inputs(inputs: list[str]) -> list[tuple[str, str | None]]:
    """Files as given, folders -> their image/.npy files (sorted), globs -> matches (sorted).
    Returns (path, None) or (what was given, error message)."""
    out: list[tuple[str, str | None]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES)
            if not found:
                out.append((item, f"{item}: folder holds no images ({', '.join(INPUT_SUFFIXES)})"))
            out.extend((f, None) for f in found)
        elif path.exists():
            out.append((item, None))
        elif GLOB_CHARS & set(item):
            found = sorted(p for p in glob.glob(item) if Path(p).is_file())
            if not found:
                out.append((item, f"{item}: no files match this pattern"))
            out.extend((f, None) for f in found)
        else:
            out.append((item, f"{item}: no such file"))
    return out


def write_prepared(prepared: list[tuple[str, np.ndarray]], folder: Path) -> list[Path]:
    """Write each prepared 28x28 digit as <name>.png in folder (numbered when names repeat)."""
    from lenet5.data.images import save_png

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Lenet5Error(f"--save-prepared {folder}: cannot create the folder ({exc.strerror or exc})") from None
    written, used = [], set()
    for label, digit in prepared:
        if label.endswith("]"):  # digit i of a .npy stack: <stem>_<i>
            file, index = label[:-1].rsplit("[", 1)
            base = f"{Path(file).stem}_{index}"
        else:
            base = Path(label).stem
        name, n = f"{base}.png", 1
        while name in used:
            n += 1
            name = f"{base}-{n}.png"
        used.add(name)
        save_png(digit, folder / name)
        written.append(folder / name)
    return written
