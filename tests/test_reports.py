"""The report pictures: each is a real PNG, written atomically, with no figure left open (no MNIST needed)."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from lenet5 import reports


def digit_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White-on-black 28x28 uint8 digits drawn with a font and jittered a little: (N, 28, 28)."""
    try:
        font = ImageFont.load_default(size=22)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        font = ImageFont.load_default()
    out = np.zeros((len(labels), 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        canvas = Image.new("L", (28, 28))
        dx, dy = rng.integers(-2, 3, size=2)
        ImageDraw.Draw(canvas).text((14 + dx, 14 + dy), str(label), fill=255, font=font, anchor="mm")
        out[i] = np.asarray(canvas)
    return out


def fake_predictions(labels: np.ndarray, rng: np.random.Generator, n_wrong: int) -> np.ndarray:
    """Probabilities (N, 10): confident and right, except ``n_wrong`` confident mistakes."""
    n = len(labels)
    predicted = labels.copy()
    wrong = rng.choice(n, size=n_wrong, replace=False)
    predicted[wrong] = (labels[wrong] + rng.integers(1, 10, size=n_wrong)) % 10
    logits = rng.normal(0.0, 1.0, size=(n, 10))
    logits[np.arange(n), predicted] += rng.uniform(2.0, 9.0, size=n)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


def confusion(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    cm = np.zeros((10, 10), dtype=np.int64)
    np.add.at(cm, (labels, probabilities.argmax(axis=1)), 1)
    return cm


def history(epochs: int, validation: bool = True) -> list[dict]:
    rows = []
    for e in range(1, epochs + 1):
        rows.append(
            {
                "epoch": e,
                "train_loss": 0.9 / e,
                "train_accuracy": 1 - 0.2 / e,
                "val_loss": 0.8 / e + 0.01 if validation else None,
                "val_accuracy": 1 - 0.18 / e if validation else float("nan"),
                "lr": 1e-3 * 0.5 ** (e - 1),
                "seconds": 12.5,
            }
        )
    return rows


@pytest.fixture()
def sample():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 10, size=200)
    images = digit_images(labels, rng)
    probabilities = fake_predictions(labels, rng, n_wrong=15)
    return images, labels, probabilities


@pytest.fixture(autouse=True)
def no_figures_left_open():
    plt.close("all")
    yield
    assert plt.get_fignums() == [], "a report function left a matplotlib figure open"


def assert_png(path, min_side: int = 200) -> None:
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) >= min_side and max(image.size) <= 4000, image.size
    leftovers = [name for name in os.listdir(path.parent) if name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.parametrize("epochs", [1, 10])
def test_training_history_plots_one_and_many_epochs(tmp_path, epochs):
    out = reports.plot_training_history(history(epochs), tmp_path / "history.png")
    assert out == tmp_path / "history.png"
    assert_png(out)


def test_training_history_without_validation_split(tmp_path):
    assert_png(reports.plot_training_history(history(5, validation=False), tmp_path / "history.png"))


def test_training_history_rejects_empty_history(tmp_path):
    with pytest.raises(ValueError):
        reports.plot_training_history([], tmp_path / "history.png")
    assert list(tmp_path.iterdir()) == []


def test_confusion_matrix_writes_png(tmp_path, sample):
    _, labels, probabilities = sample
    cm = confusion(labels, probabilities)
    assert_png(reports.plot_confusion_matrix(cm, tmp_path / "cm.png", title="test set"))


def test_confusion_matrix_with_an_empty_class(tmp_path):
    cm = np.diag([100] * 9 + [0])
    assert_png(reports.plot_confusion_matrix(cm, tmp_path / "cm.png"))


def test_predictions_grid_writes_png(tmp_path, sample):
    assert_png(reports.plot_predictions(*sample, tmp_path / "pred.png", n=36, seed=0))


def test_predictions_with_fewer_images_than_requested(tmp_path, sample):
    images, labels, probabilities = (a[:5] for a in sample)
    assert_png(reports.plot_predictions(images, labels, probabilities, tmp_path / "pred.png"), min_side=100)


def test_misclassified_writes_png(tmp_path, sample):
    assert_png(reports.plot_misclassified(*sample, tmp_path / "wrong.png", n=24))


def test_misclassified_with_no_mistakes_still_writes_a_file(tmp_path, sample):
    images, labels, _ = sample
    perfect = np.eye(10)[labels]
    assert_png(reports.plot_misclassified(images, labels, perfect, tmp_path / "wrong.png"), min_side=100)


@pytest.mark.slow
def test_write_reports_writes_all_four(tmp_path, sample):
    images, labels, probabilities = sample
    cm = confusion(labels, probabilities)
    written = reports.write_reports(tmp_path / "run", history(3), images, labels, probabilities, cm)
    assert sorted(p.name for p in written.values()) == sorted(
        ["training_history.png", "confusion_matrix.png", "predictions.png", "misclassified.png"]
    )
    for path in written.values():
        assert_png(path, min_side=100)
    assert sorted(os.listdir(tmp_path / "run")) == sorted(p.name for p in written.values())


def test_write_reports_skips_history_when_empty(tmp_path, sample):
    images, labels, probabilities = sample
    written = reports.write_reports(tmp_path, [], images, labels, probabilities, confusion(labels, probabilities))
    assert "training_history.png" not in {p.name for p in written.values()}
    assert len(written) == 3


@pytest.mark.slow
def test_many_calls_leave_no_figures_open(tmp_path, sample):
    for i in range(5):
        reports.plot_misclassified(*sample, tmp_path / f"wrong{i}.png", n=4)
        reports.plot_training_history(history(2), tmp_path / f"h{i}.png")
    assert plt.get_fignums() == []
