"""The command line: the only place that parses arguments and prints for humans.

Every command prints one JSON document on stdout with --json; progress and logs go to stderr.
A user mistake (Lenet5Error) prints one line `error: ...` and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from lenet5 import __version__
from lenet5.errors import WRITE_ERRNOS, Lenet5Error, first_line

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
# The least address space (ulimit -v, prlimit --as) lenet5 runs in: below it the libraries fail where no one
# line can be said (OpenBLAS prints its own message and exits, C++ code throws std::bad_alloc), so it is
# refused at the start. A small training run peaks at ~430 MB of address space.
MIN_ADDRESS_SPACE = 512 * 2**20
# lenet5 runs BLAS on one thread where it computes (blas.py; the NumPy engine's workers are processes), yet
# OpenBLAS starts a thread per core when NumPy is imported, and where a process limit (ulimit -u, a container's
# pids limit) leaves no room for them it raises SIGINT: a run "interrupted" by nobody. Without that pool nothing
# can fail; set OPENBLAS_NUM_THREADS yourself to have one.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
MAX_BODY_MB = 100  # serve --max-body-mb: bodies are held in memory while they arrive


def _print_json(obj) -> None:
    from lenet5.jsonout import dumps

    sys.stdout.write(dumps(obj) + "\n")
    sys.stdout.flush()


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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


def _flag_overrides(args) -> dict:
    """The config flags that were given, as a {section: {key: value}} dict."""
    out: dict = {}
    for dest, dotted in FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            section, key = dotted.split(".")
            out.setdefault(section, {})[key] = value
    return out


def _config_flag(p: argparse.ArgumentParser, flag: str, dest: str, help: str, aliases: tuple = (), **kwargs) -> None:
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


def _add_data_options(p: argparse.ArgumentParser) -> None:
    _config_flag(
        p,
        "--data-dir",
        "data_dir",
        "folder with (or for) the dataset files; none: $LENET5_DATA or ~/.cache/lenet5",
        aliases=("--data_dir",),
    )
    _config_flag(
        p,
        "--dataset",
        "dataset",
        "mnist: verified by SHA-256; idx: any four IDX files under MNIST's names in --data-dir",
    )


MODEL_HELP = (
    "a checkpoint (.safetensors, .pth), a run folder, 'latest' (the newest run under train.out) or an "
    ".onnx file; default: the model bundled with lenet5 (see its MODEL_CARD.md)"
)


def _model_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", "--model_path", "--model-path", dest="model", default=None, metavar="MODEL", help=MODEL_HELP
    )


def _model_path(args) -> Path:
    """--model as typed -> the file to load, the same for every command (checkpoint.resolve_model; ``latest``
    is the newest complete run under the configured train.out, see _latest_run)."""
    from lenet5.checkpoint import resolve_model

    if args.model == "latest":
        from lenet5.config import resolve_config

        return _latest_run(Path(resolve_config().train.out))
    return resolve_model(args.model)


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


def _latest_run(runs: Path) -> Path:
    """--model latest: the model.safetensors of the newest run under ``runs`` (train.out), preferring full
    runs to smoke runs (--limit-batches) and finished runs to unfinished ones (still training, or stopped),
    so a quick check made after a real run does not take its place. Says on stderr which run it chose."""
    from lenet5.checkpoint import BEST_FILE
    from lenet5.errors import CheckpointError

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
    _err(f"--model latest: {model} ({kind}, {state}{others})")
    return model


def _engine_flag(p: argparse.ArgumentParser) -> None:
    from lenet5.engines import ENGINES

    p.add_argument(
        "--engine",
        choices=tuple(ENGINES),
        default="numpy",
        help="engine that runs the model (default numpy; an .onnx model runs in onnxruntime)",
    )


# ----------------------------------------------------------------------------------------------- data
def cmd_data(args) -> int:
    from lenet5.data.datasets import load_mnist

    data = load_mnist(args.data_dir, args.dataset or "mnist")
    files = data.files
    counts = {
        "train_images": int(len(data.train_images)),
        "train_labels": int(len(data.train_labels)),
        "test_images": int(len(data.test_images)),
        "test_labels": int(len(data.test_labels)),
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
    if args.preview_augment:
        from lenet5.config import apply_dict, resolve_config
        from lenet5.data.augment import write_preview

        cfg = apply_dict(resolve_config(), {"augment": {"enabled": True}}, source="--preview-augment")
        write_preview(data.train_images, data.train_labels, cfg.augment, Path(args.preview_augment))
        report["preview_augment"] = {"path": args.preview_augment, "augment": dict(vars(cfg.augment))}
    if args.json:
        _print_json(report)
        return 0
    print(f"{files.dataset} is ready in {files.folder}")
    print(f"  train: {counts['train_images']} images, {counts['train_labels']} labels")
    print(f"  test:  {counts['test_images']} images, {counts['test_labels']} labels")
    for name, info in report["files"].items():
        print(f"  {name}  sha256 {info['sha256']}")
        print(f"      {info['path']}  (from {info['source']})")
    if args.preview_augment:
        settings = ", ".join(f"{k} {v:g}" for k, v in report["preview_augment"]["augment"].items() if k != "enabled")
        print(f"augmentation preview ({settings}) written to {args.preview_augment}")
    return 0


# ---------------------------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    import time

    from lenet5.config import resolve_config
    from lenet5.training.callbacks import LAST_FILE
    from lenet5.training.run import RunInterrupted, resume_from, train_run

    started = time.perf_counter()
    if args.resume:
        resume, cfg = resume_from(args.resume, _flag_overrides(args), args.set or [], args.config), None
    else:
        resume, cfg = None, resolve_config(args.config, _flag_overrides(args), args.set or [])
    try:
        run_dir, result = train_run(cfg, resume, log=_err)
    except RunInterrupted as stop:
        if stop.saved:
            _err(
                f"interrupted at epoch {stop.epoch}, batch {stop.batch}; saved {stop.run_dir / LAST_FILE}. "
                f"Resume with: lenet5 train --resume {stop.run_dir}"
            )
        else:
            _err(
                f"stopped in the middle of a step at epoch {stop.epoch}; the checkpoint of the last completed epoch "
                f"(if any) is kept in {stop.run_dir}. Resume with: lenet5 train --resume {stop.run_dir}"
            )
        return EXIT_INTERRUPTED
    if result is None:  # a torchrun rank that does not write
        return 0
    total = time.perf_counter() - started
    m = result.metrics
    before = _seconds_trained_before(resume)
    if args.json:
        _print_json(
            {
                **{k: v for k, v in m.items() if k not in ("per_class", "confusion_matrix")},
                "run_dir": str(run_dir),
                "total_seconds": round(total, 3),
            }
        )
    else:
        print(
            f"test accuracy {100 * m['test_accuracy']:.2f}%  test loss {m['test_loss']:.4f}  "
            f"(model from epoch {m['model_epoch']} of {m['epochs']})"
        )
        if before is None:
            print(f"trained in {m['train_seconds']:.1f}s (this command took {total:.1f}s); run folder: {run_dir}")
        else:  # train_seconds counts every session of the run; this command only ran the last one
            print(
                f"trained in {m['train_seconds']:.1f}s in all: {before:.1f}s before this resume and "
                f"{max(0.0, m['train_seconds'] - before):.1f}s now (this command took {total:.1f}s); "
                f"run folder: {run_dir}"
            )
        print(
            f"next: lenet5 evaluate --model {run_dir}\n      lenet5 predict --model {run_dir} your-digit.png\n"
            f"      lenet5 serve --model {run_dir}   (then open http://127.0.0.1:8000/)"
        )
    return 0


def _seconds_trained_before(resume) -> float | None:
    """Seconds of training a resumed run had done before this command (None for a new run)."""
    if resume is None:
        return None
    last = getattr(resume, "last", None)
    state = (last.meta.get("trainer_state") if last is not None else None) or {}
    seconds = state.get("seconds", 0.0) if isinstance(state, dict) else 0.0
    return float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else 0.0


# ------------------------------------------------------------------------------------------- evaluate
def cmd_evaluate(args) -> int:
    from lenet5.checkpoint import describe_model
    from lenet5.data.datasets import load_mnist
    from lenet5.metrics import evaluate_logits, per_class_scores
    from lenet5.predict import Predictor

    path = _model_path(args)
    predictor = Predictor.from_checkpoint(path, engine=args.engine, threads=0)
    runner = "onnxruntime" if predictor.path.suffix.lower() == ".onnx" else args.engine
    data = load_mnist(args.data_dir, args.dataset or "mnist")
    result = evaluate_logits(predictor.logits(data.test_images), data.test_labels)
    summary = result.summary()
    if args.out:
        from lenet5.reports import write_reports

        write_reports(Path(args.out), [], data.test_images, result.labels, result.probabilities, result.confusion)
    if args.json:
        _print_json(
            {
                "model": str(path),
                "engine": runner,
                "test_accuracy": result.accuracy,
                "test_loss": result.loss,
                "n": int(len(result.labels)),
                "per_class": summary["per_class"],
                "confusion_matrix": summary["confusion_matrix"],
            }
        )
        return 0
    print(
        f"{describe_model(path)} ({runner}): test accuracy {100 * result.accuracy:.2f}%  "
        f"test loss {result.loss:.4f}  on {len(result.labels)} images"
    )
    from lenet5.models import NUM_CLASSES

    scores = per_class_scores(result.confusion)
    print("class  precision  recall     f1  support")
    for c in range(NUM_CLASSES):
        print(
            f"{c:>5}  {scores['precision'][c]:9.4f}  {scores['recall'][c]:6.4f}  {scores['f1'][c]:5.4f}  "
            f"{int(scores['support'][c]):7d}"
        )
    print("confusion matrix (rows: true, columns: predicted)")
    print("      " + " ".join(f"{c:>5}" for c in range(NUM_CLASSES)))
    for c, row in enumerate(result.confusion):
        print(f"{c:>5} " + " ".join(f"{v:>5}" for v in row))
    if args.out:
        print(f"plots written to {args.out}")
    return 0


# -------------------------------------------------------------------------------------------- summary
def cmd_summary(args) -> int:
    from lenet5.checkpoint import describe_model, load_checkpoint
    from lenet5.models import summary_lines

    path = _model_path(args)
    if path.suffix.lower() == ".onnx":
        return _summary_onnx(path, args.json)
    ckpt = load_checkpoint(path)
    meta, metrics = ckpt.meta, ckpt.meta.get("metrics") or {}
    calibration = meta.get("calibration") or {}
    facts = {
        "model": ckpt.model,
        "file": str(path),
        "engine": meta.get("engine"),
        "epoch": meta.get("epoch"),
        "val_accuracy": metrics.get("val_accuracy"),
        "temperature": calibration.get("temperature"),
        "parameters": sum(int(v.size) for v in ckpt.weights.values()),
    }
    if args.json:
        _print_json(facts)
        return 0
    print("\n".join(summary_lines(ckpt.model)))
    print(
        f"{describe_model(path)}: trained by the {facts['engine']} engine, epoch {facts['epoch']}"
        + (f", validation accuracy {100 * facts['val_accuracy']:.2f}%" if facts["val_accuracy"] is not None else "")
        + (f", calibration temperature {facts['temperature']:.3f}" if facts["temperature"] else "")
    )
    return 0


def _summary_onnx(path: Path, as_json: bool) -> int:
    """summary of an exported .onnx: the layers of the LeNet-5 it holds (checked by loading it in onnxruntime)
    and its calibration; an .onnx file does not carry how the model was trained."""
    from math import prod

    from lenet5.models import MODELS, parameter_shapes, summary_lines

    try:
        from lenet5.export import OnnxModel
    except ImportError:
        raise Lenet5Error(f'{path}: reading an .onnx model needs onnxruntime: pip install -e ".[onnx]"') from None
    onnx_model = OnnxModel(path, threads=1)
    name = onnx_model.model_name if onnx_model.model_name in MODELS else None
    facts = {
        "model": name,
        "file": str(path),
        "format": "onnx",
        "engine": "onnxruntime",
        "epoch": None,
        "val_accuracy": None,
        "temperature": onnx_model.temperature,
        "parameters": sum(prod(shape) for shape in parameter_shapes(name).values()) if name else None,
    }
    if as_json:
        _print_json(facts)
        return 0
    if name:
        print("\n".join(summary_lines(name)))
    else:
        print(f"a LeNet-5 whose architecture the file does not name (metadata model: {onnx_model.model_name!r})")
    print(
        f"{path}: an ONNX export, run by onnxruntime"
        + (f", calibration temperature {onnx_model.temperature:.3f}" if onnx_model.temperature != 1.0 else "")
        + "; how it was trained is in the checkpoint it was exported from (lenet5 summary --model CHECKPOINT)"
    )
    return 0


# --------------------------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    from lenet5.checkpoint import BUNDLED, describe_model, load_checkpoint
    from lenet5.export import export_onnx

    path = _model_path(args)
    if path.suffix.lower() == ".onnx":
        raise Lenet5Error(
            f"{path} is already an ONNX model; export reads a checkpoint (.safetensors or .pth, or a "
            "run folder): pass the one it was exported from"
        )
    ckpt = load_checkpoint(path)
    default = Path(path.name).with_suffix(".onnx") if path == BUNDLED else path.with_suffix(".onnx")
    output = Path(args.output) if args.output else default
    if output.resolve() == path.resolve() or (output.exists() and output.samefile(path)):
        raise Lenet5Error(
            f"--output {output} is the checkpoint being exported; choose another file (for example "
            f"{path.with_suffix('.onnx').name})"
        )
    export_onnx(ckpt.weights, ckpt.model, output, calibration=ckpt.meta.get("calibration"))
    if args.json:
        _print_json({"model": str(path), "format": args.format, "output": str(output)})
    else:
        print(f"exported {describe_model(path)} ({ckpt.model} LeNet-5) to {output}")
    return 0


# ------------------------------------------------------------------------------------ predict, serve
def cmd_predict(args) -> int:
    from lenet5.models import NUM_CLASSES
    from lenet5.predict import Predictor

    if args.top_k < 1 or args.top_k > NUM_CLASSES:
        raise Lenet5Error(f"--top-k must be between 1 and {NUM_CLASSES}, got {args.top_k}")
    predictor = Predictor.from_checkpoint(_model_path(args), engine=args.engine)
    results = predictor.classify_files(args.images, top_k=args.top_k, save_prepared=args.save_prepared)
    failed = sum("error" in r for r in results)
    if args.json:
        _print_json(results)
    else:
        for r in results:
            print(_reading_line(r))
        if args.save_prepared and len(results) > failed:
            _err(f"prepared 28x28 images written to {args.save_prepared}")
    if failed:
        _err(f"{failed} of {len(results)} file(s) could not be classified")
    return 1 if failed else 0


def _reading_line(r: dict) -> str:
    """One result of `predict` for humans: the file, the digit or number, how sure, and why not."""
    if "error" in r:
        return f"error: {r['error']}"  # the message names the file
    doubt = (
        f"   NOT SURE: {r['reason']}"
        if r.get("unsure") and r.get("reason")
        else ("   NOT SURE" if r.get("unsure") else "")
    )
    if r.get("digit") is not None:
        others = ", ".join(f"{d} {p:.1%}" for d, p in r["top_k"])
        return f"{r['file']}: {r['digit']}  ({r['probability']:.1%})   top-{len(r['top_k'])}: {others}{doubt}"
    if r.get("number"):
        each = ", ".join(f"{d['digit']} {d['probability']:.1%}" for d in r["digits"])
        return f"{r['file']}: number {r['number']}  ({r['probability']:.1%})   digits: {each}{doubt}"
    return f"{r['file']}: no digit{doubt}"


def cmd_serve(args) -> int:
    try:
        import uvicorn

        from lenet5.serve.app import create_app, uvicorn_options
    except ImportError as exc:
        raise Lenet5Error(
            f'serve needs FastAPI and uvicorn ({exc.name} is missing): pip install -e ".[serve]"'
        ) from None
    import socket

    from lenet5.checkpoint import describe_model
    from lenet5.predict import Predictor

    for flag in ("body_timeout", "header_timeout", "idle_timeout"):
        if not getattr(args, flag) > 0:
            raise Lenet5Error(
                f"--{flag.replace('_', '-')} must be a positive number of seconds, got {getattr(args, flag)}"
            )
    if not 1 <= args.max_body_mb <= MAX_BODY_MB:
        raise Lenet5Error(f"--max-body-mb must be between 1 and {MAX_BODY_MB}, got {args.max_body_mb:g}")
    path = _model_path(args)
    predictor = Predictor.from_checkpoint(path, engine=args.engine)
    app = create_app(predictor, body_timeout=args.body_timeout, max_body_bytes=int(args.max_body_mb * 1_000_000))
    try:  # uvicorn only logs a failed bind and exits 1: check first for a one-line error
        socket.create_server((args.host, args.port)).close()
    except (OSError, OverflowError) as exc:  # port in use or out of range, no permission, unknown host
        raise Lenet5Error(f"cannot serve on {args.host}:{args.port}: {getattr(exc, 'strerror', None) or exc}") from None
    options = uvicorn_options(header_timeout=args.header_timeout, idle_timeout=args.idle_timeout)
    _err(f"serving the {predictor.model_name} LeNet-5 from {describe_model(path)} on http://{args.host}:{args.port}/")
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.log_level in ("info", "debug"),
        **options,
    )
    return 0


def _add_predict_serve_parsers(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="classify your own digit images (PNG, JPEG, BMP, GIF, TIFF, WebP, .npy)",
        description="Read the digits or the whole number in each image. An answer is marked NOT SURE when a "
        "digit's calibrated probability is below the model's reject threshold. The bundled model's "
        "thresholds were chosen on held-out photo-like scenes so that at most 1% of sure single "
        "digits and 2% of sure numbers were wrong there (MODEL_CARD.md); expect a little more on "
        "handwriting unlike any it has seen. A model you trained yourself marks NOT SURE below 80%.",
    )
    _model_flag(p)
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
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("serve", help="HTTP API (POST /predict) and a page to draw a digit on")
    _model_flag(p)
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
    p.set_defaults(func=cmd_serve)


# ----------------------------------------------------------------------------------------------- tune
def cmd_tune(args) -> int:
    from lenet5.data.datasets import load_mnist
    from lenet5.training.trainer import TrainingInterrupted
    from lenet5.tune import TuneSettings, display_url, run_study

    if args.trials < 1 or args.epochs < 1:
        raise Lenet5Error("--trials and --epochs must be at least 1")
    from lenet5.config import resolve_config

    base = resolve_config(args.config, _flag_overrides(args), args.set or [])
    settings = TuneSettings(
        storage=args.storage,
        study_name=args.study_name,
        trials=args.trials,
        timeout=args.timeout,
        epochs=args.epochs,
        train_size=args.train_size,
        heartbeat=args.heartbeat,
        sampler_seed=args.sampler_seed,
        out=args.out,
    )
    data = load_mnist(base.data.data_dir, base.data.dataset)
    try:
        summary = run_study(base, data, settings, log=_err)
    except (TrainingInterrupted, KeyboardInterrupt):
        _err(
            f"interrupted; the running trial is marked failed. Continue the study with the same command "
            f"(--storage {display_url(args.storage)} --study-name {args.study_name})"
        )
        return EXIT_INTERRUPTED
    if args.json:
        _print_json(summary)
        return 0
    counts = ", ".join(f"{n} {state}" for state, n in sorted(summary["trials"].items()))
    print(f"study {summary['study']} ({summary['storage']}): {counts}")
    best = summary["best"]
    if best is None:
        print("no trial has completed yet")
        return 0
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
    print(f"best trial {best['number']}: validation accuracy {100 * best['val_accuracy']:.2f}%  ({params})")
    print(f"its config: {summary['config']}  -> lenet5 train --config {summary['config']} --epochs 10")
    return 0


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
    _config_flag(p, "--engine", "engine", "which engine trains the trials")
    _config_flag(p, "--seed", "seed", "training seed of every trial", type=int)
    _config_flag(
        p,
        "--threads",
        "threads",
        "workers for the engine (numpy: processes, at most one per core; torch: threads), 0: its default",
        type=int,
    )
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="set any base config key (repeatable)")
    p.add_argument("--json", action="store_true", help="print the study summary as one JSON document")
    _add_data_options(p)
    p.set_defaults(func=cmd_tune)


# --------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lenet5", description="LeNet-5 on MNIST with a NumPy and a PyTorch engine.")
    parser.add_argument("--version", action="version", version=f"lenet5 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("data", help="fetch and verify MNIST into the cache, print what is there")
    _add_data_options(p)
    p.add_argument(
        "--preview-augment",
        "--preview_augment",
        dest="preview_augment",
        metavar="OUT.png",
        default=None,
        help="also write a grid of digits and random distortions of them (augment settings of ./config.yaml)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train a LeNet-5 and write a run folder (model, history, metrics, plots)")
    p.add_argument("--config", default=None, help="YAML file layered over the defaults and ./config.yaml")
    _config_flag(p, "--engine", "engine", "which engine trains")
    _config_flag(p, "--epochs", "epochs", "passes over the training split", type=int)
    _config_flag(p, "--batch-size", "batch_size", "images per step", aliases=("--batch_size",), type=int)
    _config_flag(p, "--lr", "lr", "peak learning rate", type=float)
    _config_flag(p, "--optimizer", "optimizer", "optimizer")
    _config_flag(p, "--seed", "seed", "seed of the weights, the shuffling and the split", type=int)
    _config_flag(p, "--out", "out", "parent folder of run folders")
    _config_flag(p, "--name", "name", "run folder name; none: <engine>-<model>-<date>-<time>")
    _config_flag(
        p,
        "--threads",
        "threads",
        "workers for the engine (numpy: processes, at most one per core; torch: threads), 0: its default",
        type=int,
    )
    _config_flag(p, "--device", "device", "where the torch engine computes")
    _config_flag(
        p,
        "--limit-batches",
        "limit_batches",
        "at most this many batches per epoch, 0: all (a quick smoke run)",
        type=int,
    )
    _config_flag(
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
    _add_data_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test loss/accuracy, per-class scores and confusion matrix of a model")
    _model_flag(p)
    _engine_flag(p)
    p.add_argument("--out", default=None, help="folder for confusion_matrix.png, predictions.png, misclassified.png")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    _add_data_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("summary", help="a model's layers, output shapes and parameter count, and how it was trained")
    _model_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("export", help="export a checkpoint to ONNX")
    _model_flag(p)
    p.add_argument("--format", choices=("onnx",), default="onnx", help="the export format (default onnx)")
    p.add_argument(
        "--output",
        default=None,
        help="output file (default: the checkpoint's name with .onnx; for the "
        "bundled model, that name in the current folder)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_export)

    _add_predict_serve_parsers(sub)
    _add_tune_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if argv and not argv[0].startswith("-") and argv[0] not in commands:
        import difflib

        close = difflib.get_close_matches(argv[0], list(commands), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; commands are: {', '.join(commands)}"
        _err(f"error: unknown command '{argv[0]}'{hint}")
        return EXIT_USER_ERROR
    args = parser.parse_args(argv)
    try:
        _check_address_space()
        return int(args.func(args) or 0)
    except Lenet5Error as exc:
        _err(f"error: {exc}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except MemoryError as exc:  # NumPy's, Python's, and C++'s std::bad_alloc as Python sees it
        _err(f"error: out of memory ({first_line(exc)}){_address_space_note()}")
        return EXIT_USER_ERROR
    except OSError as exc:
        message = _os_error_line(exc)
        if message is None:
            raise
        _err(f"error: {message}")
        return EXIT_USER_ERROR


MACHINE_LIMITS = {  # errno -> what limit it is and how to raise it
    errno.EMFILE: "this process may open only {nofile} files (ulimit -n); raise the limit, e.g. ulimit -n 1024",
    errno.ENFILE: "the system has no file descriptors left; close programs or raise fs.file-max",
    errno.ENOMEM: "out of memory{note}",
    errno.EAGAIN: "the system refused a new process or thread (ulimit -u, or a container's pids limit); raise it",
}


def _os_error_line(exc: OSError) -> str | None:
    """One line for an OSError of the machine or of a file the user named (a full or read-only disk, no
    permission, a name too long, a read error, a limit reached); None for anything else (a bug: traceback)."""
    if exc.errno in WRITE_ERRNOS:
        verb = "cannot write " if exc.errno not in (errno.EACCES, errno.EPERM) else ""  # those may be reads
        return f"{verb}{exc.filename or 'a file'}: {exc.strerror}"
    if exc.errno in MACHINE_LIMITS:
        limit = MACHINE_LIMITS[exc.errno].format(nofile=_limit("RLIMIT_NOFILE"), note=_address_space_note())
        return f"{exc.strerror or os.strerror(exc.errno)}: {limit}"
    if exc.filename is not None and exc.errno is not None:  # EIO, ENAMETOOLONG, ELOOP, ENOTDIR, ...
        name = os.fsdecode(exc.filename) if isinstance(exc.filename, bytes) else str(exc.filename)
        return f"{name}: {exc.strerror or os.strerror(exc.errno)}"
    return None


def _limit(name: str):
    """The soft resource limit ``name`` (resource.RLIMIT_...), or None where there is none or no way to ask."""
    try:
        import resource

        soft, _ = resource.getrlimit(getattr(resource, name))
        return None if soft == resource.RLIM_INFINITY else soft
    except (ImportError, AttributeError, OSError, ValueError):
        return None


def _address_space_note() -> str:
    limit = _limit("RLIMIT_AS")
    if limit is None:
        return "; free some memory or run with less (--threads 1, a smaller --batch-size)"
    return f"; this process may use {limit / 2**20:.0f} MB of address space (ulimit -v, prlimit --as): raise the limit"


def _check_address_space() -> None:
    limit = _limit("RLIMIT_AS")
    if limit is not None and limit < MIN_ADDRESS_SPACE:
        raise Lenet5Error(
            f"this process may use {limit / 2**20:.0f} MB of address space (ulimit -v, prlimit --as); "
            f"lenet5 needs at least {MIN_ADDRESS_SPACE // 2**20} MB: raise the limit"
        )
