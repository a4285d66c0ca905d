"""`lenet5 export`: a checkpoint to ONNX."""

from __future__ import annotations

from pathlib import Path

from lenet5.commands.model_flag import model_path
from lenet5.commands.output import print_json
from lenet5.errors import Lenet5Error


def cmd_export(args) -> int:
    from lenet5.checkpoint import BUNDLED, describe_model, load_checkpoint
    from lenet5.export import export_onnx

    path = model_path(args)
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
        print_json({"model": str(path), "format": args.format, "output": str(output)})
    else:
        print(f"exported {describe_model(path)} ({ckpt.model} LeNet-5) to {output}")
    return 0
