"""`lenet5 evaluate`: a model's test loss and accuracy, per-class scores and confusion matrix."""

from __future__ import annotations

from pathlib import Path

from lenet5.commands.model_flag import model_path
from lenet5.commands.output import print_json


def cmd_evaluate(args) -> int:
    from lenet5.checkpoint import describe_model
    from lenet5.data.datasets import load_mnist
    from lenet5.metrics import evaluate_logits, per_class_scores
    from lenet5.predict import Predictor

    path = model_path(args)
    predictor = Predictor.from_checkpoint(path, engine=args.engine, threads=0)
    runner = "onnxruntime" if predictor.path.suffix.lower() == ".onnx" else args.engine
    data = load_mnist(args.data_dir, args.dataset or "mnist")
    result = evaluate_logits(predictor.logits(data.test_images), data.test_labels)
    summary = result.summary()
    if args.out:
        from lenet5.reports import write_reports

        write_reports(Path(args.out), [], data.test_images, result.labels, result.probabilities, result.confusion)
    if args.json:
        print_json(
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
