"""A committee of models (Ciresan et al. 2012): `evaluate` and `predict` with several --model read the mean of
the members' calibrated probabilities (each with its own normalization and temperature); a committee of one
model reads as that model; a member that cannot be one is one error line naming its file, exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import lenet5
from lenet5.checkpoint import BUNDLED, load_checkpoint, save_checkpoint
from lenet5.metrics import softmax
from lenet5.models import initial_weights
from lenet5.predict import Committee, Predictor

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def random_model(
    folder: Path, seed: int, temperature: float | None = None, model: str = "modern", calibration: dict | None = None
) -> Path:
    """A freshly initialised model with seed ``seed`` (and a fitted temperature, or a whole calibration, when
    given)."""
    path = folder / f"{model}-{seed}.safetensors"
    if calibration is None and temperature is not None:
        calibration = {"temperature": temperature}
    save_checkpoint(
        path, initial_weights(model, "kaiming_uniform", seed), engine="numpy", model=model, calibration=calibration
    )
    return path


def scaled_bundled(folder: Path, scale: float) -> Path:
    """The bundled model with its last layer's weights scaled: other probabilities, much the same readings."""
    ckpt = load_checkpoint(BUNDLED)
    weights = dict(ckpt.weights)
    weights["fc3.weight"] = weights["fc3.weight"] * np.float32(scale)
    path = folder / f"bundled-x{scale}.safetensors"
    save_checkpoint(path, weights, engine="numpy", model=ckpt.model)
    return path


def digits(n: int = 8) -> np.ndarray:
    """Some uint8 (n, 28, 28) fields with ink in different places."""
    rng = np.random.default_rng(7)
    fields = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        r, c = rng.integers(4, 16, size=2)
        fields[i, r : r + 10, c : c + 4] = 255
    return fields


def test_a_committee_of_one_model_reads_as_the_model(tmp_path):
    one = Predictor.from_checkpoint(random_model(tmp_path, 1, temperature=1.5))
    committee = Committee([one])
    fields = digits()
    assert np.array_equal(committee.probabilities(fields), one.probabilities(fields))
    assert np.array_equal(committee.log_probabilities(fields), one.log_probabilities(fields))
    (committee_probs, committee_doubts), (probs, doubts) = committee.judge(fields), one.judge(fields)
    assert np.array_equal(committee_probs, probs) and committee_doubts == doubts


def test_a_committee_reads_the_mean_of_its_members_calibrated_probabilities(tmp_path):
    paths = [random_model(tmp_path, 1), random_model(tmp_path, 2, temperature=3.0), random_model(tmp_path, 3, None)]
    members = [Predictor.from_checkpoint(p) for p in paths]
    committee = Committee.from_checkpoints(paths)
    fields = digits()
    each = [m.probabilities(fields) for m in members]
    assert not np.allclose(each[0], each[1])  # different weights, different answers
    # the second member's own temperature is applied to its own logits
    np.testing.assert_allclose(each[1], softmax(members[1].logits(fields) / 3.0))
    np.testing.assert_allclose(committee.probabilities(fields), np.mean(each, axis=0), rtol=1e-12)
    np.testing.assert_allclose(softmax(committee.logits(fields)), np.mean(each, axis=0), rtol=1e-9)


def test_the_committee_takes_the_reject_rule_of_the_first_member_that_has_one(tmp_path):
    plain = Predictor.from_checkpoint(random_model(tmp_path, 1))
    bundled = Predictor.from_checkpoint(BUNDLED)
    assert bundled.fitted_reject and not plain.fitted_reject
    committee = Committee([plain, bundled])
    assert committee.rule_index == 1
    assert (committee.sure_digit, committee.sure_number) == (bundled.sure_digit, bundled.sure_number)
    assert (committee.margin_digit, committee.margin_number) == (bundled.margin_digit, bundled.margin_number)
    assert Committee([plain, plain]).sure_digit == plain.sure_digit  # none has one: the default rule


@pytest.mark.slow  # a few seconds: in the full run, not the quick loop
def test_evaluate_lists_the_members_and_the_committee(tmp_path, small_mnist):
    paths = [random_model(tmp_path, 1), random_model(tmp_path, 2, temperature=2.0)]
    data = ["--dataset", "idx", "--data-dir", str(small_mnist)]
    result = lenet5("evaluate", "--model", *paths, *data, "--json", check=True)
    report = json.loads(result.stdout)
    assert report["models"] == [str(p) for p in paths]
    assert [m["file"] for m in report["members"]] == [p.name for p in paths]
    from lenet5.data.datasets import load_mnist

    test = load_mnist(small_mnist, "idx")
    members = [Predictor.from_checkpoint(p) for p in paths]
    probs = np.mean([m.probabilities(test.test_images) for m in members], axis=0)
    for member, predictor in zip(report["members"], members):
        accuracy = float(np.mean(predictor.logits(test.test_images).argmax(1) == test.test_labels))
        assert member["test_accuracy"] == pytest.approx(accuracy)
        assert member["test_error"] == pytest.approx(1 - accuracy)
    committee = float(np.mean(probs.argmax(1) == test.test_labels))
    assert report["committee"]["size"] == 2
    assert report["committee"]["test_accuracy"] == pytest.approx(committee)
    assert report["committee"]["test_error"] == pytest.approx(1 - committee)
    assert report["test_accuracy"] == report["committee"]["test_accuracy"] and report["n"] == len(test.test_labels)

    repeated = lenet5("evaluate", "--model", paths[0], "--model", paths[1], *data, check=True).stdout
    lines = repeated.splitlines()
    assert lines[0].startswith(str(paths[0])) and "test accuracy" in lines[0] and "error" in lines[0]
    assert lines[1].startswith(str(paths[1]))
    assert lines[2].startswith("committee of 2 models") and f"{100 * committee:.2f}%" in lines[2]


def test_evaluate_of_one_model_is_unchanged(tmp_path, small_mnist):
    path = random_model(tmp_path, 1)
    data = ["--dataset", "idx", "--data-dir", str(small_mnist)]
    report = json.loads(lenet5("evaluate", "--model", path, *data, "--json", check=True).stdout)
    assert report["model"] == str(path) and "members" not in report and "committee" not in report


def test_predict_with_two_models_reads_a_digit(tmp_path):
    other = scaled_bundled(tmp_path, 0.8)
    image = EXAMPLES / "digits" / "seven.png"
    result = lenet5("predict", "--model", BUNDLED, "--model", other, image, "--json", check=True)
    (reading,) = json.loads(result.stdout)
    assert reading["digit"] == 7 and reading["number"] == "7"
    said = [line for line in result.stderr.splitlines() if line.startswith("committee of 2 models")]
    assert len(said) == 1 and "reject thresholds" in said[0], result.stderr
    text = lenet5("predict", "--model", BUNDLED, "--model", other, image, check=True).stdout
    assert text.startswith(f"{image}: 7  (")


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("bad", ["not-a-checkpoint", "missing"])
def test_a_member_that_cannot_be_one_is_one_line_naming_its_file(tmp_path, command, bad):
    good = random_model(tmp_path, 1)
    member = tmp_path / "member.safetensors"
    if bad == "not-a-checkpoint":
        member.write_text("these are not weights\n")
    flags = ["--model", good, "--model", member]
    result = lenet5(command, *flags, *([EXAMPLES / "digits" / "seven.png"] if command == "predict" else []))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: committee member 2 of 2: ") and str(member) in result.stderr


def test_a_rule_fitted_for_the_committee_is_used_with_exactly_those_members(tmp_path):
    """The first member may carry a reject rule fitted for it reading with other members (their files'
    SHA-256, in order): used by that committee only; in another company or order, the usual rule."""
    from lenet5.predict import file_sha256

    second, third = random_model(tmp_path, 2), random_model(tmp_path, 3)
    rule = {"digit": 0.61, "number": 0.72, "digit_margin": 0.0, "number_margin": 0.5}
    first = random_model(
        tmp_path,
        1,
        calibration={
            "temperature": 1.0,
            "reject": {"digit": 0.9, "number": 0.95},
            "committee_reject": {**rule, "partners": [file_sha256(second), file_sha256(third)]},
        },
    )
    fitted = Committee.from_checkpoints([first, second, third])
    assert (fitted.sure_digit, fitted.sure_number, fitted.margin_number) == (0.61, 0.72, 0.5)
    for others in ([third, second], [second], [second, third, random_model(tmp_path, 4)]):
        committee = Committee.from_checkpoints([first, *others])
        assert committee.own_rule is None and (committee.sure_digit, committee.sure_number) == (0.9, 0.95)


@pytest.mark.parametrize(
    "rule, says",
    [
        ({"digit": 0.5, "number": 2.0, "partners": ["0" * 64]}, "committee_reject number 2.0 is damaged"),
        ({"digit": 0.5, "number": 0.9, "partners": ["x"]}, "committee_reject is damaged"),
        ({"digit": 0.5, "number": 0.9, "partners": ["0" * 64] * 17}, "committee_reject is damaged"),
    ],
)
def test_a_damaged_committee_rule_is_one_line(tmp_path, rule, says):
    path = random_model(tmp_path, 1, calibration={"temperature": 1.0, "committee_reject": rule})
    result = lenet5("predict", "--model", path, EXAMPLES / "digits" / "seven.png", timeout=60)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert says in result.stderr, result.stderr
