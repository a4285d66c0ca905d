"""Hostile .safetensors headers: every tensor's name, dtype and shape is judged against the architecture
(models.py) from the header alone, before any tensor is read. A 4 KB sparse file whose header claims a 2 GB
conv1.weight cost `summary` 3.9 GB and 10 s; now one line in 0.25 s at 42 MB."""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import lenet5, opt
from lenet5.checkpoint import load_checkpoint, save_checkpoint
from lenet5.config import ModelConfig
from lenet5.engines import create_engine
from lenet5.errors import CheckpointError
from lenet5.models import parameter_shapes


def write_header(path: Path, tensors: dict, meta: dict | None = None, *, sparse: bool = True) -> Path:
    """A safetensors file of ``tensors`` {name: (dtype, shape, itemsize)}: the header and then, sparse, room
    for the data it declares (the file's size matches, its disk use is a few KB)."""
    header, offset = {}, 0
    for name, (dtype, shape, itemsize) in tensors.items():
        n = int(np.prod(shape, dtype=object)) * itemsize
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "lenet5-checkpoint", **(meta or {})}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        if sparse:
            f.truncate(8 + len(raw) + offset)
        else:
            f.write(bytes(offset))
    return path


def modern(**replace) -> dict:
    tensors = {name: ("F32", shape, 4) for name, shape in parameter_shapes("modern").items()}
    tensors.update(replace)
    return tensors


def refused(path: Path, *words: str) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 400, message
    for word in words:
        assert word in message, message
    return message


@pytest.fixture()
def no_tensor_reads(monkeypatch):
    """Fails the test if safetensors is asked to open the file (that is where the tensors are read)."""
    import safetensors

    def refuse(*args, **kwargs):
        raise AssertionError("the file was opened for its tensors before its header was judged")

    monkeypatch.setattr(safetensors, "safe_open", refuse)


N_PARAMS = sum(int(np.prod(s)) for s in parameter_shapes("modern").values())


@pytest.mark.parametrize(
    "replace, words",
    [
        ({"conv1.weight": ("F32", (500_000_000,), 4)}, ("conv1.weight has shape (500000000,)", "needs (6, 1, 5, 5)")),
        ({"fc3.bias": ("F32", (10, 1), 4)}, ("fc3.bias has shape (10, 1)",)),
        ({"fc3.bias": ("I32", (10,), 4)}, ("fc3.bias has dtype 'I32'", "floating point")),
        ({"fc3.bias": ("BF16", (10,), 2)}, ("fc3.bias has dtype 'BF16'",)),
        ({"optimizer.exp_avg": ("F32", (500_000_000,), 4)}, ("optimizer.exp_avg has shape", f"({N_PARAMS},)")),
        ({"optimizer.step": ("F64", (), 8)}, ("optimizer.step has dtype", "an integer")),
        ({"optimizer.step": ("I64", (100_000_000,), 8)}, ("optimizer.step has shape (100000000,)",)),
        ({"extra.weight": ("F32", (10,), 4)}, ("does not fit the modern LeNet-5", "unexpected ['extra.weight']")),
    ],
    ids=["huge-conv1", "wrong-shape", "int", "bf16", "huge-optimizer", "float-step", "long-step", "extra"],
)
def test_a_header_that_does_not_fit_the_architecture_is_refused_unread(tmp_path, no_tensor_reads, replace, words):
    path = write_header(tmp_path / "model.safetensors", modern(**replace), {"model": "modern"})
    assert os.stat(path).st_blocks * 512 < 64 * 1024  # sparse: a few KB on disk whatever it declares
    refused(path, *words)


@pytest.mark.parametrize(
    "header, words",
    [
        (b"[" * 5000 + b"]" * 5000, ("nested 5000 levels deep",)),
        (b'{"conv1.weight": {"dtype": "F32", "shape": [' + b"9" * 500 + b'], "data_offsets": [0, 4]}}', ("digits",)),
        (b'{"conv1.weight": {"dtype": "F32", "shape": [-6], "data_offsets": [0, 4]}}', ("shape [-6]",)),
        (b'{"conv1.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 99999999]}}', ("data offsets",)),
        (b'{"conv1.weight": 7}', ("no dtype",)),
        (b"\xff\xfe", ("header",)),
    ],
    ids=["deep", "long-int", "negative", "offsets-past-end", "not-an-object", "not-utf8"],
)
def test_a_malformed_header_is_one_line(tmp_path, no_tensor_reads, header, words):
    path = tmp_path / "model.safetensors"
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    refused(path, "corrupt or truncated", *words)


def test_the_sparse_2gb_conv1_costs_summary_no_memory(tmp_path):
    """The CLI as a user runs it, under a 1 GiB address-space limit: one line, exit 2, no MemoryError."""
    path = write_header(
        tmp_path / "model.safetensors", modern(**{"conv1.weight": ("F32", (500_000_000,), 4)}), {"model": "modern"}
    )
    assert path.stat().st_size > 2_000_000_000
    limit = 1 << 30

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "lenet5", "summary", "--model", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=cap,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"error: {path}: conv1.weight has shape (500000000,), the modern LeNet-5 needs (6, 1, 5, 5)"
    ]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_real_last_checkpoint_with_its_optimizer_state_still_loads(tmp_path, optimizer):
    engine = create_engine("numpy", ModelConfig(), opt(optimizer, momentum=0.9), seed=0)
    path = save_checkpoint(
        tmp_path / "last.safetensors",
        engine.state_dict(),
        engine="numpy",
        model="modern",
        optimizer=engine.optimizer_state(),
    )
    ckpt = load_checkpoint(path)
    assert set(ckpt.weights) == set(parameter_shapes("modern"))
    assert set(ckpt.optimizer) == set(engine.optimizer_state())


def test_a_checkpoint_without_metadata_is_judged_by_its_names(tmp_path):
    path = write_header(
        tmp_path / "model.safetensors", modern(**{"fc1.weight": ("F32", (120, 400, 1), 4)}), sparse=False
    )
    refused(path, "fc1.weight has shape (120, 400, 1)")
    assert lenet5("summary", "--model", path, timeout=60).returncode == 2
