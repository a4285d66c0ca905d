"""The forward-only runners (inference.py): the torch runner gives the NumPy runner's logits, the NumPy runner
with workers gives the NumPy engine's bits, and loading a model for the torch engine builds no optimizer."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lenet5.config import ModelConfig, OptimizerConfig
from lenet5.engines.numpy.engine import NumpyEngine
from lenet5.inference import NumpyRunner, TorchRunner
from lenet5.models import initial_weights

OPTIMIZERS = ("lenet5.engines.torch.optim", "lenet5.engines.numpy.optim")


def weights(model: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Seeded initial weights, with BatchNorm's running statistics moved off 0 and 1 so that evaluation mode
    (the running statistics, not the batch's) shows in the logits."""
    state = initial_weights(model, "kaiming_uniform", 0)
    for key, value in state.items():
        if key.endswith("running_mean"):
            state[key] = rng.normal(0, 0.5, value.shape).astype(np.float32)
        elif key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
    return state


@pytest.mark.parametrize("model", ["modern", "classic", "vgg"])
def test_the_torch_runner_gives_the_numpy_runners_logits(model, rng, one_torch_thread):
    state = weights(model, rng)
    x = rng.normal(0, 1, (40, 1, 28, 28)).astype(np.float32)
    ours, theirs = TorchRunner(model, state).logits(x), NumpyRunner(model, state).logits(x)
    assert ours.dtype == theirs.dtype == np.float32 and ours.shape == (40, 10)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())  # float32 rounding
    assert np.array_equal(ours.argmax(axis=1), theirs.argmax(axis=1))


def test_the_torch_runner_computes_in_float64_when_asked(rng, one_torch_thread):
    state = weights("modern", rng)
    x = rng.normal(0, 1, (8, 1, 28, 28))
    ours = TorchRunner("modern", state, dtype=np.float64).logits(x)
    theirs = NumpyRunner("modern", state, dtype=np.float64).logits(x)
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-10)


def test_a_runner_refuses_another_models_weights(rng, one_torch_thread):
    for runner in (NumpyRunner, TorchRunner):
        with pytest.raises(ValueError, match="classic|modern"):
            runner("classic", weights("modern", rng))


def test_the_numpy_runner_with_workers_gives_the_engines_bits(rng):
    """threads=2: the engine's executor and its pieces, so the same logits to the last bit, without an
    optimizer; close() stops the worker processes."""
    state = weights("modern", rng)
    x = rng.normal(0, 1, (600, 1, 28, 28)).astype(np.float32)
    engine = NumpyEngine(ModelConfig(name="modern"), OptimizerConfig(), threads=2)
    engine.load_state_dict(state)
    runner = NumpyRunner("modern", state, threads=2)
    try:
        assert np.array_equal(runner.logits(x), engine.logits(x))
    finally:
        runner.close()
        engine.close()


def run_python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (so that what it imports is its own); it must exit 0."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.mark.parametrize("engine, threads", [("torch", 1), ("numpy", 1), ("numpy", 2)])
def test_loading_a_model_to_predict_builds_no_optimizer(untrained_checkpoint, engine, threads):
    if engine == "torch":
        pytest.importorskip("torch")
    code = (
        "import json, sys\n"
        "from lenet5.predict import Predictor\n"
        f"p = Predictor.from_checkpoint({str(untrained_checkpoint)!r}, engine={engine!r}, threads={threads})\n"
        "p.close()\n"
        "print(json.dumps([type(p.model).__name__, sorted(m for m in sys.modules if m.startswith('lenet5'))]))\n"
    )
    proc = run_python(code)
    runner, loaded = json.loads(proc.stdout.splitlines()[-1])
    assert runner == {"torch": "TorchRunner", "numpy": "NumpyRunner"}[engine]
    unwanted = (*OPTIMIZERS, "lenet5.engines.torch.engine", "lenet5.engines.numpy.engine", "lenet5.export")
    assert not set(unwanted) & set(loaded), sorted(set(unwanted) & set(loaded))


def test_the_torch_runner_without_torch_says_what_to_install(untrained_checkpoint):
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any 'import torch' now fails
        "from lenet5.errors import Lenet5Error\n"
        "from lenet5.predict import Predictor\n"
        "try:\n"
        f"    Predictor.from_checkpoint({str(untrained_checkpoint)!r}, engine='torch')\n"
        "except Lenet5Error as exc:\n"
        "    print(exc)\n"
    )
    proc = run_python(code)
    assert "pip install" in proc.stdout and "--engine numpy" in proc.stdout, proc.stdout
