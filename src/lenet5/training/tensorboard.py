"""TensorBoard logging of a run (``train.logger: tensorboard`` or ``lenet5 train --logger tensorboard``).

The event files go into the run folder itself, so ``tensorboard --logdir runs`` shows every run under its
folder's name. What is logged:

- ``config`` (text): the run's config.yaml, at the start (again at the step a resumed run continues from);
- ``step/train_loss``, ``step/train_accuracy`` (means over the last ``every`` steps), ``step/lr``: every
  ``every`` steps, at the global step;
- ``epoch/<history.csv column>`` (train_loss, train_accuracy, val_loss, val_accuracy, lr, seconds): after each
  epoch, at the epoch's number (Keras' convention), the very numbers of history.csv (as float32);
- ``test/accuracy``, ``test/loss`` and the images ``test/confusion_matrix``, ``test/predictions`` (the pictures
  of reports.py): at the end, at the number of epochs trained.

The writer: tensorboard's own EventFileWriter and protocol buffers, the pieces torch.utils.tensorboard is built on,
used directly. torch.utils.tensorboard needs torch, which the NumPy engine must not; tensorboard.summary.Writer
(the torch-free API) writes scalars only and calls itself experimental; tensorboardX would be a second package
to keep in step with the one that reads the files. The ``tensorboard`` package is the one needed to look at the
files anyway (extra ``tensorboard``).

Resume appends a new event file to the same folder; step numbers continue. Each session starts with a
SessionLog START at the step after the one it resumed from, so TensorBoard's reader drops what a killed run had
logged after its last checkpoint (those steps are trained and logged again).
"""

from __future__ import annotations

import atexit
import struct
import threading
import time
from pathlib import Path

from lenet5.config import dump_yaml
from lenet5.errors import Lenet5Error, first_line
from lenet5.training.callbacks import HISTORY_FIELDS, Callback

STEP_EVERY = 50  # steps between two step/ points: ~17 points per epoch of 55,000 digits at batch 64
HINT = 'train.logger tensorboard needs the tensorboard package: pip install -e ".[tensorboard]"'


def require_tensorboard():
    """The tensorboard modules this logger uses; a missing package is one Lenet5Error line."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorboard.plugins.text import metadata as text_metadata
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as exc:
        missing = exc.name or "tensorboard"  # the package, or one of its dependencies
        raise Lenet5Error(
            HINT if missing.split(".")[0] == "tensorboard" else f"{HINT} ({missing} is missing)"
        ) from None
    except Exception as exc:  # noqa: BLE001  (an installed but broken tensorboard or protobuf: still one line)
        raise Lenet5Error(f"{HINT} (it is installed but does not load: {first_line(exc)})") from None
    return _Modules(event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2, text_metadata, EventFileWriter)


class _Modules:
    def __init__(self, event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2, text_metadata, writer):
        self.event_pb2, self.summary_pb2, self.tensor_pb2 = event_pb2, summary_pb2, tensor_pb2
        self.tensor_shape_pb2, self.types_pb2, self.text_metadata = tensor_shape_pb2, types_pb2, text_metadata
        self.EventFileWriter = writer


class TensorBoardLogger(Callback):
    """Writes the run's TensorBoard events into ``run_dir`` (see the module's docstring for what)."""

    def __init__(self, run_dir: Path, every: int = STEP_EVERY):
        self.tb = require_tensorboard()
        self.run_dir, self.every = Path(run_dir), max(1, int(every))
        self.writer = None
        self._loss_sum, self._correct, self._seen = 0.0, 0, 0

    # ------------------------------------------------------------------------------------------ events
    def _event(self, step: int, **fields):
        self.writer.add_event(self.tb.event_pb2.Event(wall_time=time.time(), step=int(step), **fields))

    def _scalars(self, step: int, values: dict) -> None:
        Value = self.tb.summary_pb2.Summary.Value
        summary = self.tb.summary_pb2.Summary(
            value=[Value(tag=tag, simple_value=float(v)) for tag, v in values.items() if v is not None]
        )
        self._event(step, summary=summary)

    def _image(self, step: int, tag: str, png: bytes) -> None:
        width, height = struct.unpack(">II", png[16:24])  # the PNG's IHDR chunk
        s = self.tb.summary_pb2.Summary
        image = s.Image(height=height, width=width, colorspace=4, encoded_image_string=png)  # matplotlib: RGBA
        self._event(step, summary=s(value=[s.Value(tag=tag, image=image)]))

    def _text(self, step: int, tag: str, markdown: str) -> None:
        tb = self.tb
        tensor = tb.tensor_pb2.TensorProto(
            dtype=tb.types_pb2.DT_STRING,
            string_val=[markdown.encode("utf-8")],
            tensor_shape=tb.tensor_shape_pb2.TensorShapeProto(),
        )
        meta = tb.text_metadata.create_summary_metadata(display_name=tag, description="")
        s = tb.summary_pb2.Summary
        self._event(step, summary=s(value=[s.Value(tag=tag, metadata=meta, tensor=tensor)]))

    # --------------------------------------------------------------------------------------- callbacks
    def on_start(self, trainer):
        _quiet_writer_threads()
        self.writer = self.tb.EventFileWriter(str(self.run_dir), flush_secs=30)
        atexit.register(self._close_at_exit)  # a run stopped by an error still leaves its last points on disk
        self._loss_sum, self._correct, self._seen = 0.0, 0, 0
        # purge point: a resumed run drops the orphans of a killed one (steps past its checkpoint); a run started
        # again from step 0 drops everything its first try logged
        SessionLog = self.tb.event_pb2.SessionLog
        self._event(trainer.step + 1 if trainer.step else 0, session_log=SessionLog(status=SessionLog.START))
        config = "\n".join("    " + line for line in dump_yaml(trainer.cfg).splitlines())  # a Markdown code block
        self._text(trainer.step, "config", config)
        self.writer.flush()

    def on_step(self, trainer, loss, correct, batch_size, lr):
        self._loss_sum += loss * batch_size
        self._correct += int(correct)
        self._seen += batch_size
        if trainer.step % self.every == 0:
            self._scalars(
                trainer.step,
                {
                    "step/train_loss": self._loss_sum / self._seen,
                    "step/train_accuracy": self._correct / self._seen,
                    "step/lr": lr,
                },
            )
            self._loss_sum, self._correct, self._seen = 0.0, 0, 0

    def on_epoch_end(self, trainer, row, improved):
        self._scalars(row["epoch"], {f"epoch/{k}": row[k] for k in HISTORY_FIELDS if k != "epoch"})
        self.writer.flush()

    def on_interrupt(self, trainer):
        self.writer.flush()

    def on_end(self, trainer, result):
        from lenet5.reports import confusion_matrix_figure, figure_png, predictions_figure

        test, step = result.test, result.epochs_run
        self._scalars(step, {"test/accuracy": test.accuracy, "test/loss": test.loss})
        self._image(step, "test/confusion_matrix", figure_png(confusion_matrix_figure(test.confusion)))
        self._image(
            step,
            "test/predictions",
            figure_png(predictions_figure(trainer.data.test_images, test.labels, test.probabilities)),
        )
        self._close()

    def _close(self) -> None:
        if self.writer is not None:
            atexit.unregister(self._close_at_exit)
            self.writer.close()  # flushes; closing twice does nothing

    def _close_at_exit(self) -> None:
        try:
            self._close()
        except OSError:
            pass  # a full disk: the run has already said so


def _quiet_writer_threads() -> None:
    """The event writer writes from its own thread; when a write fails there (the run folder turned read-only
    or full), the thread re-raises and Python prints "Exception in thread ..." with a traceback. The same error
    is raised again by the writer's next call in the training thread, where the run turns it into its one
    line, so the writer thread's OSErrors are not printed. Installed again if something replaced the hook."""
    if getattr(threading.excepthook, "lenet5_quiet", False):
        return
    previous = threading.excepthook

    def hook(args):
        if isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread":
            return
        previous(args)

    hook.lenet5_quiet = True
    threading.excepthook = hook
