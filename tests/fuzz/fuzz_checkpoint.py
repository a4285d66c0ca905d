"""atheris (libFuzzer) harness for the checkpoint loader: any bytes in a .safetensors file -> a valid
checkpoint or CheckpointError, nothing else (and never code execution: safetensors has no code path).

    python tests/fuzz/fuzz_checkpoint.py [CORPUS_DIR] -atheris_runs=100000     (pip install atheris)
"""

import os
import sys
import tempfile

import atheris
import numpy as np

with atheris.instrument_imports():
    from lenet5.checkpoint import load_checkpoint
    from lenet5.errors import CheckpointError

PATH = os.path.join(tempfile.mkdtemp(prefix="lenet5-fuzz-"), "model.safetensors")


def test_one_input(data: bytes) -> None:
    with open(PATH, "wb") as f:
        f.write(data)
    try:
        ckpt = load_checkpoint(PATH)
    except CheckpointError:
        return
    assert all(np.all(np.isfinite(v)) for v in ckpt.weights.values())


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
