"""Hostile checkpoints (issue 13): .pth files whose tensors claim far more than they hold (a stride-0 view, a
zip record that inflates), tensors no LeNet-5 has (meta, sparse, quantized, complex, nested), and safetensors
metadata built to break the JSON parser (deep nesting, giant integers, giant values).

Each must give one CheckpointError line naming the file, never a traceback; the attacks that used to cost
gigabytes run in a subprocess under RLIMIT_AS, so a regression fails instead of eating the machine.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import lenet5

torch = pytest.importorskip("torch")

from lenet5.checkpoint import FORMAT, load_checkpoint, save_checkpoint  # noqa: E402
from lenet5.errors import CheckpointError  # noqa: E402
from lenet5.models import initial_weights, parameter_shapes  # noqa: E402

MEMORY_LIMIT = 2 << 30  # RLIMIT_AS of the attacked subprocess (torch itself needs a few hundred MB)
TIMEOUT = 60
WEIGHTS = initial_weights("modern", "lecun_normal", 0)


def refused(path: Path, *words: str) -> str:
    """load_checkpoint(path) raises one CheckpointError line naming the file and saying ``words``."""
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and len(message) < 400, message
    for word in words:
        assert word in message, message
    return message


def load_in_subprocess(path: Path) -> subprocess.CompletedProcess:
    code = (
        f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))\n"
        "from lenet5.checkpoint import load_checkpoint\nfrom lenet5.errors import CheckpointError\n"
        f"try:\n    load_checkpoint({str(path)!r})\nexcept CheckpointError as exc:\n"
        "    print(exc); raise SystemExit(3)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    )


def state_dict(**replace) -> dict:
    sd = {name: torch.from_numpy(np.array(value)) for name, value in WEIGHTS.items()}
    sd.update(replace)
    return sd


# --------------------------------------------------------------------------- 7. .pth sizes that lie
@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.zeros(1).expand(100_000, 100_000),  # 37 GiB as float32 from a 250 KB file
        lambda: torch.zeros(120, 1).expand(120, 10**8),  # a legal name, a 45 GiB view of 120 floats
    ],
    ids=["37GiB", "long-row"],
)
def test_a_stride0_pth_tensor_is_refused_before_conversion(tmp_path, make):
    path = tmp_path / "expanded.pth"
    torch.save(state_dict(**{"conv3.weight": make()}), path)
    assert path.stat().st_size < 300_000
    result = load_in_subprocess(path)
    assert result.returncode == 3, result.stderr[-2000:]
    assert str(path) in result.stdout and "LeNet-5" in result.stdout and len(result.stdout.splitlines()) == 1


@pytest.mark.parametrize(
    "make, words",
    [
        # one more than conv3.weight
        (lambda: torch.zeros(1).expand(48_001), ("conv3.weight", "more than any LeNet-5 tensor")),
        # more dimensions than any LeNet-5 tensor
        (lambda: torch.zeros(2, 1, 1, 1, 1).expand(2, 3, 4, 5, 6), ("conv3.weight", "dimensions")),
        (lambda: torch.zeros(0, 2**40), ("LeNet-5",)),  # empty: cheap, and still not a LeNet-5 tensor
    ],
    ids=["just-too-many", "five-dims", "empty"],
)
def test_a_pth_tensor_no_lenet5_has_is_refused(tmp_path, make, words):
    path = tmp_path / "odd.pth"
    torch.save(state_dict(**{"conv3.weight": make()}), path)
    refused(path, *words)


def test_a_pth_with_too_much_in_all_is_refused(tmp_path):
    path = tmp_path / "many.pth"
    extra = {f"extra{i}.weight": torch.zeros(1).expand(40_000) for i in range(4)}
    torch.save(state_dict(**extra), path)
    refused(path, "in all", "more than a LeNet-5 has")
    torch.save({f"t{i}": torch.zeros(1) for i in range(1000)}, path)
    refused(path, "1000 entries")


def _deflated(sd: dict) -> bytes:
    """torch.save's zip archive with every record deflated: a record of zeros shrinks ~1000 times, and torch
    allocates the size the archive declares."""
    raw = io.BytesIO()
    torch.save(sd, raw)
    src = zipfile.ZipFile(io.BytesIO(raw.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def test_a_pth_zip_bomb_is_refused_before_torch_load(tmp_path):
    path = tmp_path / "bomb.pth"
    path.write_bytes(_deflated({"conv3.weight": torch.zeros(1 << 23)}))  # a 32 MiB record, ~40 KB on disk
    assert path.stat().st_size < 200_000
    refused(path, "archive declares", "too large")


def test_a_pth_file_larger_than_any_lenet5_checkpoint_is_refused_unread(tmp_path):
    path = tmp_path / "big.pth"
    with open(path, "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB on paper
    refused(path, "too large for a LeNet-5 .pth file")


# ------------------------------------------------------------------ 15. tensors no LeNet-5 holds
KINDS = {
    "meta": lambda: torch.zeros(6, 1, 5, 5, device="meta"),
    "sparse-coo": lambda: torch.zeros(6, 1, 5, 5).to_sparse(),
    "sparse-csr": lambda: torch.zeros(6, 25).to_sparse_csr(),
    "quantized": lambda: torch.quantize_per_tensor(torch.zeros(6, 1, 5, 5), 0.1, 0, torch.qint8),
    "complex": lambda: torch.zeros(6, 1, 5, 5, dtype=torch.complex64),
    "nested": lambda: torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)]),
    "integer": lambda: torch.zeros(6, 1, 5, 5, dtype=torch.int64),
    "bool": lambda: torch.zeros(6, 1, 5, 5, dtype=torch.bool),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # "prototype", "beta", "deprecated"
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_exotic_tensors_give_one_checkpoint_error_line(tmp_path, kind):
    try:
        tensor = KINDS[kind]()
    except (RuntimeError, NotImplementedError) as exc:  # not buildable on this torch build
        pytest.skip(f"cannot build a {kind} tensor here: {exc}")
    path = tmp_path / f"{kind}.pth"
    try:
        torch.save(state_dict(**{"conv1.weight": tensor}), path)
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        pytest.skip(f"torch cannot save a {kind} tensor: {exc}")
    refused(path, "'conv1.weight'")


def test_the_cli_prints_one_line_for_a_meta_tensor(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save(state_dict(**{"conv1.weight": torch.zeros(6, 1, 5, 5, device="meta")}), path)
    result = lenet5("evaluate", "--model", path, timeout=TIMEOUT, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert "meta" in lines[0] and str(path) in lines[0]


def test_a_real_state_dict_still_loads(tmp_path):
    path = tmp_path / "good.pth"
    torch.save({"model_state_dict": state_dict(), "epoch": 3}, path)
    ckpt = load_checkpoint(path)
    assert set(ckpt.weights) == set(parameter_shapes("modern"))
    path.write_bytes(_deflated(state_dict()))  # deflated records of the real size are fine
    assert set(load_checkpoint(path).weights) == set(parameter_shapes("modern"))


# ---------------------------------------------------------------- 14. metadata built to break JSON
def _safetensors(tmp_path: Path, **meta: str) -> Path:
    from safetensors.numpy import save

    metadata = {"format": FORMAT, "format_version": "1", "engine": "numpy", "model": "modern", **meta}
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(save({k: np.ascontiguousarray(v) for k, v in WEIGHTS.items()}, metadata=metadata))
    return path


BIG_INT = "9" * 400
HOSTILE_METADATA = {
    "deep-config": ("config", "[" * 100_000 + "]" * 100_000, "nested"),
    "deep-trainer-state": ("trainer_state", '{"a":' * 5_000 + "1" + "}" * 5_000, "nested"),
    "deep-but-unterminated": ("metrics", '{"x": "' + "[" * 1000, "damaged"),
    "big-int-normalization": ("normalization", json.dumps({"mean": 0.1, "std": 1}).replace("0.1", BIG_INT), "digits"),
    "big-int-calibration": ("calibration", '{"temperature": ' + BIG_INT + "}", "digits"),
    "big-int-metrics": ("metrics", '{"val_accuracy": -' + BIG_INT + "}", "digits"),
    "huge-int-config": ("config", '{"seed": ' + "7" * 5000 + "}", "digits"),
    "big-epoch": ("epoch", BIG_INT, "epoch"),
    "big-format-version": ("format_version", BIG_INT, "format_version"),
    "huge-metrics": ("metrics", json.dumps({"history": ["x" * 100] * 20_000}), "characters"),
    "huge-model-name": ("model", "m" * 100_000, "model"),
    "huge-format": ("format", "f" * 100_000, "not a lenet5 checkpoint"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_METADATA))
def test_hostile_metadata_gives_one_checkpoint_error_line(tmp_path, kind):
    key, value, words = HOSTILE_METADATA[kind]
    refused(_safetensors(tmp_path, **{key: value}), words)


def test_metadata_within_the_bounds_still_loads(tmp_path):
    state = {
        "epoch": 3,
        "seed": 2**127,
        "history": [{"epoch": i, "nested": [[[{"x": [1]}]]]} for i in range(500)],
        "text": "brackets in strings do not count: " + "[{" * 1000,
    }
    path = save_checkpoint(
        tmp_path / "ok.safetensors",
        WEIGHTS,
        engine="numpy",
        model="modern",
        config={"train": {"seed": 2**63}},
        epoch=3,
        metrics={"val_accuracy": 0.5},
        trainer_state=state,
    )
    ckpt = load_checkpoint(path)
    assert ckpt.meta["trainer_state"]["seed"] == 2**127 and ckpt.meta["epoch"] == 3
