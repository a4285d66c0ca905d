"""What the reader is trained on: MNIST digits in other hands, fields with the reader's own mistakes, and
things that are not digits; and the reject rule chosen from a risk-coverage curve."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from lenet5.calibration import check_reject, risk_coverage, threshold_for_risk
from lenet5.data.hands import HandStyle, hand_style
from lenet5.data.nondigits import GLYPHS, KINDS, non_digits
from lenet5.training.reader import NON_DIGIT_SHARE, epoch_data


def centre_of_mass(fields: np.ndarray) -> np.ndarray:
    w = fields.astype(np.float64)
    idx = np.arange(28)
    total = w.sum(axis=(1, 2))
    return np.stack([(w.sum(axis=2) @ idx) / total, (w.sum(axis=1) @ idx) / total], 1)


def test_hand_style_gives_mnist_like_fields_and_is_seeded(mnist):
    digits = mnist.train_images[:200]
    a = hand_style(digits, np.random.default_rng(5))
    b = hand_style(digits, np.random.default_rng(5))
    assert a.dtype == np.uint8 and a.shape == digits.shape
    assert np.array_equal(a, b)
    assert not np.array_equal(a, hand_style(digits, np.random.default_rng(6)))
    assert (a.reshape(200, -1).max(axis=1) > 32).all()  # no digit vanished (a hairline comes out faint)
    plain = hand_style(digits, np.random.default_rng(5), HandStyle(neighbour=0.0, shift=0.0, box=(20, 20)))
    assert np.abs(centre_of_mass(plain) - 13.5).max() < 2.0  # the reader's recipe centres them like MNIST


def test_hand_style_changes_strokes_width_and_slant(mnist):
    digit = mnist.train_images[:1]  # a 5
    thin = hand_style(
        digit,
        np.random.default_rng(0),
        HandStyle(width=(-2, -2), slant=(0, 0), aspect=(1, 1), rotation=(0, 0), neighbour=0, saturate=0, blur=0),
    )
    thick = hand_style(
        digit,
        np.random.default_rng(0),
        HandStyle(width=(3, 3), slant=(0, 0), aspect=(1, 1), rotation=(0, 0), neighbour=0, saturate=0, blur=0),
    )
    assert (thick > 128).sum() > 1.5 * (thin > 128).sum()


def test_non_digits_are_every_kind_and_never_blank(mnist):
    fields = non_digits(300, np.random.default_rng(1), mnist.train_images[:500])
    assert fields.shape == (300, 28, 28) and fields.dtype == np.uint8
    assert (fields.reshape(300, -1).max(axis=1) > 60).all()
    assert np.array_equal(fields, non_digits(300, np.random.default_rng(1), mnist.train_images[:500]))
    assert set(KINDS) >= {"glyph", "typed", "pair", "piece", "box"} and min(KINDS.values()) > 0
    assert not set(GLYPHS) & set("0123456789OoIlSZBGbgqasz")  # nothing people also write for a digit


def test_an_epoch_holds_every_training_digit_once_and_the_non_digits(mnist):
    x, y = mnist.train_images[:400], mnist.train_labels[:400].astype(np.int64)
    ex, ey = epoch_data(x, y, seed=0, epoch=3)
    assert len(ex) == len(ey) == 400 + int(NON_DIGIT_SHARE * 400)
    assert (ey == -1).sum() == int(NON_DIGIT_SHARE * 400)
    assert np.array_equal(np.bincount(ey[ey >= 0], minlength=10), np.bincount(y, minlength=10))
    again = epoch_data(x, y, seed=0, epoch=3)
    assert np.array_equal(ex, again[0]) and np.array_equal(ey, again[1])
    assert not np.array_equal(ex, epoch_data(x, y, seed=0, epoch=4)[0])


def test_risk_coverage_counts_the_kept_answers_and_their_errors():
    conf = np.array([0.99, 0.95, 0.9, 0.9, 0.6, 0.3])
    right = np.array([True, True, False, True, False, True])
    t, cov, risk = risk_coverage(conf, right)
    assert list(t) == [0.3, 0.6, 0.9, 0.95, 0.99]
    assert list(cov) == pytest.approx([1.0, 5 / 6, 4 / 6, 2 / 6, 1 / 6])
    assert list(risk) == pytest.approx([2 / 6, 2 / 5, 1 / 4, 0.0, 0.0])
    assert threshold_for_risk(conf, right, 0.01) == 0.95  # the widest coverage with no error at or above it
    assert threshold_for_risk(conf, right, 0.3, floor=0.0) == 0.9  # 1 wrong in 4 kept; at 0.6, 2 in 5
    assert threshold_for_risk(conf, right, 0.5, floor=0.0) == 0.3
    assert threshold_for_risk(conf, right, 0.5, floor=0.8) == 0.8
    assert threshold_for_risk(np.array([0.9]), np.array([False]), 0.01) == 1.0  # nothing can be kept
    # one error among the surest answers: no trend over fewer than min_kept answers
    conf2, right2 = np.array([0.99, 0.98, 0.9, 0.8, 0.7]), np.array([False, True, True, True, True])
    assert threshold_for_risk(conf2, right2, 0.25, floor=0.0) == 1.0
    assert threshold_for_risk(conf2, right2, 0.25, floor=0.0, min_kept=4) == 0.7


def test_threshold_holds_its_risk_on_fresh_samples_from_the_same_source():
    """Chosen on one sample, the threshold keeps the risk near its target on another (a curve, not one point)."""

    def sample(seed):
        rng = np.random.default_rng(seed)
        conf = rng.beta(5, 1, 20000)
        return conf, rng.random(20000) < conf  # right with probability = confidence

    t = threshold_for_risk(*sample(0), 0.02)
    conf, right = sample(1)
    assert 0.005 < (~right[conf >= t]).mean() < 0.03


@pytest.mark.parametrize("reject", [{"digit": 1.5}, {"number": -0.1}, {"digit": True}, {"digit": "0.9"}, [0.9]])
def test_a_damaged_reject_rule_is_refused(reject):
    with pytest.raises(ValueError, match="reject"):
        check_reject(reject)


@pytest.mark.slow  # a real (short) run of the reader's training: about 20 s
def test_a_short_reader_run_learns_and_never_overwrites_another(tmp_path):
    pytest.importorskip("torch")
    from conftest import LENET5
    from lenet5.checkpoint import load_checkpoint
    from lenet5.predict import Predictor

    out = tmp_path / "reader"
    cmd = [LENET5[0], "-m", "lenet5.training.reader", "--epochs", "2", "--limit", "3000", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    meta = load_checkpoint(out / "model.safetensors").meta
    assert meta["metrics"]["test_accuracy"] > 0.8  # 3,000 digits, two epochs: far above a guess's 10%
    history = json.loads((out / "history.json").read_text())["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    Predictor.from_checkpoint(out / "model.safetensors")  # loads and passes the probe
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and again.stderr.startswith("error:") and "Traceback" not in again.stderr
