"""The NumPy engine's worker processes and the machine's limits: a worker process is never what stops a run, and
a limit is one line, never a traceback.

- A worker process stopped with SIGSTOP hung training forever at 0% CPU and ignored the first Ctrl-C; now after
  SILENT_AFTER seconds (HURRY_AFTER once Ctrl-C asked the run to stop) it is named in one line, ended, and its
  pieces run in the calling thread: the same bits.
- Worker processes printed BrokenPipeError / ConnectionResetError tracebacks (evaluate, a killed worker, an
  orphan) and KeyboardInterrupt ones (Ctrl-C while they started): they run in their own session, with no stderr,
  and leave quietly when the engine is gone.
- ulimit -n, ulimit -f, a pids limit, prlimit --as: one line, or every worker in the calling thread.
- /proc/self/mem as --model, a 300-character study path, a TensorBoard folder that fails mid-run: one line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import LENET5, lenet5, opt, write_mnist_subset
from lenet5.config import ModelConfig
from lenet5.data.datasets import normalize
from lenet5.engines.numpy import workers
from lenet5.engines.numpy.engine import NumpyEngine
from worker_processes import engine_with_processes, gone

# `lenet5 ARGS` with every worker process given its pieces however busy the machine is (the free-cores policy
# would otherwise keep them idle while other test runners hold the cores)
BUSY_CLI = [
    sys.executable,
    "-c",
    textwrap.dedent("""
    import sys
    import lenet5.free_cores as free_cores
    free_cores.adaptive = lambda *args, **kwargs: None
    from lenet5.cli import main
    raise SystemExit(main(sys.argv[1:]))
"""),
]


@pytest.fixture(scope="module")
def batch(mnist):
    return normalize(mnist.train_images[:256]), mnist.train_labels[:256].astype(np.int64)


@pytest.fixture(scope="module")
def digits(mnist, tmp_path_factory) -> Path:
    return write_mnist_subset(mnist, tmp_path_factory.mktemp("digits"), 6000, 500)


def children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out |= {int(p) for p in f.read().split()}
        except OSError:
            pass
    return out


def same_state(a: NumpyEngine, b: NumpyEngine) -> bool:
    return all(np.array_equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


# ------------------------------------------------------------------------------------ a silent worker
def test_a_stopped_worker_process_is_named_ended_and_its_pieces_run_here(batch, monkeypatch, capsys):
    monkeypatch.setattr(workers, "SILENT_AFTER", 1.0)
    x, y = batch[0][:64], batch[1][:64]
    engine, reference = engine_with_processes(), NumpyEngine(ModelConfig(), opt(), seed=4, threads=2)
    reference.executor.free_cores, reference.executor.in_use = None, 0  # both workers in the calling thread
    for e in (engine, reference):
        e.train_step(x, y, 1e-3)
    (pid,) = engine.executor.processes.pids()
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert engine.train_step(x, y, 1e-3) == reference.train_step(x, y, 1e-3)
        assert time.monotonic() - started < 5
        assert gone(pid)  # ended: a stopped process would not obey a STOP order
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    err = capsys.readouterr().err
    assert (
        err.startswith(f"warning: the NumPy engine's worker process {pid} has not answered for 1 s")
        and err.count("\n") == 1
    ), err
    assert same_state(engine, reference)
    engine.close()


def test_a_stop_request_shortens_the_wait_for_a_silent_worker(batch, capsys):
    x, y = batch[0][:64], batch[1][:64]
    engine = engine_with_processes()
    engine.train_step(x, y, 1e-3)
    (pid,) = engine.executor.processes.pids()
    os.kill(pid, signal.SIGSTOP)
    try:
        engine.hurry()  # what the trainer's Ctrl-C handler calls
        started = time.monotonic()
        engine.train_step(x, y, 1e-3)
        assert time.monotonic() - started < workers.HURRY_AFTER + 3
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert f"worker process {pid} has not answered" in capsys.readouterr().err
    engine.close()


@pytest.mark.slow
def test_one_ctrl_c_stops_a_run_whose_worker_process_is_stopped_and_saves(digits, tmp_path):
    proc = subprocess.Popen(
        [
            *BUSY_CLI,
            "train",
            "--dataset",
            "idx",
            "--data-dir",
            str(digits),
            "--threads",
            "2",
            "--epochs",
            "200",
            "--out",
            str(tmp_path),
            "--name",
            "run",
            "--set",
            "data.val_size=100",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while not children(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        time.sleep(2)  # training with its worker process
        (worker,) = children(proc.pid)
        os.kill(worker, signal.SIGSTOP)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)  # once
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"worker process {worker} has not answered" in err, err
    assert f"saved {tmp_path / 'run' / 'last.safetensors'}" in err
    assert gone(worker)


# ------------------------------------------------------------------------------------------ tracebacks
def test_worker_processes_run_in_their_own_session_without_stderr(batch):
    engine = engine_with_processes()
    (pid,) = engine.executor.processes.pids()
    assert os.getsid(pid) != os.getsid(0)  # Ctrl-C at the terminal reaches the engine only
    assert os.readlink(f"/proc/{pid}/fd/2") == "/dev/null"
    engine.close()


@pytest.mark.parametrize("when", ["before-ready", "after-an-order"])
def test_a_worker_process_whose_engine_is_gone_leaves_quietly(when):
    ours, theirs = socket.socketpair()
    engine = NumpyEngine(ModelConfig(), opt(), threads=2)
    state = engine.executor.state
    block = workers.SharedBlock(workers.batch_layout(64, (1, 28, 28), np.float32))
    args = [
        sys.executable,
        "-m",
        "lenet5.engines.numpy.workers",
        str(theirs.fileno()),
        str(state.fd),
        str(block.fd),
        "modern",
        "float32",
        "0.0",
        "0",
        "1",
        "64",
        "1",
        "28",
        "28",
    ]
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(theirs.fileno(), state.fd, block.fd)
    )
    theirs.close()
    if when == "after-an-order":  # an order out, its answer never read: the worker's send meets a closed socket
        assert ours.recv(workers.ANSWER.size)
        ours.sendall(workers.ORDER.pack(workers.LOGITS, 1, 64, 1) + workers.PIECE.pack(0, 64))
    ours.close()  # with unread data (its ready answer): the worker's recv is reset
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and out == b"" and err == b"", err.decode()
    block.close()


@pytest.mark.slow
def test_killing_a_worker_process_and_evaluate_print_no_traceback(digits, tmp_path):
    proc = subprocess.Popen(
        [
            *BUSY_CLI,
            "train",
            "--dataset",
            "idx",
            "--data-dir",
            str(digits),
            "--threads",
            "2",
            "--epochs",
            "3",
            "--out",
            str(tmp_path),
            "--name",
            "run",
            "--set",
            "data.val_size=100",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not children(proc.pid):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    (worker,) = children(proc.pid)
    os.kill(worker, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert f"warning: the NumPy engine's worker process {worker} exited with code -9" in err
    for _ in range(3):
        done = subprocess.run(
            [
                *BUSY_CLI,
                "evaluate",
                "--model",
                str(tmp_path / "run"),
                "--dataset",
                "idx",
                "--data-dir",
                str(digits),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0 and done.stderr == "", done.stderr


# --------------------------------------------------------------------------------------- machine limits
def test_processes_that_cannot_be_started_leave_every_worker_here_with_the_same_bits(batch, monkeypatch, capsys):
    x, y = batch[0][:128], batch[1][:128]
    reference = engine_with_processes()

    def no_process(*args, **kwargs):
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(workers.subprocess, "Popen", no_process)
    engine = NumpyEngine(ModelConfig(), opt(), seed=4, threads=2)
    engine.executor.free_cores, engine.executor.in_use = None, 1
    for _ in range(3):
        assert engine.train_step(x, y, 1e-3) == reference.train_step(x, y, 1e-3)
    assert same_state(engine, reference) and engine.executor.processes.off
    assert capsys.readouterr().err == (
        "warning: could not start the NumPy engine's worker processes (Resource "
        "temporarily unavailable); every worker runs in this process from now on "
        "(the same results)\n"
    )
    reference.close()


@pytest.mark.parametrize(
    "limit",
    [
        (resource.RLIMIT_NOFILE, 10),
        (resource.RLIMIT_FSIZE, 10_000_000),  # the batch block (13 MB) cannot grow; checkpoints still fit
    ],
    ids=["ulimit-n", "ulimit-f"],
)
@pytest.mark.slow
def test_a_run_under_a_tight_limit_gives_one_line_or_runs_here(digits, tmp_path, limit):
    def cap():
        resource.setrlimit(limit[0], (limit[1], limit[1]))

    done = subprocess.run(
        [
            *BUSY_CLI,
            "train",
            "--dataset",
            "idx",
            "--data-dir",
            str(digits),
            "--threads",
            "2",
            "--epochs",
            "1",
            "--limit-batches",
            "30",
            "--out",
            str(tmp_path),
            "--set",
            "data.val_size=100",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=cap,
    )
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.replace("\r", "\n").splitlines() if line.startswith(("error:", "warning:"))]
    if done.returncode == 2:
        assert lines[-1].startswith("error: Too many open files: this process may open only 10 files"), done.stderr
    else:
        assert done.returncode == 0, done.stderr
    assert lines and lines[0].startswith("warning: could not"), done.stderr


@pytest.mark.parametrize("megabytes", [150, 350])
def test_a_small_address_space_is_one_line(megabytes, tmp_path):
    limit = megabytes * 2**20

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    for args in (["summary"], ["train", "--epochs", "1"], ["predict", str(tmp_path / "x.png")]):
        done = subprocess.run(
            [*LENET5, *args], capture_output=True, text=True, timeout=60, preexec_fn=cap, cwd=tmp_path
        )
        assert done.returncode == 2 and done.stderr == (
            f"error: this process may use {megabytes} MB of address space (ulimit -v, prlimit --as); lenet5 needs "
            "at least 512 MB: raise the limit\n"
        ), done.stderr


def test_out_of_memory_anywhere_is_one_line(monkeypatch, capsys):
    from lenet5 import cli

    def exhausted(args):
        raise MemoryError("std::bad_alloc")

    monkeypatch.setattr(cli, "cmd_summary", exhausted)
    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser(), "summary", exhausted))
    assert cli.main(["summary"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory (std::bad_alloc); ") and err.count("\n") == 1, err


def _with_func(parser, command, func):
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub.choices[command].set_defaults(func=func)
    return parser


def test_the_cli_starts_no_openblas_thread_pool():
    """Where a pids limit leaves no room for OpenBLAS's threads it raised SIGINT: a run 'interrupted' by nobody."""
    done = subprocess.run(
        [sys.executable, "-c", "import os, lenet5.cli; print(os.environ['OPENBLAS_NUM_THREADS'])"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"},
    )
    assert done.stdout.strip() == "1"


@pytest.mark.slow
def test_a_pids_limit_is_no_interruption(digits, tmp_path):
    """A real pids limit (a cgroup v1 pids controller, as root), where the machine lets us make one."""
    base = Path("/sys/fs/cgroup/pids")
    if os.geteuid() != 0 or not (base / "cgroup.procs").exists():
        pytest.skip("needs root and a cgroup v1 pids controller")
    group = base / f"lenet5-test-{os.getpid()}"
    try:
        group.mkdir()
        (group / "pids.max").write_text("1")  # this process alone: no worker process, no thread
    except OSError as exc:
        pytest.skip(f"cannot make a pids cgroup here ({exc.strerror})")
    try:

        def join():
            (group / "cgroup.procs").write_text(str(os.getpid()))

        done = subprocess.run(
            [
                *BUSY_CLI,
                "train",
                "--dataset",
                "idx",
                "--data-dir",
                str(digits),
                "--threads",
                "2",
                "--epochs",
                "1",
                "--limit-batches",
                "30",
                "--out",
                str(tmp_path),
                "--set",
                "data.val_size=100",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=join,
        )
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    assert done.returncode == 0 and "Traceback" not in done.stderr and "interrupted" not in done.stderr, done.stderr
    assert (
        "warning: could not start the NumPy engine's worker processes (Resource temporarily unavailable)" in done.stderr
    )


# ---------------------------------------------------------------------------------- files the OS refuses
def test_a_model_the_system_cannot_read_is_one_line(tmp_path):
    for args in (["summary", "--model", "/proc/self/mem"], ["summary", "--model", str(tmp_path / ("d" * 300))]):
        done = lenet5(*args, timeout=60)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    summary = lenet5("summary", "--model", "/proc/self/mem")
    assert "/proc/self/mem: cannot read it (Input/output error)" in summary.stderr


def test_a_study_path_too_long_is_one_line(tmp_path):
    pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path}/{'d' * 300}/study.db"
    done = lenet5("tune", "--trials", "1", "--epochs", "1", "--storage", storage, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert (
        done.stderr.startswith("error: cannot make the folder of the study database")
        and "File name too long" in done.stderr
    )


def test_a_tensorboard_folder_that_fails_mid_run_is_one_line(mnist, tmp_path, monkeypatch, capfd):
    pytest.importorskip("tensorboard")
    from tensorboard.compat.tensorflow_stub.io import gfile

    from lenet5.config import build_config
    from lenet5.errors import Lenet5Error
    from lenet5.training.run import train_run

    writes = {"n": 0}
    real_write = gfile.LocalFileSystem._write

    def read_only_after_a_while(self, filename, content, mode):
        writes["n"] += 1
        if writes["n"] > 3:  # the folder turned read-only: the writer thread's next write fails
            raise OSError(errno.EROFS, "Read-only file system", filename)
        return real_write(self, filename, content, mode)

    monkeypatch.setattr(gfile.LocalFileSystem, "_write", read_only_after_a_while)
    data = write_mnist_subset(mnist, tmp_path / "data", 2000, 200)
    cfg = build_config(
        sets=[
            "train.epochs=3",
            "train.threads=1",
            "train.logger=tensorboard",
            "data.dataset=idx",
            f"data.data_dir={data}",
            f"train.out={tmp_path / 'runs'}",
            "train.name=run",
            "data.val_size=100",
        ]
    )
    with pytest.raises(Lenet5Error) as info:
        train_run(cfg, log=lambda msg: None)
    message = str(info.value)
    assert message.startswith(f"cannot write {tmp_path / 'runs' / 'run'}/events.out.tfevents.") and "b'" not in message
    assert "Read-only file system" in message
    assert "Exception in thread" not in capfd.readouterr().err
