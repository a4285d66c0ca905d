"""How well `lenet5 predict` reads photos of handwriting: per scene kind, single digits and whole numbers,
the preparation before issue 12 next to today's, accuracy against coverage, and the time to prepare one
12-megapixel phone photo on one core.

The photos are made by tests/photo_scenes.py from MNIST *test* digits (seeded, nothing downloaded):
paper grain, light gradients, shadows, ruled and squared paper, a sheet on a table, a dim room, blur, JPEG.

    python benchmarks/photo_accuracy.py --model runs/<name>/model.safetensors [--per-kind 40] [--numbers 120]
    python benchmarks/photo_accuracy.py --model runs/<name>/model.safetensors --speed-only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from machine import cpu_snapshot, others_share  # noqa: E402
from photo_scenes import (KINDS, NOT_DIGITS, digit_scenes, jpeg, number_scenes, paper, phone_photo,  # noqa: E402
                          png, touching_pair, with_drawing)

from lenet5.data.datasets import load_mnist  # noqa: E402
from lenet5.data.images import open_image, read_image, to_gray  # noqa: E402
from lenet5.predict import Predictor  # noqa: E402


# ------------------------------------------------------------------------------ the preparation before issue 12
def old_prepare(img: Image.Image) -> np.ndarray | None:
    """The recipe `predict` used before issue 12: background from the border's median, all ink is one digit."""
    g = to_gray(img)
    factor = min(max(g.shape) // 1024, min(g.shape))
    if factor >= 2:
        h, w = (g.shape[0] // factor) * factor, (g.shape[1] // factor) * factor
        g = g[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    if _border_median(g) > 0.5:
        g = 1.0 - g
    lo, hi = _border_median(g), float(g.max())
    if hi - lo < 0.08:
        return None
    g = np.clip((g - lo) / (hi - lo), 0.0, 1.0)
    ys, xs = np.nonzero(g > 0.2)
    crop = g[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    from lenet5.data.digits import mnist_field

    return mnist_field(crop)


def _border_median(g: np.ndarray) -> float:
    k = max(1, round(0.02 * min(g.shape)))
    return float(np.median(np.concatenate([g[:k].ravel(), g[-k:].ravel(), g[:, :k].ravel(), g[:, -k:].ravel()])))


# -------------------------------------------------------------------------------------------------- runs
def read_all(predictor: Predictor, scenes) -> list[dict]:
    out = []
    for s in scenes:
        reading, _ = predictor.read_image_bytes(s.data, f"{s.kind}{s.suffix}")
        old = old_prepare(open_image(s.data))
        old_digit = None if old is None else int(predictor.probabilities(old[None])[0].argmax())
        out.append({"kind": s.kind, "label": s.label, "number": reading["number"], "unsure": reading["unsure"],
                    "probability": reading["probability"] or 0.0, "old": None if old_digit is None else str(old_digit)})
    return out


def table(rows: list[dict], what: str) -> None:
    by_kind = defaultdict(list)
    for r in rows:
        by_kind[r["kind"]].append(r)
    print(f"\n{what}: read exactly (old preparation -> now), and answered 'unsure'")
    print("| kind | images | before | now | unsure now | accuracy of sure answers |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind in [k for k in KINDS if k in by_kind] + ["all"]:
        rs = rows if kind == "all" else by_kind[kind]
        old = np.mean([r["old"] == r["label"] for r in rs])
        new = np.mean([r["number"] == r["label"] for r in rs])
        unsure = np.mean([r["unsure"] for r in rs])
        sure = [r["number"] == r["label"] for r in rs if not r["unsure"]]
        sure_acc = f"{100 * np.mean(sure):.1f}%" if sure else "-"
        name = f"**{kind}**" if kind == "all" else kind
        print(f"| {name} | {len(rs)} | {100 * old:.1f}% | {100 * new:.1f}% | {100 * unsure:.1f}% | {sure_acc} |")


def coverage(rows: list[dict], what: str) -> None:
    """Accuracy of the answers kept when only readings at or above a probability are kept."""
    print(f"\n{what}: accuracy against coverage (answers kept when the calibrated probability >= p)")
    print("| p | coverage | accuracy of kept |")
    print("| --- | --- | --- |")
    for p in (0.0, 0.5, 0.8, 0.9, 0.95, 0.99):
        kept = [r["number"] == r["label"] for r in rows if r["probability"] >= p and r["number"] is not None]
        acc = f"{100 * np.mean(kept):.1f}%" if kept else "-"
        print(f"| {p:.2f} | {100 * len(kept) / len(rows):.1f}% | {acc} |")
    kept = [r["number"] == r["label"] for r in rows if not r["unsure"]]
    print(f"| the 'unsure' rule | {100 * len(kept) / len(rows):.1f}% | {100 * np.mean(kept) if kept else 0:.1f}% |")


def not_digits(predictor: Predictor) -> None:
    """How often what is not a digit comes back unsure: the test's blank page, cup and scribble, and 26
    letters in Pillow's own font and every DejaVu / Liberation font on this machine."""
    from PIL import ImageDraw, ImageFont

    for what, draw in NOT_DIGITS.items():
        reading, _ = predictor.read_image_bytes(with_drawing(draw), what)
        print(f"{what}: {'unsure' if reading['unsure'] else 'SURE'} ({reading.get('reason') or reading['number']})")
    fonts = [None] + sorted(str(p) for p in Path("/usr/share/fonts/truetype").glob("*/*.ttf"))[::3]
    unsure, a_unsure = [], []
    for i, font in enumerate(fonts):
        face = ImageFont.load_default(size=220) if font is None else ImageFont.truetype(font, 220)
        for letter in "AEFHKMNPRUVWXYaehkmnrtuvwy":
            img = Image.fromarray(np.clip(paper(seed=i), 0, 255).astype(np.uint8))
            ImageDraw.Draw(img).text((300, 120), letter, fill=(25, 25, 35), font=face)
            unsure.append(predictor.read_image_bytes(jpeg(np.asarray(img, np.float32)), letter)[0]["unsure"])
            if letter == "A":
                a_unsure.append(unsure[-1])
    print(f"letters: {100 * np.mean(unsure):.0f}% of {len(unsure)} unsure (26 letters x {len(fonts)} fonts); "
          f"the letter A: {100 * np.mean(a_unsure):.0f}% of {len(a_unsure)}")


def touching(predictor: Predictor, images, labels, n: int = 40) -> None:
    """Two real test digits overlapping by 2 pixels (at 28 px): how often both are read, in order."""
    right = [predictor.read_image_bytes(png(touching_pair(images[i], images[i + 1])), "pair.png")[0]["number"]
             == f"{labels[i]}{labels[i + 1]}" for i in range(100, 100 + 2 * n, 2)]
    print(f"touching pairs: {100 * np.mean(right):.0f}% of {n} read right")


def phone_speed(predictor: Predictor, images, labels, runs: int) -> None:
    """Median time to decode + prepare one 12 MP phone JPEG (and with the network reading it), one core."""
    from threadpoolctl import threadpool_limits

    scene = phone_photo(images, labels, seed=0)
    before = cpu_snapshot()
    with threadpool_limits(1):
        read_image(open_image(scene.data, "phone.jpg"), "phone.jpg")  # warm up
        prep, full = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            read_image(open_image(scene.data, "phone.jpg"), "phone.jpg")
            t1 = time.perf_counter()
            reading, _ = predictor.read_image_bytes(scene.data, "phone.jpg")
            t2 = time.perf_counter()
            prep.append(t1 - t0)
            full.append(t2 - t1)
    w, h = Image.open(__import__("io").BytesIO(scene.data)).size
    print(f"\none {w}x{h} phone JPEG ({len(scene.data) / 1e6:.1f} MB, number {scene.label!r}, read {reading['number']!r}):"
          f" decode + prepare {1000 * statistics.median(prep):.0f} ms, with the network reading it "
          f"{1000 * statistics.median(full):.0f} ms (median of {runs}, one core; other processes took "
          f"{100 * others_share(before, cpu_snapshot()):.0f}% of the CPU)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a checkpoint (.safetensors) or .onnx")
    ap.add_argument("--per-kind", type=int, default=40, help="single-digit photos per kind (default 40)")
    ap.add_argument("--numbers", type=int, default=120, help="photos of 2-5 digit numbers (default 120)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=9, help="timing runs for the 12 MP photo")
    ap.add_argument("--speed-only", action="store_true", help="only time the 12 MP photo")
    args = ap.parse_args()
    mnist = load_mnist()
    predictor = Predictor.from_checkpoint(args.model)
    x, y = mnist.test_images, mnist.test_labels
    if args.speed_only:
        phone_speed(predictor, x, y, args.runs)
        return
    print(f"model {args.model} (temperature {predictor.temperature:.3f}); scenes seed {args.seed}")
    t0 = time.perf_counter()
    singles = read_all(predictor, digit_scenes(x, y, args.per_kind, seed=args.seed))
    numbers = read_all(predictor, number_scenes(x, y, args.numbers, seed=args.seed))
    print(f"({len(singles)} digit photos and {len(numbers)} number photos made and read in {time.perf_counter() - t0:.0f} s)")
    table(singles, "Single digits")
    table(numbers, "Numbers of 2-5 digits")
    coverage(singles, "Single digits")
    coverage(numbers, "Numbers")
    print()
    touching(predictor, x, y)
    not_digits(predictor)
    phone_speed(predictor, x, y, args.runs)


if __name__ == "__main__":
    main()
