"""Every command's flags and help text: the one place the command line is declared. cli.py attaches the
function that runs each command."""

from __future__ import annotations

import argparse

from lenet5 import __version__
from lenet5.commands.config_flags import add_config_flag, add_data_options
from lenet5.commands.model_flag import add_model_flag


def _engine_flag(p: argparse.ArgumentParser) -> None:
    from lenet5.engines import ENGINES

    p.add_argument(
        "--engine",
        choices=tuple(ENGINES),
        default="numpy",
        help="engine that runs the model (default numpy; an .onnx model runs in onnxruntime)",
    )


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser of each command, by name, in the order of ``lenet5 --help``."""
    return next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def command_parser() -> argparse.ArgumentParser:
    """The parser of ``lenet5`` and of each of its commands (their flags, defaults and help)."""
    parser = argparse.ArgumentParser(prog="lenet5", description="LeNet-5 on MNIST with a NumPy and a PyTorch engine.")
    parser.add_argument("--version", action="version", version=f"lenet5 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("data", help="fetch and verify MNIST into the cache, print what is there")
    add_data_options(p)
    p.add_argument(
        "--preview-augment",
        "--preview_augment",
        dest="preview_augment",
        metavar="OUT.png",
        default=None,
        help="also write a grid of digits and random distortions of them (augment settings of ./config.yaml)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")

    p = sub.add_parser("train", help="train a LeNet-5 and write a run folder (model, history, metrics, plots)")
    p.add_argument("--config", default=None, help="YAML file layered over the defaults and ./config.yaml")
    add_config_flag(p, "--engine", "engine", "which engine trains")
    add_config_flag(p, "--epochs", "epochs", "passes over the training split", type=int)
    add_config_flag(p, "--batch-size", "batch_size", "images per step", aliases=("--batch_size",), type=int)
    add_config_flag(p, "--lr", "lr", "peak learning rate", type=float)
    add_config_flag(p, "--optimizer", "optimizer", "optimizer")
    add_config_flag(p, "--seed", "seed", "seed of the weights, the shuffling and the split", type=int)
    add_config_flag(p, "--out", "out", "parent folder of run folders")
    add_config_flag(p, "--name", "name", "run folder name; none: <engine>-<model>-<date>-<time>")
    add_config_flag(
        p,
        "--threads",
        "threads",
        "workers for the engine (numpy: processes, at most one per core; torch: threads), 0: its default",
        type=int,
    )
    add_config_flag(p, "--device", "device", "where the torch engine computes")
    add_config_flag(
        p,
        "--limit-batches",
        "limit_batches",
        "at most this many batches per epoch, 0: all (a quick smoke run)",
        type=int,
    )
    add_config_flag(
        p,
        "--logger",
        "logger",
        "tensorboard: also write TensorBoard event files into the run folder (view with: tensorboard --logdir runs)",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run exactly, with its own config (only --epochs, --data-dir and "
        "--dataset may change)",
    )
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="set any config key (repeatable)")
    p.add_argument("--json", action="store_true", help="print the final metrics as one JSON object")
    add_data_options(p)

    p = sub.add_parser(
        "evaluate",
        help="test loss/accuracy, per-class scores and confusion matrix of a model or a committee of models",
        description="Test a model on the test split. Several models (--model A B C) are tested as a committee "
        "(Ciresan et al. 2012): the mean of their calibrated probabilities, each model with its own "
        "normalization and temperature; each member's accuracy is reported beside the committee's.",
    )
    add_model_flag(p, committee="several")
    _engine_flag(p)
    p.add_argument("--out", default=None, help="folder for confusion_matrix.png, predictions.png, misclassified.png")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    add_data_options(p)

    p = sub.add_parser("summary", help="a model's layers, output shapes and parameter count, and how it was trained")
    add_model_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")

    p = sub.add_parser("export", help="export a checkpoint to ONNX")
    add_model_flag(p)
    p.add_argument("--format", choices=("onnx",), default="onnx", help="the export format (default onnx)")
    p.add_argument(
        "--output",
        default=None,
        help="output file (default: the checkpoint's name with .onnx; for the "
        "bundled model, that name in the current folder)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")

    _add_predict_serve_parsers(sub)
    _add_tune_parser(sub)
    return parser


def _add_predict_serve_parsers(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="classify your own digit images (PNG, JPEG, BMP, GIF, TIFF, WebP, .npy)",
        description="Read the digits or the whole number in each image. An answer is marked NOT SURE when a "
        "digit's calibrated probability is below the reader's reject threshold. Without --model the bundled "
        "reader reads: three LeNet-5s read together, whose thresholds were chosen on held-out photo-like "
        "scenes so that at most 1% of sure single digits and 2% of sure numbers were wrong there "
        "(MODEL_CARD.md); expect more on handwriting unlike any it has seen (1-3.5% of sure numbers on other "
        "scenes of the same kind). A model you trained yourself marks NOT SURE below 80%. "
        "Several models (--model A --model B ...) read as a committee: the mean of their calibrated "
        "probabilities finds and reads the digits, and the reject thresholds are the ones fitted for that "
        "very committee when its first model carries them (benchmarks/reject_rule.py), else those of the "
        "first model that has them (else 80%), fitted for that model alone: the committee's top probability "
        "is never above the mean of its members', so their thresholds are, if anything, strict for it.",
    )
    add_model_flag(p, committee="repeated")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders of images, globs, or .npy arrays")
    p.add_argument("--top-k", "--top_k", dest="top_k", type=int, default=3, help="how many classes to list (default 3)")
    p.add_argument(
        "--save-prepared",
        "--save_prepared",
        dest="save_prepared",
        metavar="DIR",
        default=None,
        help="write the 28x28 image the network saw for each input into DIR",
    )
    _engine_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")

    p = sub.add_parser(
        "serve",
        help="HTTP API (POST /predict) and a page to draw a digit on",
        description="Serve the reading of digits over HTTP: POST /predict and a page to write digits on. "
        "Uploaded images are read in worker processes, each with the model loaded once, so that readings run "
        "on every core: one per core, none on a single core (then the server's threads read them); "
        "--workers sets how many. JSON pixels are read in "
        "the server's threads. A worker that dies or hangs costs the request it was reading a 503 and is "
        "replaced. Several models (--model A --model B) read as a committee, as in predict.",
    )
    add_model_flag(p, committee="several")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    _engine_flag(p)
    p.add_argument(
        "--log-level",
        "--log_level",
        dest="log_level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="server log level (default info)",
    )
    p.add_argument(
        "--max-body-mb",
        "--max_body_mb",
        dest="max_body_mb",
        type=float,
        default=10.0,
        metavar="MB",
        help="largest request body in MB, else 413 (default 10: a phone photo is 3-10 MB)",
    )
    p.add_argument(
        "--body-timeout",
        "--body_timeout",
        dest="body_timeout",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="a request body must arrive within this many seconds, else 408 (default 20)",
    )
    p.add_argument(
        "--header-timeout",
        "--header_timeout",
        dest="header_timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a request's headers must arrive within this many seconds of the connection "
        "opening or of the previous answer, else the connection is closed (default 10)",
    )
    p.add_argument(
        "--idle-timeout",
        "--idle_timeout",
        dest="idle_timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="a kept-alive connection with no new request for this many seconds is closed (default 5)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes that read uploaded images; 0 reads them in the server's threads (default: one per "
        "core, none on a single core)",
    )


def _add_tune_parser(sub) -> None:
    p = sub.add_parser("tune", help="search hyperparameters with Optuna (scored on validation, never on test)")
    p.add_argument(
        "--trials",
        type=int,
        default=20,
        help="finished trials the study should hold, shared by all workers on it (default 20)",
    )
    p.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    p.add_argument("--timeout", type=float, default=None, help="stop starting new trials after this many seconds")
    p.add_argument(
        "--train-size",
        "--train_size",
        dest="train_size",
        type=int,
        default=None,
        help="use this many training images (a seeded subset; validation takes min(data.val_size, N/6))",
    )
    p.add_argument(
        "--storage",
        default="sqlite:///runs/tune/study.db",
        help="study database URL: SQLite (default sqlite:///runs/tune/study.db) or e.g. postgresql://...",
    )
    p.add_argument("--study-name", "--study_name", dest="study_name", default="lenet5", help="default lenet5")
    p.add_argument("--out", default="runs/tune", help="writes OUT/<study-name>/config.yaml (best) and trials.csv")
    p.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        help="seconds between a running trial's heartbeats; a worker silent 3x as long is marked failed",
    )
    p.add_argument(
        "--sampler-seed",
        "--sampler_seed",
        dest="sampler_seed",
        type=int,
        default=None,
        help="seed the sampler (one worker only: parallel workers need different draws)",
    )
    p.add_argument("--config", default=None, help="base YAML config, layered over the defaults and ./config.yaml")
    add_config_flag(p, "--engine", "engine", "which engine trains the trials")
    add_config_flag(p, "--seed", "seed", "training seed of every trial", type=int)
    add_config_flag(
        p,
        "--threads",
        "threads",
        "workers for the engine (numpy: processes, at most one per core; torch: threads), 0: its default",
        type=int,
    )
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="set any base config key (repeatable)")
    p.add_argument("--json", action="store_true", help="print the study summary as one JSON document")
    add_data_options(p)
