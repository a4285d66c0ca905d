"""atheris (libFuzzer) harness for the image loader (Pillow decoders included in the coverage): any bytes
-> a uint8 (28, 28) digit or ImageError, nothing else.

    python tests/fuzz/fuzz_images.py [CORPUS_DIR] -atheris_runs=100000     (pip install atheris)
"""

import sys
import warnings

import atheris

with atheris.instrument_imports(include=["lenet5", "PIL"]):
    from lenet5.data.images import prepare_bytes
    from lenet5.errors import ImageError

warnings.simplefilter("ignore", UserWarning)  # Pillow's notes on damaged TIFF tags


def test_one_input(data: bytes) -> None:
    try:
        digit = prepare_bytes(data, "fuzz")
    except ImageError:
        return
    assert digit.shape == (28, 28) and digit.dtype.name == "uint8"


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
