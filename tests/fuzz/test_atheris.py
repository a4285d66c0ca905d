"""Run the atheris (libFuzzer) harnesses in this folder for a fixed budget, from seed corpora of valid files.

Skipped when atheris is not installed (`pip install atheris`). Budget: LENET5_ATHERIS_RUNS inputs per harness
(default 2,000). A longer hunt: `python tests/fuzz/fuzz_images.py CORPUS -atheris_runs=100000`.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("atheris")

HERE = Path(__file__).parent
RUNS = int(os.environ.get("LENET5_ATHERIS_RUNS", "2000"))
# The instrumented interpreter grows by about 1 MB per input run (coverage bookkeeping of Pillow and lenet5: the
# same inputs read without atheris stay at 65 MB), so 2,000 inputs pass libFuzzer's default 2 GB. What one image
# may cost is measured per image by tests/test_faults_hostile_images.py.
RSS_LIMIT_MB = 4096


def seeds(kind: str, folder: Path) -> None:
    from PIL import Image

    from lenet5.checkpoint import save_checkpoint
    from lenet5.config import ModelConfig, OptimizerConfig
    from lenet5.data.idx import encode_idx
    from lenet5.engines import create_engine

    folder.mkdir()
    if kind == "idx":
        (folder / "u8").write_bytes(encode_idx(np.arange(2 * 5 * 5, dtype=np.uint8).reshape(2, 5, 5)))
        (folder / "f8").write_bytes(encode_idx(np.linspace(0, 1, 6).reshape(2, 3)))
    elif kind == "checkpoint":
        weights = create_engine("numpy", ModelConfig(), OptimizerConfig(), seed=0).state_dict()
        save_checkpoint(folder / "good", weights, engine="numpy", model="modern")
    else:
        digit = np.zeros((28, 28), np.uint8)
        digit[5:23, 12:17] = 255
        for fmt in ("PNG", "GIF", "BMP", "JPEG", "TIFF", "WEBP"):
            buf = io.BytesIO()
            Image.fromarray(digit).save(buf, format=fmt)
            (folder / fmt.lower()).write_bytes(buf.getvalue())
    for found in (HERE / "regressions").glob(f"{kind}-*"):  # inputs that once crashed the code
        (folder / found.name).write_bytes(found.read_bytes())


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["idx", "checkpoint", "images"])
def test_atheris_harness_finds_nothing(kind, tmp_path):
    corpus = tmp_path / "corpus"
    seeds(kind, corpus)
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / f"fuzz_{kind}.py"),
            str(corpus),
            f"-atheris_runs={RUNS}",
            "-seed=1",
            f"-rss_limit_mb={RSS_LIMIT_MB}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Done" in result.stderr, result.stderr[-2000:]
