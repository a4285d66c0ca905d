"""Training and evaluation pictures: history curves, confusion matrix, sample predictions, worst mistakes.

Every picture is a PNG written atomically (temporary name, then rename) with matplotlib's Agg backend,
and every figure is closed after saving so many calls never pile up open figures.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (must come after choosing the backend)
import numpy as np  # noqa: E402

from lenet5.atomic import atomic_path  # noqa: E402

DPI = 120
TRAIN_COLOR = "tab:blue"
VAL_COLOR = "tab:orange"
LR_COLOR = "tab:green"
WRONG_COLOR = "tab:red"


def _save(fig, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically, and close it whatever happens."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return path


def figure_png(fig) -> bytes:
    """``fig`` as PNG bytes in memory (for TensorBoard), closed whatever happens."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return buf.getvalue()


def _column(history: list[dict], key: str) -> np.ndarray:
    """One history column as float, with missing values (None) as NaN."""
    return np.array([np.nan if row.get(key) is None else float(row[key]) for row in history], dtype=float)


# ----------------------------------------------------------------------------------------------- history


def plot_training_history(history: list[dict], path: str | Path) -> Path:
    """Loss and accuracy per epoch (train vs validation), with the learning rate on the loss panel."""
    if not history:
        raise ValueError("plot_training_history needs at least one epoch of history")
    epochs = _column(history, "epoch")
    marker = "o" if len(history) <= 30 else None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")

    lines = _plot_pair(ax_loss, epochs, _column(history, "train_loss"), _column(history, "val_loss"), marker)
    lr_lines = _plot_lr(ax_loss, epochs, _column(history, "lr"), marker)
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy loss")
    lines += lr_lines
    top = lr_lines[0].axes if lr_lines else ax_loss  # the twin axis draws on top: legend goes there
    top.legend(lines, [ln.get_label() for ln in lines], loc="upper right")

    train_acc, val_acc = 100 * _column(history, "train_accuracy"), 100 * _column(history, "val_accuracy")
    _plot_pair(ax_acc, epochs, train_acc, val_acc, marker)
    ax_acc.set(title=_accuracy_title(train_acc, val_acc), xlabel="epoch", ylabel="accuracy (%)")
    ax_acc.legend(loc="lower right")

    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if len(history) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    return _save(fig, path)


def _plot_pair(ax, epochs, train, val, marker) -> list:
    """Draw the train curve and, if there is any validation value, the validation curve."""
    lines = ax.plot(epochs, train, color=TRAIN_COLOR, marker=marker, label="train")
    if np.isfinite(val).any():
        lines += ax.plot(epochs, val, color=VAL_COLOR, marker=marker, label="validation")
    return lines


def _plot_lr(ax, epochs, lr, marker) -> list:
    """The learning rate on a secondary y-axis, log-scaled when it spans more than a factor of 10."""
    if not np.isfinite(lr).any():
        return []
    ax_lr = ax.twinx()
    lines = ax_lr.plot(
        epochs, lr, color=LR_COLOR, linestyle="--", marker=marker, markersize=4, alpha=0.8, label="learning rate"
    )
    positive = lr[np.isfinite(lr) & (lr > 0)]
    if positive.size and positive.max() > 10 * positive.min():
        ax_lr.set_yscale("log")
    elif positive.size:  # linear: start at 0 so a constant or gently decaying rate reads as such
        ax_lr.set_ylim(0, 1.4 * positive.max())
    ax_lr.set_ylabel("learning rate", color=LR_COLOR)
    ax_lr.tick_params(axis="y", colors=LR_COLOR)
    return lines


def _accuracy_title(train_acc: np.ndarray, val_acc: np.ndarray) -> str:
    if np.isfinite(val_acc).any():
        return f"Accuracy (best validation {np.nanmax(val_acc):.2f}%)"
    return f"Accuracy (final train {train_acc[-1]:.2f}%)"


# -------------------------------------------------------------------------------------- confusion matrix


def plot_confusion_matrix(cm: np.ndarray, path: str | Path, title: str | None = None) -> Path:
    """Counts in every cell (rows = true, columns = predicted), per-class recall beside each row."""
    return _save(confusion_matrix_figure(cm, title), path)


def confusion_matrix_figure(cm: np.ndarray, title: str | None = None):
    """The figure of plot_confusion_matrix, not saved (the caller closes it, or passes it to figure_png)."""
    cm = np.asarray(cm, dtype=np.int64)  # (K, K)
    k = cm.shape[0]
    row_totals = cm.sum(axis=1)
    recall = 100 * np.diag(cm) / np.maximum(row_totals, 1)
    accuracy = 100 * np.trace(cm) / max(cm.sum(), 1)

    fig, ax = plt.subplots(figsize=(8.6, 7.4), layout="constrained")
    shade = np.log1p(cm)  # log colours so the few off-diagonal errors stay visible beside ~1000 hits
    image = ax.imshow(shade, cmap="Blues", vmin=0, vmax=max(shade.max(), 1e-9))
    _annotate_cells(ax, cm, shade)

    ticks = np.arange(k)
    ax.set_xticks(ticks, [str(i) for i in ticks])
    ax.set_yticks(ticks, [f"{i}  ({r:.1f}%)" if row_totals[i] else f"{i}  (n/a)" for i, r in enumerate(recall)])
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label  (per-class recall)")
    ax.tick_params(length=0)
    ax.set_xticks(ticks - 0.5, minor=True)
    ax.set_yticks(ticks - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    heading = title or "Confusion matrix"
    ax.set_title(f"{heading}\naccuracy {accuracy:.2f}%  ({np.trace(cm)} / {cm.sum()} correct)")
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label("count (log scale)")
    bar.set_ticks(np.log1p(_count_ticks(int(cm.max()))), labels=[str(c) for c in _count_ticks(int(cm.max()))])
    return fig


def _annotate_cells(ax, cm: np.ndarray, shade: np.ndarray) -> None:
    """Write each count in its cell: white on dark cells, dark on light ones, nothing bold for zeros."""
    threshold = 0.55 * max(shade.max(), 1e-9)
    size = 9 if cm.max() < 10_000 else 7
    for (i, j), count in np.ndenumerate(cm):
        color = "white" if shade[i, j] > threshold else "black"
        weight = "bold" if i == j else "normal"
        alpha = 0.35 if count == 0 else 1.0
        ax.text(j, i, str(count), ha="center", va="center", color=color, fontsize=size, fontweight=weight, alpha=alpha)


def _count_ticks(top: int) -> list[int]:
    """0, 1, 10, 100, ... up to ``top``, plus ``top`` itself: readable labels for a log colour bar."""
    ticks = [0] + [10**e for e in range(int(math.log10(top)) + 1)] if top > 0 else [0]
    if top > 0 and ticks[-1] * 2 < top:
        ticks.append(top)
    return ticks


# ------------------------------------------------------------------------------------------ digit grids


def plot_predictions(
    images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, path: str | Path, n: int = 36, seed: int = 0
) -> Path:
    """A seeded random sample of ``n`` digits titled with the prediction; mistakes in red with the truth."""
    return _save(predictions_figure(images, labels, probabilities, n, seed), path)


def predictions_figure(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, n: int = 36, seed: int = 0):
    """The figure of plot_predictions, not saved (the caller closes it, or passes it to figure_png)."""
    images, labels, probabilities = _as_arrays(images, labels, probabilities)  # (N, 28, 28), (N,), (N, 10)
    n = min(n, len(images))
    index = np.sort(np.random.default_rng(seed).choice(len(images), size=n, replace=False))
    pred = probabilities.argmax(axis=1)
    n_wrong = int((pred[index] != labels[index]).sum())
    fig, axes = _digit_grid(n)
    for ax, i in zip(axes, index):
        title = f"pred {pred[i]} ({_percent(probabilities[i, pred[i]])})"
        if pred[i] == labels[i]:
            _show_digit(ax, images[i], title, wrong=False)
        else:
            _show_digit(ax, images[i], f"{title}\ntrue {labels[i]}", wrong=True)
    fig.suptitle(f"Random test digits: {n - n_wrong} of {n} correct (mistakes in red)", fontsize=13)
    return fig


def plot_misclassified(
    images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, path: str | Path, n: int = 24
) -> Path:
    """The ``n`` most confident mistakes, most confident first; a short note if there are none."""
    images, labels, probabilities = _as_arrays(images, labels, probabilities)
    pred = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(pred != labels)
    if wrong.size == 0:
        return _save(_message_figure(f"No misclassified digits among {len(labels)} images."), path)
    confidence = probabilities[wrong, pred[wrong]]
    worst = wrong[np.argsort(-confidence, kind="stable")[:n]]
    fig, axes = _digit_grid(len(worst))
    for ax, i in zip(axes, worst):
        title = f"true {labels[i]} / pred {pred[i]}\n({_percent(probabilities[i, pred[i]])})"
        _show_digit(ax, images[i], title, wrong=True)
    fig.suptitle(
        f"Most confident mistakes: {len(worst)} of {wrong.size} errors "
        f"({100 * wrong.size / len(labels):.2f}% of {len(labels)})",
        fontsize=13,
    )
    return _save(fig, path)


def _as_arrays(images, labels, probabilities) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = np.asarray(images).reshape(len(images), 28, 28)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if not len(images) == len(labels) == len(probabilities):
        raise ValueError(
            f"images, labels and probabilities disagree in length: {len(images)}, {len(labels)}, {len(probabilities)}"
        )
    return images, labels, probabilities


def _percent(p: float) -> str:
    """A probability as a percentage with one decimal, never rounding a near-certainty up to 100.0%."""
    return ">99.9%" if 0.9995 <= p < 1 else f"{100 * p:.1f}%"


def _digit_grid(n: int):
    """A grid of small image axes, 6 columns wide from 18 images on (24 -> 4x6); unused cells are hidden."""
    cols = max(1, min(n, 6 if n >= 18 else math.ceil(math.sqrt(n))))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.75 * cols, 1.95 * rows + 0.6), squeeze=False, layout="constrained")
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _show_digit(ax, image: np.ndarray, title: str, wrong: bool) -> None:
    """One digit, white on black as MNIST stores it; a red title and frame when ``wrong``."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    color = WRONG_COLOR if wrong else "black"
    ax.set_title(title, fontsize=9, color=color, fontweight="bold" if wrong else "normal")
    for spine in ax.spines.values():
        spine.set_visible(wrong)
        spine.set_color(WRONG_COLOR)
        spine.set_linewidth(3)


def _message_figure(message: str):
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=13, transform=ax.transAxes)
    return fig


# -------------------------------------------------------------------------------------------- all four


def write_reports(
    out_dir: str | Path,
    history: list[dict],
    images: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    cm: np.ndarray,
) -> dict[str, Path]:
    """Write every picture into ``out_dir``; the history plot only when there is history. Name -> path."""
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    if history:
        written["training_history"] = plot_training_history(history, out_dir / "training_history.png")
    written["confusion_matrix"] = plot_confusion_matrix(cm, out_dir / "confusion_matrix.png")
    written["predictions"] = plot_predictions(images, labels, probabilities, out_dir / "predictions.png")
    written["misclassified"] = plot_misclassified(images, labels, probabilities, out_dir / "misclassified.png")
    return written
