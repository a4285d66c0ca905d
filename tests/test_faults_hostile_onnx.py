"""Hostile .onnx files: graphs that load in onnxruntime but are no LeNet-5 (a 1-D output, a double input,
5 classes, two inputs, odd or dynamic image shapes, a graph that gives other than it declares). Each is refused
when loading with one CheckpointError line, by OnnxModel and by `lenet5 evaluate` / `lenet5 predict`: no
traceback, no answer over 5 classes. The files are built here with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import lenet5

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lenet5.errors import CheckpointError  # noqa: E402
from lenet5.export import build_onnx_model  # noqa: E402
from lenet5.inference import OnnxModel  # noqa: E402

F, D = TensorProto.FLOAT, TensorProto.DOUBLE
IMAGE = ["batch", 1, 28, 28]


def graph_file(path: Path, inputs, outputs, nodes, inits=(), opset: int = 17) -> Path:
    """Write a model of these value infos, nodes and initializers (numpy arrays by name)."""
    graph = helper.make_graph(
        list(nodes),
        "hostile",
        list(inputs),
        list(outputs),
        initializer=[numpy_helper.from_array(v, k) for k, v in dict(inits).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="test")
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def linear(classes: int, src: str = "image", in_features: int = 784, out: str = "logits"):
    """src -> Flatten -> Gemm to ``classes`` outputs."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Flatten", [src], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w", "b"], [out], transB=1),
    ]
    inits = {"w": rng.normal(0, 0.01, (classes, in_features)).astype(np.float32), "b": np.zeros(classes, np.float32)}
    return nodes, inits


def one_d_output(path):
    nodes, inits = linear(10, out="l2")
    nodes.append(helper.make_node("ReduceMax", ["l2", "axes"], ["logits"], keepdims=0))
    inits["axes"] = np.array([1], np.int64)
    return graph_file(
        path,
        [helper.make_tensor_value_info("image", F, IMAGE)],
        [helper.make_tensor_value_info("logits", F, ["batch"])],
        nodes,
        inits,
        opset=18,
    )


def double_input(path):
    nodes, inits = linear(10, src="as_float")
    nodes.insert(0, helper.make_node("Cast", ["image"], ["as_float"], to=F))
    return graph_file(
        path,
        [helper.make_tensor_value_info("image", D, IMAGE)],
        [helper.make_tensor_value_info("logits", F, ["batch", 10])],
        nodes,
        inits,
    )


def five_classes(path):
    nodes, inits = linear(5)
    return graph_file(
        path,
        [helper.make_tensor_value_info("image", F, IMAGE)],
        [helper.make_tensor_value_info("logits", F, ["batch", 5])],
        nodes,
        inits,
    )


def two_inputs(path):
    nodes, inits = linear(10, src="sum")
    nodes.insert(0, helper.make_node("Add", ["image", "other"], ["sum"]))
    return graph_file(
        path,
        [helper.make_tensor_value_info("image", F, IMAGE), helper.make_tensor_value_info("other", F, IMAGE)],
        [helper.make_tensor_value_info("logits", F, ["batch", 10])],
        nodes,
        inits,
    )


def two_outputs(path):
    nodes, inits = linear(10)
    nodes.append(helper.make_node("Identity", ["logits"], ["again"]))
    return graph_file(
        path,
        [helper.make_tensor_value_info("image", F, IMAGE)],
        [
            helper.make_tensor_value_info("logits", F, ["batch", 10]),
            helper.make_tensor_value_info("again", F, ["batch", 10]),
        ],
        nodes,
        inits,
    )


def shaped_input(shape, in_features=784):
    def make(path):
        nodes, inits = linear(10, in_features=in_features)
        return graph_file(
            path,
            [helper.make_tensor_value_info("image", F, shape)],
            [helper.make_tensor_value_info("logits", F, ["batch", 10])],
            nodes,
            inits,
        )

    return make


def lying_output(path):
    """Declares (batch, 10) but gives (batch, 5): onnxruntime sees through it (batch, ?)."""
    nodes, inits = linear(5)
    return graph_file(
        path,
        [helper.make_tensor_value_info("image", F, IMAGE)],
        [helper.make_tensor_value_info("logits", F, ["batch", 10])],
        nodes,
        inits,
    )


def double_output(path):
    nodes, inits = linear(10, out="l")
    nodes.append(helper.make_node("Cast", ["l"], ["logits"], to=D))
    return graph_file(
        path,
        [helper.make_tensor_value_info("image", F, IMAGE)],
        [helper.make_tensor_value_info("logits", D, ["batch", 10])],
        nodes,
        inits,
    )


HOSTILE = {
    "one_d_output": (one_d_output, "output 'logits' is tensor(float) of shape (batch)"),
    "double_input": (double_input, "input 'image' is tensor(double)"),
    "five_classes": (five_classes, "of shape (batch, 5)"),
    "two_inputs": (two_inputs, "2 input(s) and 1 output(s)"),
    "two_outputs": (two_outputs, "1 input(s) and 2 output(s)"),
    "all_dims_dynamic": (shaped_input(["n", "c", "h", "w"]), "of shape (n, c, h, w)"),
    "no_channel_axis": (shaped_input(["batch", 28, 28]), "of shape (batch, 28, 28)"),
    "32x32_input": (shaped_input(["batch", 1, 32, 32], 1024), "of shape (batch, 1, 32, 32)"),
    "flat_input": (shaped_input(["batch", 784]), "of shape (batch, 784)"),
    "three_channels": (shaped_input(["batch", 3, 28, 28], 2352), "of shape (batch, 3, 28, 28)"),
    "zero_batch": (shaped_input([0, 1, 28, 28]), "batch dimension is 0"),
    "lying_output": (lying_output, "output 'logits' is tensor(float) of shape (batch, ?)"),
    "double_output": (double_output, "output 'logits' is tensor(double)"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_graph_that_is_no_lenet5_is_refused_when_loading_with_one_line(case, tmp_path):
    make, words = HOSTILE[case]
    path = make(tmp_path / f"{case}.onnx")
    with pytest.raises(CheckpointError) as err:
        OnnxModel(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert words in message, message


def test_a_fixed_batch_size_is_fed_in_whole_batches(tmp_path, rng):
    """A graph exported for batches of exactly 4 reads any number of images (the last batch padded)."""
    from lenet5.models import parameter_shapes

    state = {k: rng.normal(0, 0.1, s).astype(np.float32) for k, s in parameter_shapes("modern").items()}
    model = build_onnx_model(state, "modern")
    for value_info in (model.graph.input[0], model.graph.output[0]):
        value_info.type.tensor_type.shape.dim[0].dim_value = 4
    (tmp_path / "fixed.onnx").write_bytes(model.SerializeToString())
    dynamic = tmp_path / "dynamic.onnx"
    dynamic.write_bytes(build_onnx_model(state, "modern").SerializeToString())
    x = rng.normal(0, 1, (10, 1, 28, 28)).astype(np.float32)
    fixed = OnnxModel(tmp_path / "fixed.onnx")
    assert fixed.batch == 4 and OnnxModel(dynamic).batch is None
    np.testing.assert_allclose(fixed.logits(x), OnnxModel(dynamic).logits(x), rtol=1e-5, atol=1e-5)
    assert fixed.logits(x[:0]).shape == (0, 10)


@pytest.mark.parametrize("case", ["five_classes", "one_d_output", "double_input", "two_inputs", "all_dims_dynamic"])
def test_evaluate_and_predict_say_one_line_for_a_hostile_graph(case, tmp_path):
    from PIL import Image, ImageDraw

    path = HOSTILE[case][0](tmp_path / f"{case}.onnx")
    page = Image.new("L", (80, 80), 255)
    ImageDraw.Draw(page).line([(40, 10), (40, 70)], fill=0, width=6)
    page.save(tmp_path / "one.png")
    for args in (["evaluate", "--model", str(path)], ["predict", "--model", str(path), str(tmp_path / "one.png")]):
        proc = lenet5(*args)
        assert proc.returncode != 0, (args, proc.stdout)
        assert "Traceback" not in proc.stderr, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "not a LeNet-5 ONNX model" in lines[0], (
            proc.stderr
        )
        assert proc.stdout.strip() == "", proc.stdout  # no reading over the wrong number of classes
