"""`lenet5 summary`: a model's layers, output shapes and parameter count (trained parameters; BatchNorm's
running statistics are buffers, not counted), and how it was trained."""

from __future__ import annotations

from pathlib import Path

from lenet5.commands.model_flag import model_path
from lenet5.commands.output import print_json


def cmd_summary(args) -> int:
    from lenet5.checkpoint import describe_model, load_checkpoint
    from lenet5.models import parameter_shapes, summary_lines

    path = model_path(args)
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
        "parameters": sum(int(ckpt.weights[k].size) for k in parameter_shapes(ckpt.model)),  # buffers are not
    }
    if args.json:
        print_json(facts)
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

    from lenet5.inference import OnnxModel
    from lenet5.models import MODELS, parameter_shapes, summary_lines

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
        print_json(facts)
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
