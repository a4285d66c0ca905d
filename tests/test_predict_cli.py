"""`lenet5 predict` as a user runs it: a real process, real image files, a real trained checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import lenet5


@pytest.fixture(scope="module")
def samples(mnist, tmp_path_factory):
    """Six real MNIST test digits written as black-on-white PNGs (3x size) in a folder, and their labels."""
    folder = tmp_path_factory.mktemp("digits")
    labels = {}
    for i in range(6):
        name = f"digit_{i}_{mnist.test_labels[i]}.png"
        Image.fromarray(255 - mnist.test_images[i]).resize((84, 84), Image.Resampling.LANCZOS).save(folder / name)
        labels[str(folder / name)] = int(mnist.test_labels[i])
    return folder, labels


def test_human_output_names_each_file_and_its_digit(trained_checkpoint, samples):
    folder, labels = samples
    files = sorted(labels)[:3]
    proc = lenet5("predict", "--model", str(trained_checkpoint), *files)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3
    for line, path in zip(lines, files):
        assert line.startswith(f"{path}: {labels[path]}  (")
        assert "top-3:" in line


def test_json_is_one_document_with_digit_probability_and_top_k(trained_checkpoint, samples):
    folder, labels = samples
    proc = lenet5("predict", "--model", str(trained_checkpoint), str(folder), "--json", "--top-k", "4")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["file"] for r in results] == sorted(labels)  # a folder expands to its images, sorted
    for r in results:
        assert (
            set(r)
            == {
                "file",
                "digit",
                "probability",
                "top_k",
                "box",
                "number",
                "digits",
                "confidence",
                "margin",
                "left_out",
                "unsure",
            }
            or r["unsure"]
        )
        assert r["number"] == str(r["digit"]) and r["digits"][0]["box"] == r["box"]
        assert r["digit"] == labels[r["file"]]
        assert len(r["top_k"]) == 4 and r["top_k"][0] == [r["digit"], r["probability"]]
        probs = [p for _, p in r["top_k"]]
        assert probs == sorted(probs, reverse=True) and 0.5 < r["probability"] <= 1.0


def test_globs_and_npy_stacks(trained_checkpoint, samples, mnist, tmp_path):
    folder, labels = samples
    np.save(tmp_path / "stack.npy", mnist.test_images[:3])
    proc = lenet5(
        "predict",
        "--model",
        str(trained_checkpoint),
        str(folder / "digit_[01]_*.png"),
        str(tmp_path / "stack.npy"),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["file"] for r in results] == sorted(labels)[:2] + [f"{tmp_path / 'stack.npy'}[{i}]" for i in range(3)]
    assert [r["digit"] for r in results[2:]] == [int(v) for v in mnist.test_labels[:3]]


def test_bad_files_fail_alone_and_exit_1(trained_checkpoint, samples, tmp_path):
    folder, labels = samples
    good = sorted(labels)[0]
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    np.save(tmp_path / "nan.npy", np.full((28, 28), np.nan))
    bad = [str(tmp_path / n) for n in ("notes.png", "empty.jpg", "nan.npy", "missing.png")]
    proc = lenet5("predict", "--model", str(trained_checkpoint), bad[0], good, *bad[1:], "--json")
    assert proc.returncode == 1
    results = json.loads(proc.stdout)
    assert [r["file"] for r in results] == [bad[0], good, *bad[1:]]
    assert results[1]["digit"] == labels[good]
    errors = {r["file"]: r["error"] for r in results if "error" in r}
    assert set(errors) == set(bad)
    assert "not an image" in errors[bad[0]] and "empty file" in errors[bad[1]]
    assert "NaN" in errors[bad[2]] and "no such file" in errors[bad[3]]
    assert "4 of 5" in proc.stderr and "Traceback" not in proc.stderr

    human = lenet5("predict", "--model", str(trained_checkpoint), good, bad[0])
    assert human.returncode == 1
    assert human.stdout.splitlines()[1].startswith(f"error: {bad[0]}: not an image")


@pytest.mark.parametrize("model", ["missing.safetensors", "garbage.safetensors", "folder"])
def test_bad_model_is_one_line_and_exit_2(model, samples, tmp_path):
    folder, labels = samples
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 64)
    (tmp_path / "folder").mkdir()
    proc = lenet5("predict", "--model", str(tmp_path / model), sorted(labels)[0])
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr


def test_top_k_out_of_range_is_a_user_error(trained_checkpoint, samples):
    proc = lenet5("predict", "--model", str(trained_checkpoint), sorted(samples[1])[0], "--top-k", "11")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --top-k")


def test_save_prepared_writes_what_the_network_saw(trained_checkpoint, samples, mnist, tmp_path):
    folder, labels = samples
    out = tmp_path / "seen"
    np.save(tmp_path / "pair.npy", mnist.test_images[:2])
    proc = lenet5(
        "predict",
        "--model",
        str(trained_checkpoint),
        str(folder),
        str(tmp_path / "pair.npy"),
        "--save-prepared",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"digit_{i}_{mnist.test_labels[i]}.png" for i in range(6)] + ["pair_0.png", "pair_1.png"])
    first = np.asarray(Image.open(out / names[0]))
    assert first.shape == (28, 28) and first.dtype == np.uint8
    assert np.abs(first.astype(int) - mnist.test_images[0]).mean() < 12  # close to the MNIST original
    assert np.array_equal(np.asarray(Image.open(out / "pair_1.png")), mnist.test_images[1])


def test_predict_never_imports_torch(trained_checkpoint, samples):
    code = (
        "import sys; from lenet5.cli import main; "
        f"rc = main(['predict', '--model', {str(trained_checkpoint)!r}, {sorted(samples[1])[0]!r}, '--json']); "
        "print('HEAVY', [m for m in ('torch', 'matplotlib') if m in sys.modules], rc, file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY [] 0" in proc.stderr, proc.stderr


def test_exported_onnx_model_predicts_the_same(trained_checkpoint, samples, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[onnx]')")
    pytest.importorskip("lenet5.export")
    onnx_path = tmp_path / "model.onnx"
    exported = lenet5("export", "--model", str(trained_checkpoint), "--output", str(onnx_path))
    assert exported.returncode == 0, exported.stderr
    files = sorted(samples[1])
    from_onnx = json.loads(lenet5("predict", "--model", str(onnx_path), *files, "--json").stdout)
    from_numpy = json.loads(lenet5("predict", "--model", str(trained_checkpoint), *files, "--json").stdout)
    assert [r["digit"] for r in from_onnx] == [r["digit"] for r in from_numpy]
    assert all(abs(a["probability"] - b["probability"]) < 1e-4 for a, b in zip(from_onnx, from_numpy))


def test_save_prepared_tells_files_with_the_same_stem_apart(mnist, tmp_path):
    """x.png and x.jpg are saved as x_png.png and x_jpg.png, not x.png and x-2.png."""
    digit = Image.fromarray(255 - mnist.test_images[0])
    digit.save(tmp_path / "x.png")
    digit.convert("RGB").save(tmp_path / "x.jpg", quality=95)
    out = tmp_path / "seen"
    lenet5("predict", tmp_path / "x.png", tmp_path / "x.jpg", "--save-prepared", out, check=True)
    assert sorted(p.name for p in out.iterdir()) == ["x_jpg.png", "x_png.png"]


def test_predict_imports_nothing_of_training():
    """Reading one image runs the network forward only: no optimizer, no worker process module, no torch, no
    onnxruntime, and nothing of a training run (the trainer, the run folder, the tuner)."""
    examples = Path(__file__).resolve().parents[1] / "examples" / "digits" / "seven.png"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lenet5", "predict", str(examples)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "lenet5.inference" in imported
    engine_training = ("lenet5.engines.numpy.optim", "lenet5.engines.numpy.workers", "lenet5.free_cores")
    other_runners = ("torch", "onnxruntime", "lenet5.export")
    runs = ("lenet5.training.trainer", "lenet5.training.run", "lenet5.training.callbacks", "lenet5.tune")
    unwanted = set(engine_training + other_runners + runs)
    assert not unwanted & imported, sorted(unwanted & imported)


def test_the_forward_only_runner_gives_the_engines_logits(trained_checkpoint, mnist):
    from lenet5.checkpoint import load_checkpoint
    from lenet5.config import ModelConfig, OptimizerConfig
    from lenet5.data.datasets import normalize
    from lenet5.engines import create_engine
    from lenet5.inference import NumpyRunner

    ckpt = load_checkpoint(trained_checkpoint)
    engine = create_engine("numpy", ModelConfig(name=ckpt.model), OptimizerConfig(), threads=1)
    engine.load_state_dict(ckpt.weights)
    x = normalize(mnist.test_images[:600])  # more than one piece of the runner's
    ours, theirs = NumpyRunner(ckpt.model, ckpt.weights).logits(x), engine.logits(x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)  # other piece sizes: other float rounding
    assert np.array_equal(ours.argmax(axis=1), theirs.argmax(axis=1))
    engine.close()
