"""atheris (libFuzzer) harness for the IDX reader: any bytes -> an array or IDXError, nothing else.

python tests/fuzz/fuzz_idx.py [CORPUS_DIR] -atheris_runs=100000     (pip install atheris)
"""

import sys

import atheris

with atheris.instrument_imports():
    from lenet5.data.idx import parse_idx
    from lenet5.errors import IDXError


def test_one_input(data: bytes) -> None:
    try:
        array = parse_idx(data, "fuzz")
    except IDXError:
        return
    assert array.size * array.dtype.itemsize + 4 + 4 * array.ndim == len(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
