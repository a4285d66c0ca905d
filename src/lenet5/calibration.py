"""Honest probabilities: temperature scaling (Guo et al. 2017) and the expected calibration error.

A network trained to low loss is over-confident: its top probability is higher than how often it is right.
One number fixes most of it: logits are divided by a temperature T fitted on held-out data (the validation
split, never the test set) to minimize the negative log-likelihood. T does not change which digit wins,
only how sure the answer says it is. T is stored in the checkpoint's metadata (``calibration``) and every
way of predicting (NumPy, PyTorch, ONNX through ``Predictor``) divides by it.
"""

from __future__ import annotations

import math

import numpy as np

from lenet5.metrics import cross_entropy, softmax

T_RANGE = (0.05, 20.0)  # a temperature outside this is a damaged checkpoint, not a calibration
MAX_PARTNERS = 16  # a committee's reject rule names at most this many other members
TYPICAL_QUANTILE = 0.02  # the energy floor: 98% of validation digits have more evidence than this


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of labels (N,) under softmax(logits (N, 10) / temperature)."""
    return cross_entropy(np.asarray(logits, np.float64) / temperature, labels)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimizes the NLL (golden-section search on log T; the NLL is unimodal in it)."""
    labels = np.asarray(labels, np.int64)
    if len(labels) == 0:
        return 1.0
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(logits, labels, math.exp(a)), nll(logits, labels, math.exp(b))
    for _ in range(60):  # the bracket shrinks to 1e-12 of its width
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(logits, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(logits, labels, math.exp(b))
    return round(math.exp((lo + hi) / 2), 6)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: the mean gap |accuracy - confidence| over equal-width confidence bins, weighted by their size."""
    probabilities = np.asarray(probabilities, np.float64)
    if len(labels) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gap = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(gap)


def energy(logits: np.ndarray) -> np.ndarray:
    """(N,) log-sum-exp of raw (N, 10) logits: how much evidence for any digit (Liu et al. 2020). Inputs
    unlike every training digit (a letter, a scribble) get less, whatever their softmax says."""
    z = np.asarray(logits, np.float64)
    top = z.max(axis=1)
    return top + np.log(np.exp(z - top[:, None]).sum(axis=1))


def calibrate(val_logits: np.ndarray, val_labels: np.ndarray) -> dict:
    """Fit T on validation logits; the checkpoint's ``calibration`` metadata with ECE before and after, and
    the energy floor below which an input does not look like the digits the model was trained on."""
    temperature = fit_temperature(val_logits, val_labels)
    return {
        "temperature": temperature,
        "energy_floor": round(float(np.quantile(energy(val_logits), TYPICAL_QUANTILE)), 6) if len(val_labels) else None,
        "fitted_on": f"validation split ({len(val_labels)} images)",
        "val_ece_before": round(expected_calibration_error(softmax(val_logits), val_labels), 6),
        "val_ece_after": round(
            expected_calibration_error(softmax(np.asarray(val_logits) / temperature), val_labels), 6
        ),
    }


def check_temperature(value) -> float:
    """A stored temperature must be a finite number in T_RANGE; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (T_RANGE[0] <= value <= T_RANGE[1]):
        raise ValueError(
            f"calibration temperature {str(value)[:40]} is damaged (it must be in {T_RANGE[0]}..{T_RANGE[1]})"
        )
    return float(value)


def check_calibration(calibration) -> None:
    """A checkpoint's ``calibration`` metadata: a mapping with a sane temperature and a finite energy floor
    (or none); ValueError otherwise."""
    if not isinstance(calibration, dict):
        raise ValueError(f"calibration {str(calibration)[:40]} is not a mapping")
    check_temperature(calibration.get("temperature"))
    check_reject(calibration.get("reject"))
    check_committee_reject(calibration.get("committee_reject"))
    floor = calibration.get("energy_floor")
    if floor is not None and (
        isinstance(floor, bool) or not isinstance(floor, (int, float)) or not math.isfinite(floor)
    ):
        raise ValueError(f"calibration energy_floor {str(floor)[:40]} is damaged (it must be a finite number)")


def check_reject(reject, what: str = "reject") -> dict:
    """A stored reject rule: None, or a mapping whose ``digit`` and ``number`` thresholds (the calibrated
    probability every digit of a sure answer needs) are numbers in 0..1 and whose ``digit_margin`` and
    ``number_margin`` (how much better a sure line's reading must score than its runner-up, log units) are in
    0..100; returned as given (or {}); ValueError otherwise."""
    if reject is None:
        return {}
    if not isinstance(reject, dict):
        raise ValueError(f"calibration {what} {str(reject)[:40]} is not a mapping")
    for key, top in (("digit", 1.0), ("number", 1.0), ("digit_margin", 100.0), ("number_margin", 100.0)):
        value = reject.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= top
        ):
            raise ValueError(f"calibration {what} {key} {str(value)[:40]} is damaged (it must be in 0..{top:g})")
    return reject


def check_committee_reject(rule) -> None:
    """A reject rule fitted for a committee (predict.Committee): None, or a reject rule (check_reject) with
    ``partners``, the SHA-256 of the other members' files (at most MAX_PARTNERS); ValueError otherwise."""
    if rule is None:
        return
    check_reject(rule, "committee_reject")
    partners = rule.get("partners")
    if (
        not isinstance(partners, list)
        or not 0 < len(partners) <= MAX_PARTNERS
        or not all(isinstance(h, str) and len(h) == 64 for h in partners)
        or rule.get("digit") is None
        or rule.get("number") is None
    ):
        raise ValueError("calibration committee_reject is damaged (it needs digit, number and the partners' SHA-256)")


def risk_coverage(confidence: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every threshold t among the confidences (ascending): the share of answers kept (confidence >= t)
    and the share of the kept that are wrong. Returns (thresholds, coverage, risk)."""
    confidence = np.asarray(confidence, np.float64)
    right = np.asarray(right, bool)
    order = np.argsort(-confidence, kind="stable")
    c, r = confidence[order], right[order]
    wrong = np.cumsum(~r)
    kept = np.arange(1, len(c) + 1)
    last = np.r_[c[1:] != c[:-1], True]  # ties: a threshold keeps every answer at its confidence
    t, cov, risk = c[last], kept[last] / max(len(c), 1), wrong[last] / kept[last]
    return t[::-1], cov[::-1], risk[::-1]


def threshold_for_risk(
    confidence: np.ndarray, right: np.ndarray, risk: float, floor: float = 0.5, min_kept: int = 0
) -> float:
    """The lowest threshold (the highest coverage) at which at most ``risk`` of the kept answers are wrong, and
    at every higher threshold that keeps at least ``min_kept`` answers too (a curve that dips below the target
    and rises again is not trusted; over a handful of answers, one error is no trend); never below ``floor``."""
    t, cov, r = risk_coverage(confidence, right)
    if len(t) == 0:
        return 1.0
    kept = np.round(cov * len(np.asarray(confidence))).astype(int)
    bad = np.flatnonzero((r > risk) & (kept >= min_kept))  # thresholds ascending: the last violation bounds it
    start = bad[-1] + 1 if len(bad) else 0
    while start < len(t) and r[start] > risk:  # the few answers at the top may still miss the target
        start += 1
    if start >= len(t):
        return 1.0
    return float(max(floor, t[start]))
