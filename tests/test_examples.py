"""The example images in examples/ (for the quick start's `lenet5 predict`): small, read right by the bundled
model, and made by examples/make_examples.py from MNIST test digits, the same each time."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import lenet5

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXPECTED = {"digits/seven.png": "7", "digits/two.png": "2", "digits/four.png": "4", "number.jpg": "4096"}


def test_the_examples_are_there_and_small():
    sizes = {name: (EXAMPLES / name).stat().st_size for name in EXPECTED}
    assert sum(sizes.values()) < 100_000, sizes


def test_the_bundled_model_reads_the_examples():
    result = lenet5("predict", *(EXAMPLES / name for name in EXPECTED), "--json", check=True)
    readings = {str(Path(r["file"]).relative_to(EXAMPLES)): r for r in json.loads(result.stdout)}
    for name, number in EXPECTED.items():
        assert readings[name]["number"] == number and not readings[name]["unsure"], readings[name]


def test_the_script_makes_the_same_images_from_mnist_test_digits(mnist, tmp_path):
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write(tmp_path, mnist.test_images)
    for name in EXPECTED:
        made = np.asarray(Image.open(tmp_path / name), np.int16)
        shipped = np.asarray(Image.open(EXAMPLES / name), np.int16)
        assert made.shape == shipped.shape
        assert np.abs(made - shipped).max() <= (0 if name.endswith(".png") else 8), name  # JPEG: another libjpeg
    labels = [int(mnist.test_labels[i]) for i in module.NUMBER]
    assert "".join(map(str, labels)) == EXPECTED["number.jpg"]
    assert {name: int(mnist.test_labels[i]) for name, i in module.SINGLE.items()} == {"seven": 7, "two": 2, "four": 4}


@pytest.mark.slow  # trains six epochs, about 30 s
def test_the_minimal_example_reaches_99_percent():
    """examples/minimal.py: the models, the NumPy engine and a plain loop, to 99% on MNIST's test set."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / "minimal.py")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    accuracy = float(proc.stdout.strip().splitlines()[-1].split()[-1].rstrip("%")) / 100
    assert accuracy >= 0.99, proc.stdout
