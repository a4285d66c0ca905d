"""The README's picture for "Your own digits": a few photo-like scenes, what the network saw, and the answer.

python benchmarks/photo_figure.py --model runs/<name>/model.safetensors [--out docs/photos.png]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from lenet5.data.datasets import load_mnist  # noqa: E402
from lenet5.predict import Predictor  # noqa: E402
from photo_scenes import digit_scenes, number_scenes  # noqa: E402

KINDS = ("sheet_on_table", "ruled", "shadow", "squared", "dim_room", "uneven_light")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default=str(ROOT / "docs" / "photos.png"))
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    mnist = load_mnist()
    predictor = Predictor.from_checkpoint(args.model)
    x, y = mnist.test_images, mnist.test_labels
    scenes = [number_scenes(x, y, 1, seed=args.seed + i, kinds=(k,))[0] for i, k in enumerate(KINDS[:3])]
    scenes += [digit_scenes(x, y, 1, seed=args.seed + i, kinds=(k,))[0] for i, k in enumerate(KINDS[3:])]
    fig, axes = plt.subplots(2, len(scenes), figsize=(3.1 * len(scenes), 5.4), gridspec_kw={"height_ratios": [3, 1.1]})
    for col, scene in enumerate(scenes):
        reading, fields = predictor.read_image_bytes(scene.data, scene.kind)
        photo = np.asarray(Image.open(io.BytesIO(scene.data)).convert("RGB"))
        ax = axes[0, col]
        ax.imshow(photo)
        for d in reading["digits"]:
            x0, y0, x1, y1 = d["box"]
            ax.add_patch(
                plt.Rectangle(
                    (x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.5, ec="#d62728" if d["unsure"] else "#2ca02c"
                )
            )
        answer = reading["number"] if reading["number"] is not None else "no digit"
        sure = "not sure" if reading["unsure"] else f"{reading['probability']:.0%}"
        ax.set_title(f"{scene.kind.replace('_', ' ')}\nread {answer} ({sure}), written {scene.label}", fontsize=9)
        ax.axis("off")
        strip = (
            np.concatenate([np.pad(f, 2, constant_values=60) for f in fields], axis=1)
            if fields
            else np.zeros((32, 32), np.uint8)
        )
        axes[1, col].imshow(strip, cmap="gray", vmin=0, vmax=255)
        axes[1, col].set_title("what the network saw", fontsize=8)
        axes[1, col].axis("off")
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
