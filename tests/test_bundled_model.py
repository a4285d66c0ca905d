"""The model inside the package: what its card says, and every command works with it and no --model."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from conftest import lenet5
from lenet5.checkpoint import BUNDLED, load_checkpoint
from lenet5.predict import Predictor

CARD = BUNDLED.parent / "MODEL_CARD.md"


def card_number(label: str) -> float:
    """A number from the card's table row starting with ``label``."""
    row = next(line for line in CARD.read_text().splitlines() if line.startswith(f"| {label} |"))
    return float(re.search(r"([0-9.]+)%?\**\s*(\(|\|)", row.split("|", 2)[2]).group(1))


def test_the_bundled_weights_score_what_the_card_says(mnist):
    predictor = Predictor.from_checkpoint(BUNDLED, threads=0)
    accuracy = float(np.mean(predictor.logits(mnist.test_images).argmax(1) == mnist.test_labels))
    # fixed weights, but another BLAS may round a near-tie the other way: a digit either way
    assert 100 * accuracy == pytest.approx(card_number("MNIST test accuracy"), abs=0.011)
    meta = load_checkpoint(BUNDLED).meta
    card = CARD.read_text()
    assert meta["model"] == "modern" and f"softmax(logits / {meta['calibration']['temperature']:.3f})" in card
    assert f"{100 * meta['metrics']['val_accuracy']:.2f}%" in card
    reject = meta["calibration"]["reject"]
    assert f"**{reject['digit']:.4f}**" in card and f"**{reject['number']:.6f}**" in card
    words = " ".join(card.split())  # the card's text, line breaks aside
    assert f"by at least {reject['digit_margin']:.2f} in log units" in words
    assert reject["number_margin"] == 0.0 and "no margin asked" in words


def test_predict_serve_evaluate_summary_need_no_model(tmp_path, mnist):
    digit = tmp_path / "seven.png"
    Image.fromarray(255 - mnist.test_images[0]).save(digit)  # black on white, as written on paper
    result = lenet5("predict", digit, "--json", check=True)
    (reading,) = json.loads(result.stdout)
    assert reading["digit"] == int(mnist.test_labels[0]) and not reading["unsure"]
    summary = json.loads(lenet5("summary", "--json", check=True).stdout)
    assert summary["model"] == "modern" and summary["file"] == str(BUNDLED) and summary["parameters"] == 61706


def test_export_of_the_bundled_model_lands_in_the_current_folder(tmp_path):
    lenet5("export", cwd=tmp_path, check=True)
    assert (tmp_path / BUNDLED.with_suffix(".onnx").name).is_file()
    assert not BUNDLED.with_suffix(".onnx").exists()  # never written into the installed package
