"""ONNX export of a model's state dict: the graph written from the weights (running it: inference.OnnxModel).

The graph is written with onnx.helper straight from the weights, so a NumPy checkpoint exports without
PyTorch installed. Every model of lenet5.models exports: BatchNorm as BatchNormalization in inference mode
(the running statistics), a residual block as its branches joined by Add then Relu, global average pooling
as AveragePool over the whole map. Input ``image``: float32 (batch, 1, 28, 28), normalized like training
((x/255 - 0.1307) / 0.3081); output ``logits``: (batch, 10). ``batch`` is a dynamic dimension.
The logits are the network's own; the checkpoint's calibration temperature travels in the model's metadata
(``temperature``, and ``energy_floor``, see calibration.py): calibrated probabilities are
softmax(logits / temperature), as ``lenet5 predict`` computes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lenet5 import MNIST_MEAN, MNIST_STD, models
from lenet5.atomic import atomic_write_bytes
from lenet5.errors import Lenet5Error

ONNX_HINT = 'ONNX export needs onnx and onnxruntime: pip install -e ".[onnx]"'
REJECT_KEYS = ("digit", "number", "digit_margin", "number_margin")  # calibration.reject, carried as reject_<key>


def _import_onnx():
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise Lenet5Error(ONNX_HINT) from None
    return onnx, TensorProto, helper, numpy_helper


def _check_state(state: dict[str, np.ndarray], model_name: str) -> dict[str, np.ndarray]:
    """The state dict's arrays as float32, checked against the model's names and shapes; BatchNorm's
    num_batches_tracked (a training count, no part of the graph) is accepted and left out."""
    shapes = models.state_shapes(model_name)
    for key in state:
        if key not in shapes:
            raise ValueError(f"unexpected key {key!r} for the {model_name} model; keys are: {', '.join(shapes)}")
    out = {}
    for key, shape in shapes.items():
        if key not in state:
            raise ValueError(f"missing key {key!r} for the {model_name} model")
        if models.is_count(key):
            continue
        arr = np.asarray(state[key], dtype=np.float32)
        if arr.shape != tuple(shape):
            raise ValueError(f"{key!r} has shape {arr.shape}, expected {tuple(shape)}")
        out[key] = arr
    return out


class _Graph:
    """Collects nodes and initializers; each method appends one op and returns its output name."""

    def __init__(self, helper, numpy_helper) -> None:
        self.h, self.nh = helper, numpy_helper
        self.nodes, self.inits, self._n, self._tanh_consts = [], [], 0, False

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(self.nh.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        self._n += 1
        output = output or f"{op_type.lower()}_{self._n}"
        self.nodes.append(self.h.make_node(op_type, inputs, [output], name=f"{op_type}_{self._n}", **attrs))
        return output

    def conv(
        self,
        x: str,
        w: np.ndarray,
        b: np.ndarray | None,
        name: str,
        pad: int = 0,
        output: str | None = None,
        stride: int = 1,
    ) -> str:
        ins = [x, self.const(f"{name}.weight", w)] + ([] if b is None else [self.const(f"{name}.bias", b)])
        return self.op("Conv", ins, output, kernel_shape=list(w.shape[2:]), pads=[pad] * 4, strides=[stride] * 2)

    def batchnorm(self, x: str, w: dict[str, np.ndarray], name: str, output: str | None = None) -> str:
        """BatchNormalization in inference mode: (x - running_mean) / sqrt(running_var + eps) * weight + bias."""
        kinds = ("weight", "bias", "running_mean", "running_var")
        ins = [x] + [self.const(f"{name}.{kind}", w[f"{name}.{kind}"]) for kind in kinds]
        return self.op("BatchNormalization", ins, output, epsilon=models.BN_EPS, momentum=1 - models.BN_MOMENTUM)

    def linear(self, x: str, w: np.ndarray, b: np.ndarray, name: str, output: str | None = None) -> str:
        ins = [x, self.const(f"{name}.weight", w), self.const(f"{name}.bias", b)]
        return self.op("Gemm", ins, output, transB=1)

    def scaled_tanh(self, x: str) -> str:
        """1.7159 * tanh(2x/3) as Mul -> Tanh -> Mul."""
        if not self._tanh_consts:
            self._tanh_consts = True
            self.const("tanh_in_scale", np.array(models.SCALED_TANH_S))
            self.const("tanh_out_scale", np.array(models.SCALED_TANH_A))
        return self.op("Mul", [self.op("Tanh", [self.op("Mul", [x, "tanh_in_scale"])]), "tanh_out_scale"])

    def layers(
        self, x: str, specs: tuple, w: dict[str, np.ndarray], prefix: str = "", output: str | None = None
    ) -> str:
        """The nodes of a tuple of layer specs whose parameters are named ``<prefix><layer>.<kind>``; ``output``
        names the last layer's result."""
        for k, spec in enumerate(specs):
            x = self.layer(x, spec, w, output if k == len(specs) - 1 else None, prefix)
        return x

    def layer(self, x: str, spec, w: dict[str, np.ndarray], output: str | None, prefix: str = "") -> str:
        """The node(s) of one layer of a models.Architecture; ``output`` names the last layer's result."""
        if isinstance(spec, models.Conv):
            name = prefix + spec.name
            weight = w[f"{name}.weight"]
            if spec.table is not None:  # bake the connection table into the weights
                weight = weight * np.asarray(spec.table, dtype=np.float32)[:, :, None, None]
            bias = w[f"{name}.bias"] if spec.bias else None
            return self.conv(x, weight, bias, name, spec.padding, output, spec.stride)
        if isinstance(spec, models.BatchNorm):
            return self.batchnorm(x, w, prefix + spec.name, output)
        if isinstance(spec, models.Residual):
            block = f"{prefix}{spec.name}."
            body = self.layers(x, spec.body, w, block)
            shortcut = x if spec.shortcut is None else self.layers(x, spec.shortcut, w, f"{block}{models.SHORTCUT}.")
            return self.op("Relu", [self.op("Add", [body, shortcut])], output)
        if isinstance(spec, models.Dense):
            name = prefix + spec.name
            return self.linear(x, w[f"{name}.weight"], w[f"{name}.bias"], name, output)
        if isinstance(spec, models.Pool):
            pool = "MaxPool" if spec.kind == "max" else "AveragePool"
            return self.op(pool, [x], output, kernel_shape=[spec.size] * 2, strides=[spec.size] * 2)
        if isinstance(spec, models.Act):
            return self.op("Relu", [x], output) if spec.kind == "relu" else self.scaled_tanh(x)
        return self.op("Flatten", [x], output, axis=1)


def build_onnx_model(state: dict[str, np.ndarray], model_name: str, opset: int = 17, calibration: dict | None = None):
    """The checked onnx.ModelProto of a model of lenet5.models with these weights (as float32), in inference
    mode."""
    onnx, TensorProto, helper, numpy_helper = _import_onnx()
    w = _check_state(state, model_name)
    g = _Graph(helper, numpy_helper)
    g.layers("image", models.architecture(model_name).layers, w, output="logits")
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", *models.INPUT_SHAPE])
    image.doc_string = f"grayscale digits, white on black, normalized as (x/255 - {MNIST_MEAN}) / {MNIST_STD}"
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", models.NUM_CLASSES])
    graph = helper.make_graph(g.nodes, f"lenet5_{model_name}", [image], [logits], initializer=g.inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="lenet5")
    try:  # the oldest IR version that carries this opset, so older runtimes load the file too
        model.ir_version = helper.find_min_ir_version_for(opsets)
    except (AttributeError, ValueError):
        pass
    helper.set_model_props(
        model,
        {
            "model": model_name,
            "normalize_mean": str(MNIST_MEAN),
            "normalize_std": str(MNIST_STD),
            **{
                k: repr(float(v))
                for k, v in (calibration or {}).items()
                if k in ("temperature", "energy_floor") and v is not None
            },
            **{
                f"reject_{k}": repr(float(v))
                for k, v in ((calibration or {}).get("reject") or {}).items()
                if k in REJECT_KEYS
            },
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(
    state: dict[str, np.ndarray], model_name: str, output: str | Path, opset: int = 17, calibration: dict | None = None
) -> Path:
    """Write the ONNX model for these weights to output atomically (temp file + rename); returns the path."""
    model = build_onnx_model(state, model_name, opset, calibration)
    output = Path(output)
    atomic_write_bytes(output, model.SerializeToString())
    return output
