"""How well `lenet5 predict` reads people's handwriting: two sets made differently, scored strictly.

An answer counts as right only when it is right *and* not marked unsure: an unsure answer is no answer to the
user. Each table gives, per kind of scene: strict (right and sure), raw (right, the flag ignored), unsure, and
wrong-but-sure (the share of *sure* answers that are wrong: what a user cannot see).

- **pen** (the set to quote): digits written as pen strokes by made-up writers (tests/pen_digits.py), in the
  photo kinds and three clean kinds (clean PNGs, low-resolution grids enlarged, 8x8 optical-digit grids).
  Neither the model nor the reader nor the reject rule was tuned on this generator.
- **mnist-scenes**: MNIST *test* digits drawn into photo-like scenes (tests/photo_scenes.py) and stored as 8x8
  optical-digit grids (tests/grid_digits.py). The reader and the reject rule were tuned on scenes of these
  generators (another seed, benchmarks/reject_rule.py), so its numbers flatter the reader.

Then what is not a digit (a blank page, a cup, a scribble, typed letters and signs), touching pairs, and the
time to prepare a 12-megapixel phone photo and to read a 280x280 drawing, on one core.

    python benchmarks/photo_accuracy.py [--model M [M ...]] [--per-kind 40] [--numbers 150] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from grid_digits import mnist_grid_scenes  # noqa: E402
from lenet5.checkpoint import bundled_reader, describe_model, resolve_model  # noqa: E402
from lenet5.data.datasets import load_mnist  # noqa: E402
from lenet5.data.images import open_image, read_image  # noqa: E402
from lenet5.data.nondigits import FONT_FOLDER  # noqa: E402
from lenet5.predict import Predictor, load_reader  # noqa: E402
from machine import cpu_snapshot, others_share  # noqa: E402
from pen_digits import PEN_KINDS, pen_digit_scenes, pen_number_scenes  # noqa: E402
from photo_scenes import (  # noqa: E402
    KINDS,
    NOT_DIGITS,
    digit_scenes,
    jpeg,
    number_scenes,
    paper,
    phone_photo,
    png,
    touching_pair,
    with_drawing,
)

SIGNS = "AEHKMRWXhkx?#&"  # typed letters and signs, none of them written like a digit


def read_all(predictor: Predictor, scenes) -> list[dict]:
    out = []
    for s in scenes:
        reading, _ = predictor.read_image_bytes(s.data, f"{s.kind}{s.suffix}")
        out.append({"kind": s.kind, "label": s.label, "number": reading["number"], "unsure": reading["unsure"]})
    return out


def scores(rows: list[dict]) -> dict:
    right = np.array([r["number"] == r["label"] for r in rows])
    sure = np.array([not r["unsure"] for r in rows])
    return {
        "n": len(rows),
        "strict": float(np.mean(right & sure)),
        "raw": float(right.mean()),
        "unsure": float(1 - sure.mean()),
        "wrong_sure": float((~right & sure).sum() / max(sure.sum(), 1)),
    }


def table(rows: list[dict], what: str, kinds) -> dict:
    by_kind = defaultdict(list)
    for r in rows:
        by_kind[r["kind"]].append(r)
    print(f"\n{what}")
    print("| kind | images | strict | raw | unsure | wrong but sure |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for kind in [k for k in kinds if k in by_kind] + ["all"]:
        s = scores(rows if kind == "all" else by_kind[kind])
        name = f"**{kind}**" if kind == "all" else kind
        print(
            f"| {name} | {s['n']} | {100 * s['strict']:.1f}% | {100 * s['raw']:.1f}% | {100 * s['unsure']:.1f}% "
            f"| {100 * s['wrong_sure']:.1f}% |"
        )
    return scores(rows)


def not_digits(predictor: Predictor) -> None:
    """What is not a digit: the scenes' blank page, cup and scribble, and typed letters and signs in Pillow's own
    font and every font on this machine outside the family the reader saw typed signs in (DejaVu), at two
    sizes."""
    for what, draw in NOT_DIGITS.items():
        reading, _ = predictor.read_image_bytes(with_drawing(draw), what)
        print(f"{what}: {'unsure' if reading['unsure'] else 'SURE'} ({reading.get('reason') or reading['number']})")
    fonts = [None] + sorted(
        str(p) for p in Path("/usr/share/fonts/truetype").glob("*/*.ttf") if p.parent != FONT_FOLDER
    )
    sure = []
    for i, font in enumerate(fonts):
        for size in (160, 240):
            face = ImageFont.load_default(size=size) if font is None else ImageFont.truetype(font, size)
            for sign in SIGNS:
                img = Image.fromarray(np.clip(paper(seed=i), 0, 255).astype(np.uint8))
                ImageDraw.Draw(img).text((300, 120), sign, fill=(25, 25, 35), font=face)
                reading = predictor.read_image_bytes(jpeg(np.asarray(img, np.float32)), sign)[0]
                sure.append(not reading["unsure"] and reading["number"] is not None)
    print(
        f"typed letters and signs ({SIGNS}, {len(fonts)} fonts, 2 sizes): {100 * np.mean(sure):.1f}% of "
        f"{len(sure)} answered as a sure digit"
    )


def touching(predictor: Predictor, images, labels, n: int = 40) -> None:
    """Two real test digits overlapping by 2 pixels (at 28 px): how often both are read, in order."""
    right = [
        predictor.read_image_bytes(png(touching_pair(images[i], images[i + 1])), "pair.png")[0]["number"]
        == f"{labels[i]}{labels[i + 1]}"
        for i in range(100, 100 + 2 * n, 2)
    ]
    print(f"touching pairs: {100 * np.mean(right):.0f}% of {n} read right (flag ignored)")


def speed(predictor: Predictor, images, labels, runs: int) -> None:
    """Median time to decode + prepare one 12 MP phone JPEG, and the CPU time to read a 280x280 drawing (a PNG
    as the drawing page sends it), on one core."""
    from threadpoolctl import threadpool_limits

    scene = phone_photo(images, labels, seed=0)
    drawing = Image.fromarray(255 - np.asarray(Image.fromarray(images[0]).resize((280, 280), Image.BILINEAR)))
    drawn = png(drawing)
    before = cpu_snapshot()
    with threadpool_limits(1):
        read_image(open_image(scene.data, "phone.jpg"), "phone.jpg")  # warm up
        predictor.read_image_bytes(drawn, "drawing.png")
        prep, full, draw_cpu = [], [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            read_image(open_image(scene.data, "phone.jpg"), "phone.jpg")
            t1 = time.perf_counter()
            reading, _ = predictor.read_image_bytes(scene.data, "phone.jpg")
            t2 = time.perf_counter()
            c0 = time.process_time()
            predictor.read_image_bytes(drawn, "drawing.png")
            draw_cpu.append(time.process_time() - c0)
            prep.append(t1 - t0)
            full.append(t2 - t1)
    w, h = Image.open(__import__("io").BytesIO(scene.data)).size
    busy = 100 * others_share(before, cpu_snapshot())
    print(
        f"\none {w}x{h} phone JPEG ({len(scene.data) / 1e6:.1f} MB, number {scene.label!r}, "
        f"read {reading['number']!r}): decode + prepare {1000 * statistics.median(prep):.0f} ms, with the network "
        f"reading it {1000 * statistics.median(full):.0f} ms; a 280x280 drawing read in "
        f"{1000 * statistics.median(draw_cpu):.1f} ms of CPU (medians of {runs}, one core; other processes took "
        f"{busy:.0f}% of the CPU)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model",
        nargs="+",
        default=None,
        help="a checkpoint or .onnx, or several: a committee (default: the bundled reader)",
    )
    ap.add_argument("--per-kind", type=int, default=40, help="single-digit photos per kind (default 40)")
    ap.add_argument("--numbers", type=int, default=150, help="photos of 2-5 digit numbers per set (default 150)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=9, help="timing runs")
    ap.add_argument("--sets", nargs="+", default=["pen", "mnist-scenes"], choices=["pen", "mnist-scenes"])
    ap.add_argument("--speed-only", action="store_true", help="only the timings")
    args = ap.parse_args()
    mnist = load_mnist()
    paths = [resolve_model(m) for m in args.model] if args.model else bundled_reader()
    predictor = load_reader(paths)
    model = ", ".join(describe_model(p) for p in paths)
    x, y = mnist.test_images, mnist.test_labels
    if not args.speed_only:
        how = "read as a committee" if len(paths) > 1 else f"temperature {predictor.temperature:.3f}"
        print(
            f"model {model} ({how}; sure at p >= {predictor.sure_digit:.4f} for a digit, "
            f"{predictor.sure_number:.4f} for each digit of a number); scenes seed {args.seed}"
        )
        for name in args.sets:
            t0 = time.perf_counter()
            if name == "pen":
                singles = read_all(predictor, pen_digit_scenes(args.per_kind, seed=args.seed))
                numbers = read_all(predictor, pen_number_scenes(args.numbers, seed=args.seed))
                kinds, what = PEN_KINDS, "pen-stroke handwriting (not tuned on)"
            else:
                scenes = digit_scenes(x, y, args.per_kind, seed=args.seed)
                singles = read_all(predictor, scenes + mnist_grid_scenes(x, y, args.per_kind, seed=args.seed))
                numbers = read_all(predictor, number_scenes(x, y, args.numbers, seed=args.seed))
                kinds, what = (
                    KINDS + ("grid_png",),
                    "MNIST test digits in photo scenes (the tuning generator, another seed)",
                )
            print(
                f"\n## {what}: {len(singles)} digit and {len(numbers)} number images read in "
                f"{time.perf_counter() - t0:.0f} s"
            )
            table(singles, f"Single digits, {what}", kinds)
            table(numbers, f"Numbers of 2-5 digits, {what}", kinds)
        print()
        touching(predictor, x, y)
        not_digits(predictor)
    speed(predictor, x, y, args.runs)


if __name__ == "__main__":
    main()
