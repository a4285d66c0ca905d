"""The model inside the package: what its card says, and every command works with it and no --model."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from conftest import lenet5
from lenet5.checkpoint import BUNDLED, BUNDLED_READERS, bundled_reader, load_checkpoint
from lenet5.predict import Committee, Predictor

CARD = BUNDLED.parent / "MODEL_CARD.md"


def card_number(label: str) -> float:
    """A number from the card's table row starting with ``label``."""
    row = next(line for line in CARD.read_text().splitlines() if line.startswith(f"| {label} |"))
    return float(re.search(r"([0-9.]+)%?\**\s*(\(|\|)", row.split("|", 2)[2]).group(1))


@pytest.mark.slow  # a few seconds: in the full run, not the quick loop
def test_the_bundled_weights_score_what_the_card_says(mnist):
    """Each model alone and the three read together; fixed weights, but another BLAS may round a near-tie
    the other way: a digit either way."""
    members = [Predictor.from_checkpoint(path, threads=0) for path in BUNDLED_READERS]
    alone = [100 * float(np.mean(m.logits(mnist.test_images).argmax(1) == mnist.test_labels)) for m in members]
    row = next(line for line in CARD.read_text().splitlines() if line.startswith("| MNIST test accuracy, each"))
    assert [float(v) for v in re.findall(r"([0-9.]+)%", row)] == pytest.approx(alone, abs=0.011)
    together = Committee(members).probabilities(mnist.test_images).argmax(1) == mnist.test_labels
    assert 100 * float(np.mean(together)) == pytest.approx(
        card_number("MNIST test accuracy, the three read together"), abs=0.011
    )
    meta = load_checkpoint(BUNDLED).meta
    card = CARD.read_text()
    words = " ".join(card.split())  # the card's text, line breaks aside
    assert meta["model"] == "modern" and f"({meta['calibration']['temperature']:.3f}," in words
    assert f"{100 * meta['metrics']['val_accuracy']:.2f}%" in card
    reject = meta["calibration"]["reject"]  # the first model's own rule, named in passing
    assert f"{reject['digit']:.4f} with a margin of {reject['digit_margin']:.2f}" in words
    assert f"{reject['number']:.6f} for a number" in words


def test_the_bundled_reader_is_a_committee_with_the_rule_fitted_for_it():
    """No --model: the three models read together, with the thresholds the card states in bold."""
    assert bundled_reader() == list(BUNDLED_READERS)
    committee = Committee.from_checkpoints(bundled_reader())
    rule = load_checkpoint(BUNDLED).meta["calibration"]["committee_reject"]
    assert committee.own_rule is not None and committee.fitted_reject
    assert (committee.sure_digit, committee.sure_number) == (rule["digit"], rule["number"])
    card = CARD.read_text()
    assert f"**{rule['digit']:.4f}**" in card and f"**{rule['number']:.6f}**" in card
    words = " ".join(card.split())
    assert rule["digit_margin"] == 0.0 and "no margin is asked of a single digit" in words
    assert f"by at least {rule['number_margin']:.2f} in log units" in words


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
