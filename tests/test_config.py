"""Settings: defaults <- config.yaml <- --config <- flags <- --set, and one clear line for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import lenet5
from lenet5.config import Config, build_config, config_from_dict
from lenet5.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_shipped_config_yaml_is_the_built_in_default():
    assert build_config([REPO / "config.yaml"]) == Config()


def test_layers_apply_in_order(tmp_path):
    extra = tmp_path / "mine.yaml"
    extra.write_text("train:\n  epochs: 3\n  batch_size: 32\noptimizer:\n  lr: 0.01\n")
    cfg = build_config(
        [REPO / "config.yaml", extra],
        {"train": {"batch_size": 128}},
        ["schedule.name=cosine", "optimizer.nesterov=true"],
    )
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.optimizer.lr) == (3, 128, 0.01)
    assert cfg.schedule.name == "cosine" and cfg.optimizer.nesterov is True
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "sets, message",
    [
        (["train.epoch=3"], "unknown config key 'train.epoch'"),
        (["trainer.epochs=3"], "unknown config section 'trainer'"),
        (["train.batch_size=0"], "'train.batch_size' must be >= 1"),
        (["optimizer.lr=-0.1"], "'optimizer.lr' must be > 0"),
        (["train.batch_size=abc"], "'train.batch_size' must be an integer"),
        (["optimizer.name=rmsprop"], "must be one of sgd, adam, adamw"),
        (["optimizer.nesterov=3"], "must be true or false"),
        (["optimizer.beta1=1"], "'optimizer.beta1' must be >= 0 and < 1"),  # Adam's bias correction divides by 1 - beta
        (["optimizer.beta2=1.0"], "'optimizer.beta2' must be >= 0 and < 1"),
        (["train.seed=18446744073709551616"], "'train.seed' must be >= 0 and <= 4294967295"),  # torch overflows
        (["train.threads=5000"], "'train.threads' must be >= 0 and <= 64"),  # 5000 OS threads
        (["train.name=../../x"], "'train.name' must be a plain folder name"),  # a run outside --out
        (["train.name=/tmp/x"], "'train.name' must be a plain folder name"),
        (["train.name=."], "'train.name' must be a plain folder name"),  # into --out itself
        (["schedule.gamma=2"], "'schedule.gamma' must be > 0 and <= 1"),
        (["epochs=3"], "--set expects section.key=value"),
    ],
)
def test_bad_settings_name_the_key_and_what_is_allowed(sets, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config([], None, sets)


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config([bad])
    with pytest.raises(ConfigError, match="does not exist"):
        build_config([tmp_path / "nope.yaml"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "train.batch_size"),
        (["--batch_size", "0"], "train.batch_size"),
        (["--lr", "-1"], "optimizer.lr"),
        (["--set", "model.depth=7"], "unknown config key 'model.depth'"),
    ],
)
def test_cli_rejects_bad_config_in_one_line(tmp_path, args, message):
    result = lenet5("train", *args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_yaml_aliases_are_refused_before_they_expand(tmp_path):
    """A 1 KB "billion laughs" file (nested aliases) would expand to gigabytes when used or printed."""
    bomb = tmp_path / "bomb.yaml"
    lines = (
        ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
        + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
        + ["train:", "  epochs: *a9"]
    )
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="YAML alias"):
        build_config([bomb])
    with pytest.raises(ConfigError, match="YAML alias"):
        build_config(sets=["train.epochs=[&x [1, 1], *x, *x]"])


def test_a_huge_or_deep_wrong_value_is_shown_short():
    with pytest.raises(ConfigError) as err:
        build_config(sets=["train.epochs=" + "[" * 50 + "1" + "]" * 50])
    assert len(str(err.value)) < 200
    with pytest.raises(ConfigError) as err:
        build_config(sets=["train.epochs=" + "x" * 100_000])
    assert len(str(err.value)) < 200


def test_an_oversized_config_file_is_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * 2_000_000 + "\n")
    with pytest.raises(ConfigError, match="a config is a few KB"):
        build_config([big])


@pytest.mark.slow
def test_cli_layers_config_yaml_config_flags_and_set_in_that_order(mnist, tmp_path):
    """`lenet5 train` in a folder holding config.yaml, with --config, flags and --set, each layer overriding a
    different subset of keys: the run folder's config.yaml shows which layer won for every key."""
    import yaml

    from conftest import write_mnist_subset

    data = write_mnist_subset(mnist, tmp_path / "data", 300, 100)
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text(  # ./config.yaml: the lowest file layer
        "train:\n  epochs: 5\n  batch_size: 48\n  seed: 10\n"
        "optimizer:\n  name: sgd\n  lr: 0.5\n  momentum: 0.8\n"
        "schedule:\n  name: cosine\n"
        "augment:\n  rotation: 4.0\n"
    )
    mine = tmp_path / "elsewhere" / "mine.yaml"  # --config: a path, not a name looked up in the cwd
    mine.parent.mkdir()
    mine.write_text(
        "train:\n  epochs: 1\n  seed: 11\noptimizer:\n  lr: 0.05\n  momentum: 0.5\nschedule:\n  name: step\n"
    )
    result = lenet5(
        "train",
        "--config",
        mine,
        "--lr",
        "0.02",
        "--seed",
        "12",
        "--dataset",
        "idx",
        "--data-dir",
        data,
        "--name",
        "layered",
        "--set",
        "train.seed=13",
        "--set",
        "schedule.name=constant",
        "--set",
        "data.val_size=100",
        cwd=work,
    )
    assert result.returncode == 0, result.stderr
    saved = yaml.safe_load((work / "runs" / "layered" / "config.yaml").read_text())
    default = Config().to_dict()
    assert saved["train"]["batch_size"] == 48 and saved["optimizer"]["name"] == "sgd"  # ./config.yaml only
    assert saved["augment"]["rotation"] == 4.0
    assert saved["train"]["epochs"] == 1 and saved["optimizer"]["momentum"] == 0.5  # --config over ./config.yaml
    assert saved["optimizer"]["lr"] == 0.02  # --lr over both files
    assert saved["train"]["seed"] == 13  # --set over --seed and both files
    assert saved["schedule"]["name"] == "constant" and saved["data"]["val_size"] == 100  # --set over the files
    assert saved["data"]["dataset"] == "idx" and saved["data"]["data_dir"] == str(data)  # data flags
    for section, key in [
        ("train", "eval_batch_size"),
        ("model", "name"),
        ("optimizer", "beta1"),
        ("augment", "enabled"),
        ("early_stopping", "patience"),
    ]:  # set nowhere: the defaults
        assert saved[section][key] == default[section][key], (section, key)
    history = (work / "runs" / "layered" / "history.csv").read_text().splitlines()
    assert len(history) == 2  # the settings were used, not only written: one epoch, as --config asked
