"""The flags that set a config key (``--epochs`` sets train.epochs, ...): their choices and defaults come from
config.py and its registries, and what was typed becomes the config's flag layer."""

from __future__ import annotations

import argparse

FLAG_KEYS = {  # flag (argparse dest) -> the config key it sets; the one flag-to-override mapping
    "engine": "train.engine",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "optimizer.lr",
    "optimizer": "optimizer.name",
    "seed": "train.seed",
    "out": "train.out",
    "name": "train.name",
    "threads": "train.threads",
    "device": "train.device",
    "data_dir": "data.data_dir",
    "dataset": "data.dataset",
    "limit_batches": "train.limit_batches",
    "logger": "train.logger",
}


def flag_overrides(args) -> dict:
    """The config flags that were given, as a {section: {key: value}} dict."""
    out: dict = {}
    for dest, dotted in FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            section, key = dotted.split(".")
            out.setdefault(section, {})[key] = value
    return out


def add_config_flag(p: argparse.ArgumentParser, flag: str, dest: str, help: str, aliases: tuple = (), **kwargs) -> None:
    """A flag that sets a config key: its choices and default come from config.py (and its registries)."""
    from lenet5 import config

    dotted = FLAG_KEYS[dest]
    default = config.default(dotted)
    p.add_argument(
        flag,
        *aliases,
        dest=dest,
        default=None,
        choices=config.choices(dotted),
        help=f"{help} (sets {dotted}; default {'none' if default is None else default}, or the config's)",
        **kwargs,
    )


def add_data_options(p: argparse.ArgumentParser) -> None:
    """--data-dir and --dataset, for every command that reads MNIST."""
    add_config_flag(
        p,
        "--data-dir",
        "data_dir",
        "folder with (or for) the dataset files; none: $LENET5_DATA or ~/.cache/lenet5",
        aliases=("--data_dir",),
    )
    add_config_flag(
        p,
        "--dataset",
        "dataset",
        "mnist: verified by SHA-256; idx: any four IDX files under MNIST's names in --data-dir",
    )
