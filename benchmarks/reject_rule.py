"""Choose a model's reject rule from a risk-coverage curve, and draw the curve.

`lenet5 predict` answers "unsure" when a digit's calibrated probability is below a threshold. Which threshold
is a trade: a higher one keeps fewer answers (coverage) and gets fewer of the kept ones wrong (risk). This
script measures that trade on photo-like scenes of MNIST *test* digits (tests/photo_scenes.py, the tuning
set: seed 100, never the seeds the benchmarks report) read through predict's own code path, and chooses
the highest coverage at which at most 1% of sure single digits and at most 2% of sure numbers are wrong.
A single digit's confidence is its calibrated probability, a number's the lowest of its digits'.

    python benchmarks/reject_rule.py --model M.safetensors [--write OUT.safetensors] [--plot docs/risk_coverage.png]

``--write`` stores the thresholds in a copy of the checkpoint's metadata (``calibration.reject``); the
bundled model's were chosen this way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from photo_scenes import digit_scenes, number_scenes  # noqa: E402

from lenet5.calibration import risk_coverage, threshold_for_risk  # noqa: E402
from lenet5.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from lenet5.data.datasets import load_mnist  # noqa: E402
from lenet5.predict import Predictor  # noqa: E402

TUNING_SEED = 100
RISK_DIGIT, RISK_NUMBER = 0.01, 0.02


def confidences(predictor: Predictor, scenes) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, right) per scene: the lowest calibrated probability of the digits read (0 when none)."""
    conf, right = [], []
    for s in scenes:
        reading, _ = predictor.read_image_bytes(s.data, s.kind + s.suffix)
        conf.append(min((d["probability"] for d in reading["digits"]), default=0.0))
        right.append(reading["number"] == s.label)
    return np.array(conf), np.array(right)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--per-kind", type=int, default=50, help="single-digit scenes per kind (default 50)")
    ap.add_argument("--numbers", type=int, default=300, help="number scenes (default 300)")
    ap.add_argument("--write", help="write a copy of the model with the chosen thresholds here")
    ap.add_argument("--plot", help="draw the risk-coverage curves into this PNG")
    args = ap.parse_args()
    mnist = load_mnist()
    predictor = Predictor.from_checkpoint(args.model)
    x, y = mnist.test_images, mnist.test_labels
    t0 = time.perf_counter()
    single = confidences(predictor, digit_scenes(x, y, args.per_kind, seed=TUNING_SEED))
    number = confidences(predictor, number_scenes(x, y, args.numbers, seed=TUNING_SEED))
    print(f"{len(single[0])} single-digit and {len(number[0])} number scenes read in {time.perf_counter() - t0:.0f} s")
    chosen = {"digit": round(threshold_for_risk(*single, RISK_DIGIT), 4),
              "number": round(threshold_for_risk(*number, RISK_NUMBER), 4)}
    for what, (conf, right), t, risk in (("single digits", single, chosen["digit"], RISK_DIGIT),
                                         ("numbers", number, chosen["number"], RISK_NUMBER)):
        kept = conf >= t
        print(f"{what}: threshold {t:.4f} for risk <= {risk:.0%}: coverage {kept.mean():.1%}, risk "
              f"{(~right[kept]).mean() if kept.any() else 0:.2%}; read right (flag ignored) {right.mean():.1%}")
    chosen.update({"risk_digit": RISK_DIGIT, "risk_number": RISK_NUMBER,
                   "fitted_on": f"photo-like scenes of MNIST test digits, seed {TUNING_SEED} "
                                f"({len(single[0])} digits, {len(number[0])} numbers)"})
    print(json.dumps(chosen))
    if args.plot:
        plot(single, number, chosen, Path(args.plot))
    if args.write:
        ckpt = load_checkpoint(args.model)
        calibration = dict(ckpt.meta.get("calibration") or {})
        calibration["reject"] = chosen
        save_checkpoint(args.write, ckpt.weights, engine=ckpt.meta.get("engine", "numpy"), model=ckpt.model,
                        config=ckpt.meta.get("config"), epoch=int(ckpt.meta.get("epoch", 0)),
                        metrics=ckpt.meta.get("metrics"), calibration=calibration)
        print(f"wrote {args.write}")


def plot(single, number, chosen: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for (conf, right), label, t, risk, colour in ((single, "single digits", chosen["digit"], RISK_DIGIT, "C0"),
                                                  (number, "numbers of 2-5 digits", chosen["number"], RISK_NUMBER, "C1")):
        _t, cov, r = risk_coverage(conf, right)
        ax.plot(cov * 100, r * 100, color=colour, label=label)
        kept = conf >= t
        ax.plot([kept.mean() * 100], [(~right[kept]).mean() * 100 if kept.any() else 0], "o", color=colour)
        ax.axhline(risk * 100, color=colour, lw=0.8, ls=":")
    ax.set_xlabel("coverage: answers kept as sure (%)")
    ax.set_ylabel("risk: sure answers that are wrong (%)")
    ax.set_ylim(0, 12)
    ax.set_title("Risk against coverage on the tuning scenes (dots: the chosen thresholds)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
