"""The datasets lenet5 trains and evaluates on, by name: the one list that config validation and the CLI's
``--dataset`` choices come from. It imports nothing, so reading a config never loads the downloader;
data/sources.py says how each dataset's files are found."""

from __future__ import annotations

DATASET_NAMES = (
    "mnist",  # MNIST, verified by SHA-256, fetched when missing
    "idx",  # any four IDX files under MNIST's names in the data folder
)
