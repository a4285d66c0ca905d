"""Accuracy, loss, confusion matrix and per-class precision/recall/F1, from logits and labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lenet5.models import NUM_CLASSES


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities of (N, C) logits, in their float dtype: the one softmax of the project.

    log p = z - max(z) - log(sum(exp(z - max(z)))) never overflows. Logits without NaN always give a
    distribution: a row with +inf logits shares all probability among them, a row of only -inf is uniform.
    """
    top = logits.max(axis=1, keepdims=True)
    if not np.isfinite(top).all():  # rare (a diverged model): give inf its limit instead of NaN
        with np.errstate(invalid="ignore"):
            z = np.where(np.isposinf(top), np.where(np.isposinf(logits), 0.0, -np.inf), logits - top)
        z = np.where(np.isneginf(top), 0.0, z).astype(logits.dtype)
    else:
        with np.errstate(over="ignore"):  # -1e308 - 1e308 is -inf: its probability is 0
            z = logits - top
    with np.errstate(divide="ignore"):
        z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise probabilities (N, C) of logits, in float64 (see log_softmax)."""
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64)))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy of (N, C) logits against int labels (N,), in float64."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64))
    return float(-np.mean(logp[np.arange(len(labels)), labels]))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(C, C) counts: rows are the true labels, columns the predictions."""
    return np.bincount(labels.astype(np.int64) * num_classes + predictions, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    logits: np.ndarray  # (N, 10)
    labels: np.ndarray  # (N,)

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    @property
    def probabilities(self) -> np.ndarray:
        return softmax(self.logits)

    @property
    def confusion(self) -> np.ndarray:
        return confusion_matrix(self.labels, self.predictions)

    def summary(self) -> dict:
        scores = per_class_scores(self.confusion)
        return {
            "loss": self.loss,
            "accuracy": self.accuracy,
            "per_class": {
                str(c): {k: (int(v[c]) if k == "support" else round(float(v[c]), 6)) for k, v in scores.items()}
                for c in range(NUM_CLASSES)
            },
            "confusion_matrix": self.confusion.tolist(),
        }


def evaluate_logits(logits: np.ndarray, labels: np.ndarray) -> Evaluation:
    labels = labels.astype(np.int64)
    accuracy = float(np.mean(logits.argmax(axis=1) == labels)) if len(labels) else float("nan")
    loss = cross_entropy(logits, labels) if len(labels) else float("nan")
    return Evaluation(loss, accuracy, logits, labels)
