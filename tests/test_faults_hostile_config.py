"""Hostile configs: YAML built to break the parser, in a config file and through --set. Each is one `error:`
line before anything is built: nesting past MAX_YAML_DEPTH (50,000 '[' in a 100 KB file took 124 s and then
printed a RecursionError traceback), '{a: ' x 20,000, a 5,000-digit integer (a ValueError traceback), and a key
given twice in one mapping (YAML keeps the last one silently)."""

from __future__ import annotations

import time

import pytest

from conftest import lenet5
from lenet5.config import MAX_YAML_DEPTH, build_config
from lenet5.errors import ConfigError


def one_line(result) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) < 300, result.stderr[-2000:]
    return lines[0]


DEEP = {
    "brackets": "train:\n  seed: " + "[" * 50_000,
    "flow-mappings": "train:\n  seed: " + "{a: " * 20_000,
    "block-sequences": "train:\n  seed:\n" + "    " + "- " * 20_000 + "1\n",
    "indentation": "".join(" " * i + f"k{i}:\n" for i in range(400)),
}


@pytest.mark.parametrize("text", DEEP.values(), ids=DEEP.keys())
def test_deep_nesting_in_a_config_file_is_one_line_at_once(tmp_path, text):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    assert path.stat().st_size < 1_000_000
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=f"config file {path} is nested more than {MAX_YAML_DEPTH} levels deep"):
        build_config([path])
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    "value", ["[" * 5000, "{a: " * 2000, "- " * 2000 + "1"], ids=["brackets", "mappings", "dashes"]
)
def test_deep_nesting_through_set_is_one_line(value):
    with pytest.raises(ConfigError, match="--set train.seed is nested more than"):
        build_config(sets=[f"train.seed={value}"])


def test_a_set_longer_than_any_setting_is_refused_unparsed():
    with pytest.raises(ConfigError, match="50,011 characters long"):
        build_config(sets=["train.seed=" + "[" * 50_000])


def test_nesting_within_the_bound_is_still_judged_by_its_key():
    value = "[" * (MAX_YAML_DEPTH - 2) + "1" + "]" * (MAX_YAML_DEPTH - 2)
    with pytest.raises(ConfigError, match="'train.seed' must be an integer"):
        build_config(sets=[f"train.seed={value}"])


def test_a_5000_digit_integer_is_refused_before_it_is_built(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("train:\n  seed: " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match="an integer of 5,000 characters"):
        build_config([path])
    with pytest.raises(ConfigError, match="an integer of 5,000 characters"):
        build_config(sets=["train.seed=" + "9" * 5000])
    with pytest.raises(ConfigError, match="<= 4294967295; got"):  # long, but a number: judged by its range
        build_config(sets=["train.seed=" + "9" * 60])


@pytest.mark.parametrize(
    "text, key, line",
    [
        ("train:\n  seed: 1\n  seed: 2\n", "'seed'", 3),
        ("train:\n  seed: 1\noptimizer:\n  lr: 0.1\ntrain:\n  epochs: 2\n", "'train'", 5),
        ("train: {epochs: 1, epochs: 2}\n", "'epochs'", 1),
    ],
    ids=["key", "section", "flow"],
)
def test_a_key_given_twice_is_refused(tmp_path, text, key, line):
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"config file {path} gives key {key} twice \\(line {line}\\); keep one"):
        build_config([path])


def test_the_cli_prints_one_line_for_each(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text(DEEP["brackets"])
    assert "nested more than" in one_line(lenet5("train", "--config", deep, timeout=60))
    assert "nested more than" in one_line(lenet5("train", "--set", "train.seed=" + "{a: " * 2000, timeout=60))
    assert "5,000 characters" in one_line(lenet5("train", "--set", "train.seed=" + "9" * 5000, timeout=60))
    twice = tmp_path / "twice.yaml"
    twice.write_text("train:\n  seed: 1\n  seed: 2\n")
    assert "twice" in one_line(lenet5("tune", "--config", twice, timeout=60))
