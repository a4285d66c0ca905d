"""train.logger tensorboard: a real run and its resume, read back with TensorBoard's own reader; a missing
package is one line before training."""

from __future__ import annotations

import csv
import io
import json
import sys
import textwrap

import numpy as np
import pytest
import yaml

from conftest import write_mnist_subset
from lenet5.cli import main
from lenet5.config import Config, config_from_dict
from lenet5.training.schedules import Schedule

pytest.importorskip("tensorboard")

EPOCH_TAGS = {f"epoch/{k}" for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")}
STEP_TAGS = {"step/train_loss", "step/train_accuracy", "step/lr"}


def read_events(run_dir):
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(run_dir), size_guidance={ea.SCALARS: 0, ea.IMAGES: 0, ea.TENSORS: 0})
    acc.Reload()
    return acc


def append_orphans(event_file, step: int, value: float) -> None:
    """What a run killed after its last checkpoint leaves: points past it, at the end of its event file."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="step/train_loss", simple_value=value)])
    with open(event_file, "ab") as f:
        RecordWriter(f).write(event_pb2.Event(wall_time=1.0, step=step, summary=summary).SerializeToString())


@pytest.mark.slow
def test_a_run_and_its_resume_read_back_with_tensorboards_reader(mnist, tmp_path, monkeypatch, capsys):
    from PIL import Image
    from tensorboard.util import tensor_util

    data = write_mnist_subset(mnist, tmp_path / "data", 2000, 500)
    monkeypatch.chdir(tmp_path)
    common = ["--dataset", "idx", "--data-dir", str(data)]
    assert (
        main(
            [
                "train",
                *common,
                "--batch-size",
                "16",
                "--set",
                "data.val_size=500",
                "--seed",
                "3",
                "--epochs",
                "1",
                "--name",
                "run",
                "--logger",
                "tensorboard",
            ]
        )
        == 0
    )
    run = tmp_path / "runs" / "run"
    (first,) = run.glob("events.out.tfevents.*")
    append_orphans(first, 150, 123.0)  # steps 95..188 are epoch 2: trained (and logged) again by the resume
    assert main(["train", "--resume", str(run), "--epochs", "2", *common]) == 0
    capsys.readouterr()
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # the resume appended its own file

    acc = read_events(run)
    tags = acc.Tags()
    assert set(tags["scalars"]) == STEP_TAGS | EPOCH_TAGS | {"test/accuracy", "test/loss"}
    assert set(tags["images"]) == {"test/confusion_matrix", "test/predictions"}
    assert tags["tensors"] == ["config"]

    # every 50 steps of 2 x 94 (1,500 digits in batches of 16), steps continuing across the resume, orphans gone
    cfg = config_from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    assert cfg.train.logger == "tensorboard"
    for tag in STEP_TAGS:
        assert [e.step for e in acc.Scalars(tag)] == [50, 100, 150], tag
    losses = [e.value for e in acc.Scalars("step/train_loss")]
    assert all(0 < v < 3 for v in losses) and 123.0 not in losses
    assert all(0 <= e.value <= 1 for e in acc.Scalars("step/train_accuracy"))
    lrs = [e.value for e in acc.Scalars("step/lr")]  # the rate step 50 trained with (the 1-epoch run's schedule)
    assert lrs[0] == np.float32(Schedule(cfg.schedule, cfg.optimizer.lr, 94, 94).lr(49))
    assert all(0 < v <= cfg.optimizer.lr for v in lrs)

    # the epoch scalars are history.csv's numbers, at the epoch's number
    rows = list(csv.DictReader((run / "history.csv").open()))
    for tag in EPOCH_TAGS:
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2], tag
        assert [e.value for e in events] == [np.float32(r[tag.split("/")[1]]) for r in rows], tag

    # the test scores of the 1-epoch run and of the run extended to 2 epochs; the pictures of the last one
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e.step for e in acc.Scalars("test/accuracy")] == [1, 2]
    assert acc.Scalars("test/accuracy")[-1].value == np.float32(metrics["test_accuracy"])
    assert acc.Scalars("test/loss")[-1].value == np.float32(metrics["test_loss"])
    for tag in ("test/confusion_matrix", "test/predictions"):
        image = acc.Images(tag)[-1]
        assert image.step == 2
        with Image.open(io.BytesIO(image.encoded_image_string)) as im:
            assert im.format == "PNG" and im.size == (image.width, image.height) and min(im.size) > 300

    # the config as text (a Markdown code block) at the start of each session
    texts = acc.Tensors("config")
    assert [t.step for t in texts] == [0, 94]
    assert acc.SummaryMetadata("config").plugin_data.plugin_name == "text"
    config_text = textwrap.dedent(tensor_util.make_ndarray(texts[-1].tensor_proto).item().decode("utf-8"))
    assert config_from_dict(yaml.safe_load(config_text)) == cfg


def test_missing_tensorboard_is_one_line_before_training(tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m.startswith("tensorboard.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard...` raises ImportError now
    monkeypatch.chdir(tmp_path)
    code = main(
        ["train", "--dataset", "idx", "--data-dir", str(tmp_path / "no-data"), "--name", "x", "--logger", "tensorboard"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [
        'error: train.logger tensorboard needs the tensorboard package: pip install -e ".[tensorboard]"'
    ]
    assert not (tmp_path / "runs").exists()  # before the data is read and before a run folder is claimed


def test_logger_is_a_validated_config_key(tmp_path, monkeypatch, capsys):
    assert Config().train.logger == "none"  # off by default: see the README for its measured cost
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--set", "train.logger=wandb"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "error: config key 'train.logger' must be one of none, tensorboard; got 'wandb'"
    )
