"""The NumPy engine's worker processes: same numbers as one worker, restarts, clear errors, nothing left behind."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import LENET5, opt
from lenet5.config import ModelConfig
from lenet5.data.datasets import normalize
from lenet5.engines.numpy import executors
from lenet5.engines.numpy.engine import NumpyEngine
from lenet5.engines.numpy.executors import InThreadExecutor
from lenet5.engines.numpy.workers import TRAIN
from worker_processes import engine_with_processes, gone


@pytest.fixture(scope="module")
def batch(mnist):
    return normalize(mnist.train_images[:256]), mnist.train_labels[:256].astype(np.int64)


def worker_pids(engine: NumpyEngine) -> list[int]:
    return engine.executor.processes.pids()


def test_two_workers_compute_what_one_does(batch):
    # one worker takes the 64 images in one piece, two in two pieces of 32: the sums round differently
    x, y = batch[0][:64], batch[1][:64]
    one, two = NumpyEngine(ModelConfig(), opt(), seed=4, threads=1), engine_with_processes(2)
    for _ in range(3):
        (loss_one, correct_one), (loss_two, correct_two) = one.train_step(x, y, 1e-3), two.train_step(x, y, 1e-3)
        assert correct_one == correct_two and loss_one == pytest.approx(loss_two, rel=1e-5)
    assert two.executor.processes.orders == 3, "two workers ran without their worker process"
    for key, value in one.state_dict().items():
        np.testing.assert_allclose(two.state_dict()[key], value, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(one.logits(batch[0]), two.logits(batch[0]), rtol=1e-5, atol=1e-5)
    two.close()


def test_logits_in_rounds_and_a_larger_batch_restart_the_workers(batch, monkeypatch):
    monkeypatch.setattr(executors, "LOGITS_ROUND", 40)  # the shared batch block holds 40 images at first
    x, y = batch
    one, two = NumpyEngine(ModelConfig(), opt(), seed=4, threads=1), engine_with_processes(2)
    # 3 rounds of at most 40, in pieces of 20 (one worker: pieces of 64, which BLAS rounds a little differently)
    np.testing.assert_allclose(two.logits(x[:100]), one.logits(x[:100]), rtol=1e-5, atol=1e-5)
    first = worker_pids(two)
    assert two.executor.processes.capacity == 40 and two.executor.processes.orders == 3  # one order a round
    loss_one, correct_one = one.train_step(x[:200], y[:200], 1e-3)
    loss_two, correct_two = two.train_step(x[:200], y[:200], 1e-3)  # 200 images: a new, larger block
    assert two.executor.processes.capacity == 200 and worker_pids(two) != first and all(map(gone, first))
    assert correct_two == correct_one and loss_two == pytest.approx(loss_one, rel=1e-5)
    two.executor.processes.ready(200, (1, 28, 28))  # the new processes up: the next step's pieces go to them
    one.train_step(x[:200], y[:200], 1e-3)
    two.train_step(x[:200], y[:200], 1e-3)
    assert two.executor.processes.orders == 4
    for key, value in one.state_dict().items():  # the pieces are summed in another order: rounding differs
        np.testing.assert_allclose(two.state_dict()[key], value, rtol=1e-4, atol=1e-6)
    two.close()


@pytest.mark.parametrize("threads", [2, 3])
def test_workers_give_the_same_bits_in_a_process_or_in_the_calling_thread(batch, threads):
    # 128 images in pieces of 32 dealt to 2 workers: (p0 + p2) + (p1 + p3) wherever worker 1 runs; 3 workers on
    # this 2-core machine: one process at most, worker 2 always runs in the calling thread
    x, y = batch[0][:128], batch[1][:128]
    in_processes, here = engine_with_processes(threads), engine_with_processes(threads)
    here.executor.in_use = 0  # what the free-cores policy does while another program holds a core
    for _ in range(3):
        assert in_processes.train_step(x, y, 1e-3) == here.train_step(x, y, 1e-3)
    assert in_processes.executor.processes.orders == 3 and here.executor.processes.orders == 0
    for key, value in in_processes.state_dict().items():
        assert np.array_equal(value, here.state_dict()[key]), key
    assert np.array_equal(in_processes.logits(batch[0]), here.logits(batch[0]))
    in_processes.close()


def test_the_free_cores_policy_decides_how_many_processes_get_work(batch, monkeypatch):
    from lenet5 import free_cores

    monkeypatch.setattr(free_cores, "CHECK_SECONDS", 0.0)
    monkeypatch.setattr(free_cores, "available_cores", lambda: 2)
    monkeypatch.setattr(free_cores.os, "cpu_count", lambda: 2)
    seconds = iter([(0.0, 0.0), (0.0, 0.0), (2.0, 2.0), (2.0, 4.0)])  # (busy, total) CPU seconds of the machine
    monkeypatch.setattr(free_cores, "_machine_seconds", lambda: next(seconds, (2.0, 4.0)))
    engine = NumpyEngine(ModelConfig(), opt(), seed=4, threads=2)
    engine.executor.free_cores.own = lambda: 0.0  # nothing of the machine's busy time was ours
    x, y = batch[0][:64], batch[1][:64]
    assert engine.executor.in_use == 0  # starts in the calling thread alone
    engine.train_step(x, y, 1e-3)  # others used a whole core of two: still no process
    assert engine.executor.in_use == 0 and not worker_pids(engine)
    engine.train_step(x, y, 1e-3)  # nothing else ran: the second core is free
    assert engine.executor.in_use == 1 and worker_pids(engine)
    engine.close()


def test_answers_to_an_interrupted_step_are_dropped(batch):
    x, y = batch[0][:64], batch[1][:64]
    clean, interrupted = engine_with_processes(2), engine_with_processes(2)
    clean.train_step(x, y, 1e-3)
    interrupted.train_step(x, y, 1e-3)
    # a step whose answers nobody collected (Ctrl-C between the order and the wait), with other images
    plan = interrupted.executor.here.plan(64)
    interrupted.executor._hand_out(TRAIN, x[::-1].copy(), y[::-1].copy(), plan[1:])
    assert clean.train_step(x, y, 1e-3) == interrupted.train_step(x, y, 1e-3)
    for key, value in clean.state_dict().items():
        assert np.array_equal(value, interrupted.state_dict()[key]), key
    clean.close()
    interrupted.close()


def test_a_killed_worker_process_is_one_line_its_pieces_run_here_and_the_next_step_starts_a_new_one(batch, capsys):
    x, y = batch[0][:64], batch[1][:64]
    engine, reference = engine_with_processes(2), engine_with_processes(2)
    for e in (engine, reference):
        e.train_step(x, y, 1e-3)
    assert engine.executor.processes.orders == 1
    (pid,) = worker_pids(engine)
    os.kill(pid, signal.SIGKILL)
    assert gone(pid)
    assert engine.train_step(x, y, 1e-3) == reference.train_step(x, y, 1e-3)  # its pieces done here: same bits
    err = capsys.readouterr().err
    assert err == (
        f"warning: the NumPy engine's worker process {pid} exited with code -9; its pieces ran in this "
        "process, and a new one starts (the same results)\n"
    )
    engine.executor.processes.ready(executors.LOGITS_ROUND, (1, 28, 28))
    assert engine.train_step(x, y, 1e-3) == reference.train_step(x, y, 1e-3)  # a fresh worker process
    assert worker_pids(engine) and worker_pids(engine) != [pid] and engine.executor.processes.orders == 3
    for key, value in engine.state_dict().items():
        assert np.array_equal(value, reference.state_dict()[key]), key
    engine.close()
    reference.close()


def test_an_error_in_a_worker_process_is_told_and_its_pieces_run_here(batch, capsys):
    engine = engine_with_processes(2)
    engine.train_step(*[a[:64] for a in batch], 1e-3)
    (pid,) = worker_pids(engine)
    engine.executor.processes.order(99, 0, [[(0, 1)]])  # an order no worker knows
    assert engine.executor.processes.wait() == [None]
    assert f"worker process {pid} failed: ValueError: unknown order 99" in capsys.readouterr().err
    engine.close()


def test_closing_or_dropping_the_engine_ends_its_worker_processes(batch):
    x, y = batch[0][:64], batch[1][:64]
    closed = engine_with_processes(2)
    closed.train_step(x, y, 1e-3)
    pids = worker_pids(closed)
    closed.close()
    assert pids and all(map(gone, pids)) and not worker_pids(closed)
    closed.train_step(x, y, 1e-3)  # used again after close(): starts its workers again
    closed.close()

    dropped = engine_with_processes(2)
    dropped.logits(x)
    pids = worker_pids(dropped)
    assert len(pids) == 1
    del dropped
    gc.collect()
    assert all(map(gone, pids))


def test_a_with_block_ends_the_worker_processes(batch):
    with engine_with_processes(2) as engine:
        engine.train_step(batch[0][:64], batch[1][:64], 1e-3)
        pids = worker_pids(engine)
    assert pids and all(map(gone, pids)) and not worker_pids(engine)


def test_an_engine_dropped_without_close_leaves_no_file_descriptor_open(batch):
    # its shared memory blocks close their descriptors when collected: the memory is given back
    x, y = batch[0][:64], batch[1][:64]
    engine_with_processes(2).close()  # whatever the first engine opens once (imports) is open before counting
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    for close in (False, True):
        engine = engine_with_processes(2)
        engine.train_step(x, y, 1e-3)
        pids = worker_pids(engine)
        if close:
            engine.close()
        del engine
        gc.collect()
        assert all(map(gone, pids))
    assert len(os.listdir("/proc/self/fd")) == before


def test_worker_processes_exit_when_the_engine_process_is_killed(tmp_path):
    script = textwrap.dedent("""
        import numpy as np, sys, time
        from lenet5.engines.numpy.engine import NumpyEngine
        engine = NumpyEngine(threads=2)
        engine.executor.free_cores, engine.executor.in_use = None, 1
        engine.train_step(np.zeros((64, 1, 28, 28), np.float32), np.zeros(64, np.int64), 0.01)
        print(engine.executor.processes.pids()[0], flush=True)
        time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(process.stdout.readline())
        assert not gone(pid, timeout=0.2)
    finally:
        process.kill()
        process.wait()
    assert gone(pid), "the worker process outlived the engine's process"


BUSY_LOAD = 1.4  # a load average this high on 2 cores: more than the training run alone keeps busy


@pytest.mark.slow  # a real training run started and stopped (about 20 s): in the full run, not the quick loop
def test_ctrl_c_in_a_two_worker_cli_run_leaves_no_process_behind(mnist, tmp_path):
    # the whole MNIST from lenet5's cache: long epochs, so that the worker process is started and caught at
    # work even while another program holds a core (a small subset trains 50 epochs in 20 s with the pieces
    # done in the calling thread); never --data-dir of a shared fixture, where a fetch would write MNIST
    process = subprocess.Popen(
        [
            *LENET5,
            "train",
            "--out",
            str(tmp_path / "runs"),
            "--engine",
            "numpy",
            "--threads",
            "2",
            "--epochs",
            "50",
            "--batch-size",
            "64",
            "--set",
            "data.val_size=100",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    children: set[int] = set()
    deadline = time.monotonic() + 60  # on a quiet machine the worker starts within seconds
    while not children and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        for task in os.listdir(f"/proc/{process.pid}/task"):
            try:
                with open(f"/proc/{process.pid}/task/{task}/children") as f:
                    children |= {int(pid) for pid in f.read().split()}
            except OSError:
                pass
    if not children and process.poll() is None and os.getloadavg()[0] >= BUSY_LOAD:
        # other programs hold a core: the engine does the worker's pieces itself and starts no process, rightly
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 130 and "Traceback" not in output, output
        pytest.skip("no worker process was started: other programs held the cores (load average >= 1.4)")
    assert children, "the run started no worker process"
    time.sleep(1.0)  # a few steps with the worker at work
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group, the workers too
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "Traceback" not in output, output
    assert all(map(gone, children))


def test_no_shared_memory_left_is_one_line_and_every_worker_runs_here(monkeypatch, capsys):
    import errno

    from lenet5.engines.numpy import workers

    def no_memory(size):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(workers, "_anonymous_file", no_memory)
    engine = NumpyEngine(ModelConfig(), opt(), threads=2)
    assert isinstance(engine.executor, InThreadExecutor) and engine.threads == 2
    assert capsys.readouterr().err == (
        "warning: could not make shared memory for the NumPy engine's worker processes "
        "(Cannot allocate memory); every worker runs in this process (the same "
        "results)\n"
    )
    assert NumpyEngine(ModelConfig(), opt(), threads=1).threads == 1  # one worker needs none
    assert capsys.readouterr().err == ""


def test_without_worker_processes_every_worker_runs_here_with_the_same_bits(batch, monkeypatch):
    # where no process can be started (not POSIX), threads still cuts the batch the same way
    from lenet5.engines.numpy import workers

    x, y = batch[0][:128], batch[1][:128]
    with_processes = engine_with_processes(2)
    monkeypatch.setattr(workers, "SUPPORTED", False)
    without = NumpyEngine(ModelConfig(), opt(), seed=4, threads=2)
    assert isinstance(without.executor, InThreadExecutor)
    for _ in range(2):
        assert with_processes.train_step(x, y, 1e-3) == without.train_step(x, y, 1e-3)
    assert with_processes.executor.processes.orders == 2
    for key, value in with_processes.state_dict().items():
        assert np.array_equal(value, without.state_dict()[key]), key
    with_processes.close()
