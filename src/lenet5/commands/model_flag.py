"""--model: which model a command loads, the same for every command: a checkpoint, a run folder, ``latest``
(the newest run under train.out) or an .onnx file; the bundled model when it is left out."""

from __future__ import annotations

import argparse
from pathlib import Path

from lenet5.commands.output import print_err
from lenet5.errors import CheckpointError, Lenet5Error

MODEL_HELP = (
    "a checkpoint (.safetensors, .pth), a run folder, 'latest' (the newest run under train.out) or an "
    ".onnx file; default: the model bundled with lenet5 (see its MODEL_CARD.md)"
)
READER_HELP = (  # the commands that read with the bundled reader when no --model is given
    "a checkpoint (.safetensors, .pth), a run folder, 'latest' (the newest run under train.out) or an "
    ".onnx file; default: the reader bundled with lenet5, three LeNet-5s read together (see its MODEL_CARD.md)"
)


COMMITTEE_HELP = {
    "several": "; several models (--model A B C, or --model repeated) make a committee that reads the mean of "
    "their calibrated probabilities",
    "repeated": "; several models (--model A --model B: one model each) make a committee that reads the mean of "
    "their calibrated probabilities",
}


def add_model_flag(p: argparse.ArgumentParser, committee: str | None = None) -> None:
    """--model (also --model-path, --model_path), for every command that loads a model.

    ``committee``: the command also takes several models, as a list in args.model. "several": --model takes
    one or more paths and may be repeated (a command without positional arguments); "repeated": one path per
    --model, repeated (a command whose positional arguments would otherwise be read as models)."""
    names = ("--model", "--model_path", "--model-path")
    if committee is None:
        p.add_argument(*names, dest="model", default=None, metavar="MODEL", help=MODEL_HELP)
        return
    several = {"action": "extend", "nargs": "+"} if committee == "several" else {"action": "append"}
    p.add_argument(
        *names, dest="model", default=None, metavar="MODEL", help=READER_HELP + COMMITTEE_HELP[committee], **several
    )


def model_path(args) -> Path:
    """--model as typed -> the file to load, the same for every command (checkpoint.resolve_model; ``latest``
    is the newest complete run under the configured train.out, see latest_run)."""
    from lenet5.checkpoint import resolve_model

    if args.model == "latest":
        from lenet5.config import resolve_config

        return latest_run(Path(resolve_config().train.out))
    return resolve_model(args.model)


def model_paths(args) -> list[Path]:
    """--model of a command that takes a committee -> the file of each model, in the order typed (the
    bundled reader's, a committee of three LeNet-5s, when --model is left out)."""
    if args.model is None or args.model == []:
        from lenet5.checkpoint import bundled_reader

        return bundled_reader()
    typed = args.model if isinstance(args.model, list) else [args.model]
    return [model_path(argparse.Namespace(model=spec)) for spec in typed]


def _run_facts(run_dir: Path) -> tuple[bool, int]:
    """(whether the run finished: its metrics.json is written at the very end, its limit_batches: a smoke run
    trains at most that many batches per epoch, 0 for a full run; from the run's own config.yaml)."""
    from lenet5.config import load_yaml

    finished = (run_dir / "metrics.json").is_file()
    try:
        limit = (load_yaml(run_dir / "config.yaml").get("train") or {}).get("limit_batches", 0)
    except (Lenet5Error, AttributeError):  # no config, or not a mapping: not known to be a smoke run
        limit = 0
    return finished, limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else 0


def latest_run(runs: Path) -> Path:
    """--model latest: the model.safetensors of the newest run under ``runs`` (train.out), preferring full
    runs to smoke runs (--limit-batches) and finished runs to unfinished ones (still training, or stopped),
    so a quick check made after a real run does not take its place. Says on stderr which run it chose."""
    from lenet5.checkpoint import BEST_FILE

    found = []
    for run_dir in sorted(runs.iterdir()) if runs.is_dir() else []:
        model = run_dir / BEST_FILE
        if model.is_file():
            finished, limit = _run_facts(run_dir)
            found.append(((limit == 0, finished, model.stat().st_mtime), model, finished, limit))
    if not found:
        raise CheckpointError(
            f"--model latest: no run under {runs}/ (train.out) has a {BEST_FILE} yet; train one "
            "(lenet5 train) or leave out --model to use the bundled model"
        )
    _, model, finished, limit = max(found, key=lambda row: row[0])
    kind = f"a smoke run: --limit-batches {limit}" if limit else "a full run"
    state = "finished" if finished else "not finished: still training, or stopped before the end"
    others = f"; no full run under {runs}/" if limit else ("" if finished else f"; no finished run under {runs}/")
    print_err(f"--model latest: {model} ({kind}, {state}{others})")
    return model
