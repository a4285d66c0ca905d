"""Write the example images in examples/ from MNIST *test* digits (never training digits, never a font).

    python examples/make_examples.py [--out examples] [--data-dir DIR]

- digits/seven.png, digits/two.png, digits/four.png: one test digit each, scaled 28 -> 112 px, dark ink on
  white paper, as a scan of one handwritten digit would look;
- number.jpg: the number 4096 written with four test digits as blue ink on a sheet of paper photographed
  under uneven light (a gradient and a dark corner, paper grain, a slight tilt of each digit, a little blur,
  JPEG), as a phone photo would look.

Everything is seeded and the digits are fixed test-set indices, so the files come out the same each time
(`lenet5 data` fetches MNIST first if it is not there). Try them: `lenet5 predict examples/digits examples/number.jpg`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

SINGLE = {"seven": 0, "two": 1, "four": 4}  # file name -> MNIST test index (labels 7, 2, 4)
NUMBER = (4, 3, 7, 11)  # test indices of a 4, a 0, a 9 and a 6: the number 4096
SEED = 20261203


def digit_on_paper(digit: np.ndarray, scale: int = 4) -> Image.Image:
    """A 28x28 MNIST digit (white on black) -> dark ink on white paper, ``scale`` times larger."""
    big = Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    return Image.fromarray(255 - np.asarray(big))


def photo_of_number(digits: list[np.ndarray], rng: np.random.Generator) -> Image.Image:
    """Digits as ink on a photographed sheet of paper: RGB, 480x200."""
    h, w = 200, 480
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 0.72 + 0.25 * xx / w + 0.05 * yy / h  # brighter to the right
    light *= 1.0 - 0.25 * np.clip(1.0 - np.hypot(xx / w, yy / h) / 0.45, 0, 1)  # a darker top-left corner
    grain = rng.normal(0.0, 0.018, (h, w)).astype(np.float32)
    paper = np.array([238, 232, 218], np.float32) / 255.0
    img = (light + grain)[..., None] * paper  # (h, w, 3) in 0..1
    ink = np.array([28, 40, 96], np.float32) / 255.0
    x = 40
    for digit in digits:
        size = int(rng.integers(104, 120))
        glyph = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
        glyph = glyph.rotate(float(rng.uniform(-6, 6)), resample=Image.Resampling.BICUBIC)
        alpha = np.asarray(glyph, np.float32)[..., None] / 255.0 * 0.92
        top = int(rng.integers(30, h - size - 20))
        region = img[top : top + size, x : x + size]
        img[top : top + size, x : x + size] = region * (1 - alpha) + ink * alpha
        x += size - int(rng.integers(10, 22))  # MNIST digits have a margin: overlap the boxes a little
    photo = Image.fromarray(np.clip(img * 255.0, 0, 255).astype(np.uint8), "RGB")
    return photo.filter(ImageFilter.GaussianBlur(0.8))


def write(out: Path, test_images: np.ndarray) -> list[Path]:
    (out / "digits").mkdir(parents=True, exist_ok=True)
    written = []
    for name, index in SINGLE.items():
        path = out / "digits" / f"{name}.png"
        digit_on_paper(test_images[index]).save(path, format="PNG", optimize=True)
        written.append(path)
    rng = np.random.default_rng(SEED)
    path = out / "number.jpg"
    photo_of_number([test_images[i] for i in NUMBER], rng).save(path, format="JPEG", quality=82)
    written.append(path)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out", default=str(Path(__file__).resolve().parent), help="folder to write into (default examples/)"
    )
    p.add_argument("--data-dir", default=None, help="MNIST cache folder (default: $LENET5_DATA or ~/.cache/lenet5)")
    args = p.parse_args()
    from lenet5.data.datasets import load_mnist

    data = load_mnist(args.data_dir)
    for path in write(Path(args.out), data.test_images):
        print(f"{path}  ({path.stat().st_size / 1000:.1f} KB)")


if __name__ == "__main__":
    main()
