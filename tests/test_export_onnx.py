"""ONNX export: a checked graph that onnxruntime runs to the NumPy engine's logits, for any batch size."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import lenet5

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from lenet5.config import ModelConfig, OptimizerConfig  # noqa: E402
from lenet5.data.datasets import normalize  # noqa: E402
from lenet5.engines.numpy.engine import NumpyEngine  # noqa: E402
from lenet5.errors import CheckpointError  # noqa: E402
from lenet5.export import export_onnx  # noqa: E402
from lenet5.inference import OnnxModel  # noqa: E402

MODELS = ("modern", "classic")


def numpy_engine(model: str, steps: int = 0, seed: int = 0) -> NumpyEngine:
    engine = NumpyEngine(ModelConfig(name=model), OptimizerConfig(name="adam"), seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)
        engine.train_step(x, rng.integers(0, 10, 32), 1e-3)
    return engine


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("steps", [0, 5], ids=["initialised", "trained"])
def test_exported_model_gives_the_numpy_engines_logits(model, steps, tmp_path, rng):
    engine = numpy_engine(model, steps)
    path = export_onnx(engine.state_dict(), model, tmp_path / f"{model}.onnx")
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    runner = OnnxModel(path)
    assert runner.model_name == model
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(runner.logits(x), engine.logits(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("model", MODELS)
def test_batch_dimension_is_dynamic(model, tmp_path, rng):
    engine = numpy_engine(model)
    path = export_onnx(engine.state_dict(), model, tmp_path / "m.onnx")
    graph = onnx.load(str(path)).graph
    assert graph.input[0].name == "image" and graph.output[0].name == "logits"
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    runner = OnnxModel(path)
    for n in (1, 37):
        x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
        out = runner.logits(x)
        assert out.shape == (n, 10) and out.dtype == np.float32
        np.testing.assert_allclose(out, engine.logits(x), rtol=0, atol=1e-5)


@pytest.mark.slow  # a few seconds: in the full run, not the quick loop
def test_exported_model_matches_on_the_10000_mnist_test_images(mnist, tmp_path):
    engine = numpy_engine("modern", steps=3)
    x = normalize(mnist.test_images)
    runner = OnnxModel(export_onnx(engine.state_dict(), "modern", tmp_path / "m.onnx"))
    got, expected = runner.logits(x), engine.logits(x)
    assert got.shape == (10000, 10)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    assert np.mean(got.argmax(1) == expected.argmax(1)) > 0.999


def test_export_writes_atomically_and_replaces_an_old_file(tmp_path):
    out = tmp_path / "sub" / "model.onnx"
    export_onnx(numpy_engine("classic").state_dict(), "classic", out)
    export_onnx(numpy_engine("modern").state_dict(), "modern", out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]  # no temp file left behind
    assert OnnxModel(out).model_name == "modern"


def test_export_rejects_weights_that_do_not_fit_the_model(tmp_path):
    state = numpy_engine("modern").state_dict()
    with pytest.raises(ValueError, match="conv3.weight"):
        export_onnx(state, "classic", tmp_path / "x.onnx")
    state["fc1.weight"] = state["fc1.weight"][:, :10]
    with pytest.raises(ValueError, match="fc1.weight"):
        export_onnx(state, "modern", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_onnx_model_refuses_a_broken_file_with_one_clear_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model at all")
    with pytest.raises(CheckpointError, match="bad.onnx") as info:
        OnnxModel(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="missing.onnx"):
        OnnxModel(tmp_path / "missing.onnx")


def test_export_does_not_need_torch(tmp_path):
    out = tmp_path / "m.onnx"
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any 'import torch' now fails
        "from lenet5.engines.numpy.engine import NumpyEngine\n"
        "from lenet5.export import export_onnx\n"
        "from lenet5.inference import OnnxModel\n"
        f"export_onnx(NumpyEngine(seed=0).state_dict(), 'modern', {str(out)!r})\n"
        f"assert OnnxModel({str(out)!r}).model_name == 'modern'\n"
        "assert 'torch' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert out.exists()


def test_export_refuses_to_overwrite_the_checkpoint_it_reads(tmp_path):
    from lenet5.checkpoint import save_checkpoint
    from lenet5.engines.numpy.engine import NumpyEngine

    ckpt = tmp_path / "model.safetensors"
    save_checkpoint(ckpt, NumpyEngine(seed=0).state_dict(), engine="numpy", model="modern")
    before = ckpt.read_bytes()
    (tmp_path / "link.safetensors").symlink_to(ckpt)
    for output in (ckpt, tmp_path / "." / "model.safetensors", tmp_path / "link.safetensors"):
        proc = lenet5("export", "--model", ckpt, "--format", "onnx", "--output", output)
        assert proc.returncode == 2 and proc.stderr.startswith("error: --output") and len(proc.stderr.splitlines()) == 1
    assert ckpt.read_bytes() == before
