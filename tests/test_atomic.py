"""Atomic writes: a write in progress has one hidden name format, which the run folder and the data cache use
to find what a killed process left behind (and nothing else)."""

from __future__ import annotations

import pytest

from lenet5.atomic import atomic_path, is_temporary, temporary_name


def test_a_temporary_name_is_recognised_as_one_of_its_file():
    name = temporary_name("model.safetensors")
    assert name.startswith(".model.safetensors.") and name.endswith(".tmp")
    assert is_temporary(name) and is_temporary(name, ["model.safetensors"])
    assert not is_temporary(name, ["model"]) and not is_temporary(name, ["config.yaml"])
    tagged = temporary_name("config.yaml", "4242")
    assert is_temporary(tagged, ["config.yaml"]) and not is_temporary(tagged, ["yaml"])


@pytest.mark.parametrize(
    "other",
    [
        "model.safetensors",
        ".model.safetensors",
        ".model.safetensors.tmp",
        ".model.safetensors.abc.tmp",
        "model.safetensors.12345678.tmp",
        ".model.safetensors.12345678.tmp.bak",
        ".model.safetensors.123456789.tmp",
    ],
)
def test_other_names_are_not_temporaries(other):
    """A user's file that merely looks similar is never taken for a leftover (and deleted)."""
    assert not is_temporary(other) and not is_temporary(other, ["model.safetensors"])


def test_a_finished_write_leaves_no_temporary(tmp_path):
    with atomic_path(tmp_path / "out.txt") as tmp:
        assert is_temporary(tmp.name, ["out.txt"])
        tmp.write_text("done")
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
