"""Distorted batches made ahead in a second process (data/prefetch.py): bit for bit the batches the trainer makes
in its own thread, from any step a run resumes at, whatever the engine; and a process that dies, stalls or
cannot start never stops a run nor changes a bit (one warning, then the training thread distorts)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest

from lenet5.checkpoint import load_checkpoint
from lenet5.config import AugmentConfig, build_config
from lenet5.data import prefetch
from lenet5.data.augment import make_augmenter
from lenet5.data.datasets import iterate_batches, normalize, num_batches, split_train_val
from lenet5.data.prefetch import PrefetchedDistortions, distort_range
from lenet5.training import trainer as trainer_module
from lenet5.training.callbacks import LAST_FILE, run_folder_callbacks
from lenet5.training.trainer import Trainer, TrainingInterrupted

BOTH = AugmentConfig(enabled=True, elastic_alpha=34.0)
AUGMENT = ["augment.enabled=true", "augment.elastic_alpha=34"]


def small(mnist, n: int = 700):
    return type(mnist)(mnist.train_images[:n], mnist.train_labels[:n], mnist.test_images[:100], mnist.test_labels[:100])


def trainer(mnist, *sets, prefetch: bool, log=None, callbacks=(), **kw) -> Trainer:
    cfg = build_config(
        sets=["train.epochs=2", "train.batch_size=32", "data.val_size=100", "train.threads=1", *AUGMENT, *sets]
    )
    return Trainer(cfg, small(mnist, **kw), prefetch=prefetch, log=log or (lambda msg: None), callbacks=callbacks)


def record(t: Trainer, then=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train, keeping a copy of every batch the engine was handed; ``then(trainer)`` after each step."""
    seen, step = [], t.engine.train_step

    def recording_step(x, y, lr):
        seen.append((x.copy(), y.copy()))
        out = step(x, y, lr)
        if then is not None:
            then(t)
        return out

    t.engine.train_step = recording_step
    for _ in t.epochs():
        pass
    return seen


def warnings(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("warning:")]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for i, ((xa, ya), (xb, yb)) in enumerate(zip(a, b)):
        assert xa.dtype == xb.dtype and np.array_equal(xa, xb), f"batch {i}: other images"
        assert np.array_equal(ya, yb), f"batch {i}: other labels"


def assert_same_weights(a: Trainer, b: Trainer):
    wa, wb = a.engine.state_dict(), b.engine.state_dict()
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)


# -------------------------------------------------------------------------------------------- the same bits
@pytest.mark.parametrize("sets", [[], ["train.threads=2"], ["augment.elastic_alpha=0"], ["train.limit_batches=7"]])
def test_prefetched_batches_are_the_in_thread_batches_bit_for_bit(mnist, sets):
    here = trainer(mnist, *sets, prefetch=False)
    ahead = trainer(mnist, *sets, prefetch=True)
    try:
        assert_same_batches(record(here), record(ahead))
        assert_same_weights(here, ahead)
    finally:
        here.engine.close()
        ahead.engine.close()
    assert here.distortions is None and ahead.distortions is None  # the process lives while epochs() runs


def test_the_torch_engine_sees_the_same_distorted_batches(mnist):
    pytest.importorskip("torch")
    numpy_here = trainer(mnist, prefetch=False)
    torch_ahead = trainer(mnist, "train.engine=torch", "train.device=cpu", prefetch=True)
    assert_same_batches(record(numpy_here), record(torch_ahead))


def test_a_distorted_chunk_is_what_iterate_batches_hands_the_trainer(mnist):
    images, labels = mnist.train_images[:1000], mnist.train_labels[:1000]
    transform = make_augmenter(BOTH)
    want = list(iterate_batches(images, labels, 64, np.random.default_rng([4, 3]), transform=transform))
    x, y = distort_range(images, labels, 64, 4, 3, transform, 5, 9)
    for b in range(5, 9):
        got = normalize(x[(b - 5) * 64 : (b - 4) * 64])
        assert np.array_equal(got, want[b][0]) and np.array_equal(y[(b - 5) * 64 : (b - 4) * 64], want[b][1])


@pytest.mark.slow
def test_a_whole_mnist_epoch_made_ahead_is_bit_for_bit_the_in_thread_one(mnist):
    """The full 55,000-image split, batch 64, two epochs: every distorted image compared."""
    train_x, train_y, _, _ = split_train_val(mnist.train_images, mnist.train_labels, 5000, seed=0)
    n_batches = num_batches(len(train_x), 64)
    transform = make_augmenter(BOTH)
    with PrefetchedDistortions(
        train_x,
        train_y,
        64,
        0,
        BOTH,
        batches_per_epoch=n_batches,
        first_epoch=1,
        first_batch=0,
        last_epoch=2,
        log=print,
    ) as ahead:
        for epoch in (1, 2):
            got = list(ahead.batches(epoch))
            want = distort_range(train_x, train_y, 64, 0, epoch, transform, 0, n_batches)
            assert np.array_equal(np.concatenate([x for x, _ in got]), want[0])
            assert np.array_equal(np.concatenate([y for _, y in got]), want[1])


# ------------------------------------------------------------------------------------------------ resume
def test_resume_mid_epoch_from_a_checkpoint_sees_the_uninterrupted_runs_batches(mnist, tmp_path):
    straight = trainer(mnist, prefetch=False)
    want = record(straight)

    def stop_after_31_steps(t):  # called inside step 31 (t.step counts the steps done): epoch 1 has 19 batches
        if t.step == 30:
            t.stop_requested = True

    cut = trainer(mnist, prefetch=True, callbacks=run_folder_callbacks(tmp_path))
    with pytest.raises(TrainingInterrupted) as stop:
        record(cut, then=stop_after_31_steps)
    assert stop.value.saved and (cut.epoch, cut.batch) == (1, 12)
    resumed = trainer(mnist, prefetch=True)
    resumed.restore(load_checkpoint(tmp_path / LAST_FILE), None)
    assert_same_batches(want[31:], record(resumed))
    assert_same_weights(straight, resumed)


# ---------------------------------------------------------------------------------------------- failures
def test_a_killed_process_means_one_warning_and_the_same_batches(mnist):
    want = record(trainer(mnist, prefetch=False))
    lines = []

    def kill_at_step_5(t):
        if t.step == 5:
            os.kill(t.distortions.process.pid, signal.SIGKILL)

    got = record(trainer(mnist, prefetch=True, log=lines.append), then=kill_at_step_5)
    assert_same_batches(want, got)
    assert len(warnings(lines)) == 1 and "SIGKILL" in warnings(lines)[0], lines


@pytest.mark.slow  # a few seconds: in the full run, not the quick loop
def test_a_stalled_process_is_given_up_after_the_stall_limit(mnist, monkeypatch):
    monkeypatch.setattr(prefetch, "STALL_SECONDS", 1.0)
    monkeypatch.setattr(prefetch, "AHEAD_CHUNKS", 1)  # nothing made ahead beyond the chunk in training
    want = record(trainer(mnist, prefetch=False))
    lines, stopped = [], []

    def stop_at_step_3(t):
        if t.step == 3:
            stopped.append(t.distortions.process)
            os.kill(t.distortions.process.pid, signal.SIGSTOP)

    start = time.monotonic()
    got = record(trainer(mnist, prefetch=True, log=lines.append), then=stop_at_step_3)
    assert_same_batches(want, got)
    assert time.monotonic() - start < 30
    assert len(warnings(lines)) == 1 and "gave no batches for 1 s" in warnings(lines)[0], lines
    assert stopped[0].poll() is not None  # the stopped process was killed, not left behind


def test_a_process_that_cannot_start_means_one_warning_and_the_same_batches(mnist, monkeypatch):
    def no_processes_left():
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(prefetch, "start_process", no_processes_left)
    want = record(trainer(mnist, prefetch=False))
    lines = []
    assert_same_batches(want, record(trainer(mnist, prefetch=True, log=lines.append)))
    assert len(warnings(lines)) == 1, lines
    assert "could not be started: Resource temporarily unavailable" in warnings(lines)[0]


def test_an_error_in_the_process_is_sent_back_as_one_line(mnist):
    """A process that fails (here: fewer labels than images) says why; the trainer warns and goes on."""
    lines = []
    x, y = mnist.train_images[:256], mnist.train_labels[:10]
    with PrefetchedDistortions(
        x, y, 64, 0, BOTH, batches_per_epoch=4, first_epoch=1, first_batch=0, last_epoch=1, log=lines.append
    ) as ahead:
        with pytest.raises(IndexError):  # the training thread meets the same bad input
            list(ahead.batches(1))
    assert len(warnings(lines)) == 1 and "it failed: IndexError" in warnings(lines)[0], lines


def test_ctrl_c_stops_the_run_and_the_process(mnist):
    processes = []

    def ctrl_c_at_step_4(t):
        if t.step == 4:
            processes.append(t.distortions.process)
            t.stop_requested = True

    t = trainer(mnist, prefetch=True)
    with pytest.raises(TrainingInterrupted) as stop:
        record(t, then=ctrl_c_at_step_4)
    assert stop.value.saved and t.distortions is None
    assert processes[0].poll() is not None


def test_the_process_leaves_when_the_trainers_process_is_gone(mnist):
    """Its socket closes (the trainer's process was killed): it exits instead of running on."""
    process, conn = prefetch.start_process()
    conn.send((mnist.train_images[:64], mnist.train_labels[:64], 64, 0, BOTH))
    conn.send((1, 0, 1))
    assert conn.recv()[0] == "chunk"
    conn.close()
    try:
        assert process.wait(10) == 0
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.mark.parametrize(
    "cores,sets,ahead",
    [
        (2, ["train.threads=1"], True),
        (2, ["train.threads=2"], False),
        (1, ["train.threads=1"], False),
        (4, ["train.threads=2"], True),
    ],
)
def test_distortions_are_made_ahead_only_where_the_engine_leaves_a_core_idle(mnist, monkeypatch, cores, sets, ahead):
    monkeypatch.setattr(trainer_module, "available_cores", lambda: cores)
    t = trainer(mnist, *sets, prefetch=None)
    try:
        assert t.prefetch is ahead
    finally:
        t.engine.close()
    off = trainer(mnist, *sets, "augment.enabled=false", prefetch=None)
    assert off.prefetch is False  # nothing to distort
    off.engine.close()
