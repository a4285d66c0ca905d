"""`lenet5 evaluate`: a model's test loss and accuracy, per-class scores and confusion matrix; for several models,
the same for their committee (the mean of their calibrated probabilities) and each member's accuracy."""

from __future__ import annotations

from pathlib import Path

from lenet5.commands.model_flag import model_paths
from lenet5.commands.output import print_json


def cmd_evaluate(args) -> int:
    import numpy as np

    from lenet5.data.datasets import load_mnist
    from lenet5.metrics import evaluate_logits

    paths = model_paths(args)
    predictors = _load_members(paths, args.engine)  # every member loads before any is run: a bad one fails fast
    data = load_mnist(args.data_dir, args.dataset or "mnist")
    if len(predictors) == 1:  # one model: its own logits, as always
        result = evaluate_logits(predictors[0].logits(data.test_images), data.test_labels)
        predictors[0].close()  # its worker processes: not needed for the reports
        members = []
    else:
        members, committee_probs = _run_members(predictors, paths, args.engine, data)
        # the log of the mean probabilities: logits whose softmax is the committee's probabilities
        result = evaluate_logits(np.log(np.maximum(committee_probs, np.finfo(np.float64).tiny)), data.test_labels)
    if args.out:
        from lenet5.reports import write_reports

        write_reports(Path(args.out), [], data.test_images, result.labels, result.probabilities, result.confusion)
    if args.json:
        print_json(_json_document(paths, predictors, args.engine, result, members))
        return 0
    _print_text(paths, predictors, args.engine, result, members)
    if args.out:
        print(f"plots written to {args.out}")
    return 0


def _runner(predictor, engine: str) -> str:
    """What runs a model: onnxruntime for an .onnx file, else the engine asked for."""
    return "onnxruntime" if predictor.path.suffix.lower() == ".onnx" else engine


def _load_members(paths: list[Path], engine: str) -> list:
    """A Predictor for each model, engine workers sharing the 10,000 test images; for several models, a member
    that cannot be loaded is one CheckpointError naming it and its file (predict.Committee.from_checkpoints)."""
    from lenet5.predict import Committee, Predictor

    if len(paths) == 1:
        return [Predictor.from_checkpoint(paths[0], engine=engine, threads=0)]
    return Committee.from_checkpoints(paths, engine=engine, threads=0).members


def _run_members(predictors: list, paths: list[Path], engine: str, data) -> tuple[list[dict], object]:
    """Each member's test scores (from its own logits, as for one model) and the committee's probabilities:
    the mean of the members' calibrated probabilities (each with its own normalization and temperature)."""
    import numpy as np

    from lenet5.metrics import evaluate_logits, softmax
    from lenet5.models import NUM_CLASSES

    members, total = [], np.zeros((len(data.test_labels), NUM_CLASSES), np.float64)
    for path, predictor in zip(paths, predictors):
        logits = predictor.logits(data.test_images)
        predictor.close()
        own = evaluate_logits(logits, data.test_labels)
        total += softmax(logits / predictor.temperature)
        members.append(
            {
                "model": str(path),
                "file": path.name,
                "engine": _runner(predictor, engine),
                "test_accuracy": own.accuracy,
                "test_error": 1.0 - own.accuracy,
                "test_loss": own.loss,
            }
        )
    return members, total / len(predictors)


def _json_document(paths, predictors, engine: str, result, members: list[dict]) -> dict:
    """One model: its scores. A committee: its scores at the top level (test_accuracy ... confusion_matrix, as
    for one model), the models, each member's scores, and ``committee`` with its accuracy and error."""
    summary = result.summary()
    scores = {
        "test_accuracy": result.accuracy,
        "test_loss": result.loss,
        "n": int(len(result.labels)),
        "per_class": summary["per_class"],
        "confusion_matrix": summary["confusion_matrix"],
    }
    if not members:
        return {"model": str(paths[0]), "engine": _runner(predictors[0], engine), **scores}
    committee = {
        "size": len(members),
        "test_accuracy": result.accuracy,
        "test_error": 1.0 - result.accuracy,
        "test_loss": result.loss,
    }
    return {"models": [str(p) for p in paths], "engine": engine, "members": members, "committee": committee, **scores}


def _print_text(paths, predictors, engine: str, result, members: list[dict]) -> None:
    from lenet5.checkpoint import describe_model
    from lenet5.metrics import per_class_scores
    from lenet5.models import NUM_CLASSES

    n = len(result.labels)
    if not members:
        print(
            f"{describe_model(paths[0])} ({_runner(predictors[0], engine)}): test accuracy "
            f"{100 * result.accuracy:.2f}%  test loss {result.loss:.4f}  on {n} images"
        )
    else:
        width = max(len(describe_model(p)) for p in paths)
        for path, member in zip(paths, members):
            print(
                f"{describe_model(path):<{width}} ({member['engine']}): test accuracy "
                f"{100 * member['test_accuracy']:.2f}%  error {100 * member['test_error']:.2f}%  "
                f"test loss {member['test_loss']:.4f}"
            )
        print(
            f"committee of {len(members)} models (mean probabilities): test accuracy {100 * result.accuracy:.2f}%  "
            f"error {100 * (1 - result.accuracy):.2f}%  test loss {result.loss:.4f}  on {n} images"
        )
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
