"""The command line: the only place that parses arguments and prints for humans.

Every command prints one JSON document on stdout with --json; progress and logs go to stderr.
A user mistake (Lenet5Error) prints one line `error: ...` and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lenet5 import __version__
from lenet5.errors import Lenet5Error

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None,
                   help="folder with (or for) the dataset files; default $LENET5_DATA or ~/.cache/lenet5")
    p.add_argument("--dataset", choices=("mnist", "idx"), default=None,
                   help="mnist: verified by SHA-256 (default); idx: any four IDX files under MNIST's names in --data-dir")


# ----------------------------------------------------------------------------------------------- data
def cmd_data(args) -> int:
    from lenet5.data.datasets import load_mnist

    data = load_mnist(args.data_dir, args.dataset or "mnist")
    files = data.files
    counts = {
        "train_images": int(len(data.train_images)), "train_labels": int(len(data.train_labels)),
        "test_images": int(len(data.test_images)), "test_labels": int(len(data.test_labels)),
    }
    report = {
        "dataset": files.dataset,
        "folder": str(files.folder),
        "counts": counts,
        "files": {
            name: {"path": str(files.paths[name]), "sha256": files.sha256[name], "source": files.sources[name]}
            for name in files.paths
        },
    }
    if args.json:
        _print_json(report)
        return 0
    print(f"{files.dataset} is ready in {files.folder}")
    print(f"  train: {counts['train_images']} images, {counts['train_labels']} labels")
    print(f"  test:  {counts['test_images']} images, {counts['test_labels']} labels")
    for name, info in report["files"].items():
        print(f"  {name}  sha256 {info['sha256']}")
        print(f"      {info['path']}  (from {info['source']})")
    return 0


# ------------------------------------------------------------------------------------ predict, serve
# (section owned by the predict/serve work: cmd_predict, cmd_serve and their parsers)
def _add_predict_serve_parsers(sub) -> None:
    pass


# --------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lenet5", description="LeNet-5 on MNIST with a NumPy and a PyTorch engine.")
    parser.add_argument("--version", action="version", version=f"lenet5 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("data", help="fetch and verify MNIST into the cache, print what is there")
    _add_data_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_data)

    _add_predict_serve_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Lenet5Error as exc:
        _err(f"error: {exc}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
