"""Choose a model's reject rule from a risk-coverage curve, and draw the curve.

`lenet5 predict` answers "unsure" when a digit's calibrated probability is below a threshold. Which threshold
is a trade: a higher one keeps fewer answers (coverage) and gets fewer of the kept ones wrong (risk). This
script measures that trade on photo-like scenes of MNIST *test* digits (tests/photo_scenes.py), on the same
digits stored as 8x8 optical-digit grids (tests/grid_digits.py) and on clean pictures of them cropped to their
ink (tests/clean_numbers.py): the tuning set, seed 100, never the seeds the benchmarks report. They are read
through predict's own code path, and the rule keeps the highest coverage at which at most 1% of sure single
digits and at most 2% of sure numbers are wrong. A reading's confidence is the lowest of its digits'
calibrated probabilities and its segmentation's (the best reading of the line against its runner-up with
other digits).

    python benchmarks/reject_rule.py --model M.safetensors [--write OUT.safetensors] [--plot docs/risk_coverage.png]
    python benchmarks/reject_rule.py --model A B C [--write OUT.safetensors]    # a committee

``--write`` stores the thresholds in a copy of the checkpoint's metadata (``calibration.reject``); for a
committee, in a copy of its first model (``calibration.committee_reject``, naming the other members by their
files' SHA-256: the rule is used only when the same models read together, see predict.Committee). The bundled
reader's rule was chosen this way, for its three models.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from clean_numbers import mnist_clean_scenes  # noqa: E402
from grid_digits import mnist_grid_scenes  # noqa: E402
from lenet5.calibration import risk_coverage, threshold_for_risk  # noqa: E402
from lenet5.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from lenet5.data.datasets import load_mnist  # noqa: E402
from lenet5.predict import Predictor, file_sha256, load_reader  # noqa: E402
from photo_scenes import digit_scenes, number_scenes  # noqa: E402

TUNING_SEED = 100
MIN_KEPT = 100  # the risk is judged at thresholds that keep at least this many answers (or a tenth of them)
MARGINS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)  # segmentation margins tried (log units)
RISK_DIGIT, RISK_NUMBER = 0.01, 0.02


def confidences(predictor: Predictor, scenes) -> np.ndarray:
    """(N, 3) per scene: the lowest calibrated probability of the digits read (0 when none), the line's margin
    over its runner-up reading (50 when there was none), and whether the reading is right (0 or 1)."""
    rows = []
    for s in scenes:
        reading, _ = predictor.read_image_bytes(s.data, s.kind + s.suffix)
        margin = reading.get("margin")
        margin = 50.0 if margin is None else min(margin, 50.0)
        confidence = 0.0 if reading["unsure"] else reading["confidence"]  # unsure whatever the thresholds
        rows.append((confidence, margin, reading["number"] == s.label))
    return np.array(rows, np.float64)


def floor6(t: float) -> float:
    """A threshold stored with 6 decimals, rounded down: it keeps every answer it kept."""
    return math.floor(t * 1e6) / 1e6


def choose(rows: np.ndarray, risk: float) -> tuple[float, float, float]:
    """(probability threshold, margin threshold, coverage): of the margins in MARGINS, the pair that keeps the
    most answers with at most ``risk`` of the kept wrong (the probability threshold from the curve)."""
    right = rows[:, 2] == 1
    best = (1.0, 0.0, 0.0)
    for m in MARGINS:
        keep = rows[:, 1] >= m
        if not keep.any():
            continue
        t = threshold_for_risk(rows[keep, 0], right[keep], risk, min_kept=max(MIN_KEPT, len(rows) // 10))
        coverage = float(np.mean(keep & (rows[:, 0] >= t)))
        if coverage > best[2] + 1e-9:
            best = (t, m, coverage)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, nargs="+", help="a checkpoint, or several: a committee")
    ap.add_argument("--per-kind", type=int, default=50, help="single-digit scenes per kind (default 50)")
    ap.add_argument("--numbers", type=int, default=500, help="number scenes (default 500)")
    ap.add_argument("--write", help="write a copy of the model with the chosen thresholds here")
    ap.add_argument("--plot", help="draw the risk-coverage curves into this PNG")
    args = ap.parse_args()
    mnist = load_mnist()
    predictor = load_reader([Path(m) for m in args.model])
    # thresholds at 0: what is still unsure is so whatever they are (no digit, a mark left unread, strokes)
    predictor.sure_digit = predictor.sure_number = predictor.margin_digit = predictor.margin_number = 0.0
    predictor.fitted_reject = True
    x, y = mnist.test_images, mnist.test_labels
    t0 = time.perf_counter()
    scenes = digit_scenes(x, y, args.per_kind, seed=TUNING_SEED) + mnist_grid_scenes(x, y, args.per_kind, TUNING_SEED)
    scenes += mnist_clean_scenes(x, y, args.per_kind, TUNING_SEED, lengths=(1, 1))
    single = confidences(predictor, scenes)
    numbers = number_scenes(x, y, args.numbers, seed=TUNING_SEED)
    numbers += mnist_clean_scenes(x, y, args.numbers // 10, TUNING_SEED + 1, lengths=(2, 5))
    number = confidences(predictor, numbers)
    print(f"{len(single)} single-digit and {len(number)} number scenes read in {time.perf_counter() - t0:.0f} s")
    (td, md, _), (tn, mn, _) = choose(single, RISK_DIGIT), choose(number, RISK_NUMBER)
    chosen = {"digit": floor6(td), "digit_margin": md, "number": floor6(tn), "number_margin": mn}
    for what, rows, t, m, risk in (
        ("single digits", single, td, md, RISK_DIGIT),
        ("numbers", number, tn, mn, RISK_NUMBER),
    ):
        right = rows[:, 2] == 1
        kept = (rows[:, 0] >= t) & (rows[:, 1] >= m)
        print(
            f"{what}: p >= {t:.4f} and margin >= {m} for risk <= {risk:.0%}: coverage {kept.mean():.1%}, risk "
            f"{(~right[kept]).mean() if kept.any() else 0:.2%}; read right (flag ignored) {right.mean():.1%}"
        )
    chosen.update(
        {
            "risk_digit": RISK_DIGIT,
            "risk_number": RISK_NUMBER,
            "fitted_on": f"photo-like scenes, 8x8 grids and clean crops of MNIST test digits, seed {TUNING_SEED} "
            f"({len(single)} digits, {len(number)} numbers)",
        }
    )
    print(json.dumps(chosen))
    if args.plot:
        plot(single, number, chosen, Path(args.plot))
    if args.write:
        ckpt = load_checkpoint(args.model[0])
        calibration = dict(ckpt.meta.get("calibration") or {})
        if len(args.model) == 1:
            calibration["reject"] = chosen
        else:
            calibration["committee_reject"] = {**chosen, "partners": [file_sha256(Path(m)) for m in args.model[1:]]}
        save_checkpoint(
            args.write,
            ckpt.weights,
            engine=ckpt.meta.get("engine", "numpy"),
            model=ckpt.model,
            config=ckpt.meta.get("config"),
            epoch=int(ckpt.meta.get("epoch", 0)),
            metrics=ckpt.meta.get("metrics"),
            calibration=calibration,
        )
        print(f"wrote {args.write}")


def plot(single: np.ndarray, number: np.ndarray, chosen: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for rows, label, key, risk, colour in (
        (single, "single digits", "digit", RISK_DIGIT, "C0"),
        (number, "numbers of 2-5 digits", "number", RISK_NUMBER, "C1"),
    ):
        right = rows[:, 2] == 1
        keep = rows[:, 1] >= chosen[f"{key}_margin"]
        conf = np.where(keep, rows[:, 0], -1.0)  # below the margin: never kept
        _t, cov, r = risk_coverage(conf, right)
        ax.plot(cov * 100, r * 100, color=colour, label=f"{label} (margin >= {chosen[f'{key}_margin']})")
        kept = keep & (rows[:, 0] >= chosen[key])
        ax.plot([kept.mean() * 100], [(~right[kept]).mean() * 100 if kept.any() else 0], "o", color=colour)
        ax.axhline(risk * 100, color=colour, lw=0.8, ls=":")
    ax.set_xlabel("coverage: answers kept as sure (%)")
    ax.set_ylabel("risk: sure answers that are wrong (%)")
    ax.set_ylim(0, 20)
    ax.set_title("Risk against coverage on the tuning scenes (dots: the chosen rule)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
