"""Honest probabilities: the temperature is found, ECE falls, and every way of predicting applies it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lenet5.calibration import calibrate, energy, expected_calibration_error, fit_temperature
from lenet5.checkpoint import load_checkpoint, save_checkpoint
from lenet5.errors import CheckpointError
from lenet5.metrics import softmax
from lenet5.predict import Predictor


def sampled(temperature: float, n: int = 20000, seed: int = 0):
    """Logits and labels drawn from softmax(logits / temperature): the temperature that fits them is known."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, (n, 10))
    p = softmax(logits / temperature)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return logits, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_the_temperature_that_made_the_labels(true_t):
    logits, labels = sampled(true_t)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)


def test_calibration_lowers_the_expected_calibration_error_of_an_over_confident_model():
    logits, labels = sampled(2.5)  # the raw logits are 2.5x too sure
    before = expected_calibration_error(softmax(logits), labels)
    cal = calibrate(logits, labels)
    assert cal["val_ece_before"] == pytest.approx(before, abs=1e-6) and before > 0.1
    assert cal["val_ece_after"] < 0.02
    assert np.quantile(energy(logits), 0.02) == pytest.approx(cal["energy_floor"], abs=1e-5)


def test_ece_of_a_perfectly_calibrated_model_is_small_and_of_a_wrong_one_large():
    logits, labels = sampled(1.0)
    assert expected_calibration_error(softmax(logits), labels) < 0.02
    assert expected_calibration_error(softmax(logits * 5), labels) > 0.1


def test_predictor_divides_logits_by_the_checkpoints_temperature(trained_checkpoint, mnist, tmp_path):
    ckpt = load_checkpoint(trained_checkpoint)
    hot = tmp_path / "hot.safetensors"
    save_checkpoint(hot, ckpt.weights, engine="numpy", model="modern", calibration={"temperature": 3.0})
    x = mnist.test_images[:50]
    plain = Predictor.from_checkpoint(hot)
    logits = plain.logits(x)
    assert np.allclose(plain.probabilities(x), softmax(logits / 3.0))
    assert (plain.probabilities(x).argmax(1) == logits.argmax(1)).all()  # the answer never changes, only how sure


@pytest.mark.parametrize(
    "calibration",
    [
        {"temperature": -1},
        {"temperature": "hot"},
        {"temperature": 1e9},
        {"temperature": 1.0, "energy_floor": "x"},
        [1, 2],
        {"energy_floor": 3},
    ],
)
def test_damaged_calibration_is_one_clear_error(trained_checkpoint, tmp_path, calibration):
    ckpt = load_checkpoint(trained_checkpoint)
    bad = tmp_path / "bad.safetensors"
    save_checkpoint(bad, ckpt.weights, engine="numpy", model="modern", calibration=calibration)
    with pytest.raises(CheckpointError, match="calibration"):
        load_checkpoint(bad)


def test_nan_temperature_in_the_file_is_refused(trained_checkpoint, tmp_path):
    from safetensors.numpy import save

    ckpt = load_checkpoint(trained_checkpoint)
    bad = tmp_path / "nan.safetensors"
    meta = {"format": "lenet5-checkpoint", "model": "modern", "calibration": '{"temperature": NaN}'}
    bad.write_bytes(save({k: np.ascontiguousarray(v) for k, v in ckpt.weights.items()}, metadata=meta))
    with pytest.raises(CheckpointError, match="calibration temperature"):
        load_checkpoint(bad)


def test_onnx_export_carries_the_calibration(trained_checkpoint, mnist, tmp_path):
    pytest.importorskip("onnxruntime")
    from lenet5.export import export_onnx

    ckpt = load_checkpoint(trained_checkpoint)
    onnx_path = export_onnx(ckpt.weights, "modern", tmp_path / "m.onnx", calibration=ckpt.meta["calibration"])
    native, exported = Predictor.from_checkpoint(trained_checkpoint), Predictor.from_checkpoint(onnx_path)
    assert exported.temperature == native.temperature != 1.0
    assert exported.energy_floor == pytest.approx(native.energy_floor)
    x = mnist.test_images[:100]
    assert np.allclose(exported.probabilities(x), native.probabilities(x), atol=1e-5)
    assert json.dumps(ckpt.meta["calibration"])  # plain JSON in the checkpoint
