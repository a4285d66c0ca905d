"""The NumPy engine's worker processes: the shared memory, the processes seen from the engine, and their main.

A batch is cut into pieces (pieces.py) and dealt to ``threads`` workers. Worker 0 is the engine's own thread;
workers 1, 2, ... are processes (python -m lenet5.engines.numpy.workers), driven by the process pool executor
(process_pool.py). Processes, not threads: NumPy lets go of the GIL inside a matmul, but a training step is also
hundreds of small operations that hold it, and two threads of this engine trained no faster than one
(benchmarks/engine_speed.py: 7.5 s per epoch on one thread, 8.6 s on two, while two processes each kept their
core's pace).

Nothing is pickled. A process shares two blocks of memory with the engine (an anonymous memfd, or an unlinked
temporary file where there is none), both mapped as NumPy arrays:

- the state: the parameters (the engine's Network reads them, its optimizer updates them in place) and one
  gradient buffer per process;
- the batch: images, labels and logits for up to ``capacity`` images. A larger training batch restarts the
  processes with a larger block; logits of more images are computed in rounds of at most ``capacity``.

Orders go over a socket: a fixed binary header, then the pieces as (start, stop) pairs; the answer is the
sequence number, the pieces' summed loss and correct predictions, and an error message if there was one.
Answers to orders of an interrupted step (Ctrl-C) carry an old sequence number and are dropped. A process
that finds its socket closed or reset (the engine closed, or the engine's process died) exits, quietly.

A process is never what stops a run: one that cannot be started (no file descriptors, no memory, no
processes left, a file size limit on the shared memory) or that dies, fails, or stays silent for SILENT_AFTER
seconds while the engine waits (stopped with SIGSTOP, say; HURRY_AFTER once Ctrl-C asked the run to stop) is
killed and named in one line on stderr, and its pieces are done in the calling thread: the same pieces and sums,
so the same bits. The next step starts fresh processes, up to MAX_FAILURES times; after that, and at once when
they cannot be started, every worker runs in the calling thread.

The processes run in their own session: Ctrl-C at the terminal reaches the engine only (which stops them), and
their stderr goes nowhere; what goes wrong in one comes back over its socket, or as its exit code.
"""

from __future__ import annotations

import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import weakref

import numpy as np

from lenet5.engines.numpy.pieces import Worker
from lenet5.models import NUM_CLASSES

SUPPORTED = os.name == "posix"  # file descriptors passed to a child process (pass_fds); elsewhere no processes
TRAIN, LOGITS, STOP = 1, 2, 3
ORDER = struct.Struct("<BIII")  # what to do, sequence number, images in the whole batch (scales the loss), pieces
PIECE = struct.Struct("<II")  # start, stop: images x[start:stop] of the batch block
ANSWER = struct.Struct("<Idqi")  # sequence number, loss, correct predictions, bytes of error message that follow
ALIGN = 64  # bytes: every shared array starts on a cache line
# Seconds a worker process polls for its next order, and the engine for an answer, before sleeping in the
# kernel. Measured (benchmarks/engine_speed.py, batch 64): a process that slept between steps computed its
# piece 25-35% slower after waking up (3.3 -> 4.5 ms; the vCPU it woke on was cold), and a step took 5.4 ms
# instead of 3.9 ms with 3 ms of polling. The gap between two steps is under a millisecond; a longer pause
# (evaluation, checkpoints) costs at most this much CPU time before the process sleeps.
SPIN = 0.003
SILENT_AFTER = 10.0  # seconds a process may keep the engine waiting for an answer before it is given up
HURRY_AFTER = 1.0  # the same once a stop has been asked for (Ctrl-C): the run saves and stops in seconds
POLL = 0.25  # seconds between looks at the clock while waiting
MAX_FAILURES = 3  # processes lost in an engine's life before every worker runs in the calling thread


def warn(message: str) -> None:
    """One line on stderr: what happened to a worker process and what the engine does instead."""
    try:
        sys.stderr.write(f"warning: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed: nothing to tell
        pass


# --- shared memory ----------------------------------------------------------------------------------------


def state_layout(n_params: int, processes: int, dtype) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    return {"params": ((n_params,), np.dtype(dtype)), "grads": ((processes, n_params), np.dtype(dtype))}


def batch_layout(capacity: int, image_shape: tuple[int, ...], dtype) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    return {
        "x": ((capacity, *image_shape), np.dtype(dtype)),
        "y": ((capacity,), np.dtype(np.int64)),
        "logits": ((capacity, NUM_CLASSES), np.dtype(dtype)),
    }


class SharedBlock:
    """An anonymous file mapped into memory and cut into named arrays; ``fd`` passes it to a process."""

    def __init__(self, layout: dict, fd: int | None = None) -> None:
        offsets, size = {}, 0
        for name, (shape, dtype) in layout.items():
            offsets[name] = size
            size += -(-int(np.prod(shape)) * dtype.itemsize // ALIGN) * ALIGN
        size = max(size, ALIGN)
        self.fd = _anonymous_file(size) if fd is None else fd
        # The block owns its file descriptor as a Python file owns its own: close() closes it, and so does the
        # block's collection, so that an engine dropped without close() leaves no memory behind (the mapping
        # holds a descriptor of its own, for as long as an array views it).
        self._close_fd = weakref.finalize(self, os.close, self.fd)
        try:
            self._map = mmap.mmap(self.fd, size)
        except OSError:
            self.close()
            raise
        self.arrays = {
            name: np.frombuffer(self._map, dtype, int(np.prod(shape)), offsets[name]).reshape(shape)
            for name, (shape, dtype) in layout.items()
        }

    def close(self) -> None:
        """Close the file; the memory is freed when the last array viewing it is gone."""
        if self.fd >= 0:
            self._close_fd()
            self.fd = -1


def shared_block(layout: dict) -> SharedBlock | None:
    """A new SharedBlock, or None (told in one line) when the system has no memory, file descriptors or file
    size left for it: the engine then runs every worker in the calling thread."""
    try:
        return SharedBlock(layout)
    except (OSError, MemoryError) as exc:
        warn(
            f"could not make shared memory for the NumPy engine's worker processes "
            f"({getattr(exc, 'strerror', None) or exc or type(exc).__name__}); every worker runs in this process "
            "(the same results)"
        )
        return None


def _anonymous_file(size: int) -> int:
    if hasattr(os, "memfd_create"):  # Linux: memory with a file descriptor and no name anywhere
        fd = os.memfd_create("lenet5-numpy")
    else:
        fd, path = tempfile.mkstemp(prefix="lenet5-numpy-")
        os.unlink(path)
    try:
        os.ftruncate(fd, size)  # pages are only taken when first written
    except OSError:
        os.close(fd)
        raise
    return fd


def _receive(sock: socket.socket, n: int, spin: float = 0.0) -> bytes | None:
    """Exactly n bytes from sock, or None if the other end closed or reset it; polls for up to ``spin`` seconds
    before it sleeps in the kernel (see SPIN)."""
    data = b""
    deadline = time.perf_counter() + spin
    try:
        while not data and time.perf_counter() < deadline:
            try:
                data = sock.recv(n, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            if not data:
                return None
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
    except OSError:  # ECONNRESET, EBADF: the other end is gone
        return None
    return data


class _Lost(Exception):
    """A worker process that can no longer be counted on: why, in words."""


# --- the engine's side ------------------------------------------------------------------------------------


class WorkerProcesses:
    """Workers 1..count of a NumpyEngine as processes, started on first use, stopped by close().

    ``state`` is the engine's shared parameters and gradients (state_layout with ``count`` gradient buffers).
    ``off`` turns True when processes cannot be had: every worker then runs in the calling thread.
    """

    def __init__(self, count: int, model_name: str, dtype, label_smoothing: float, state: SharedBlock) -> None:
        self.count, self.model_name, self.dtype = count, model_name, np.dtype(dtype)
        self.label_smoothing, self.state = label_smoothing, state
        self.batch: dict[str, np.ndarray] = {}  # the batch block's arrays while the processes run
        self.capacity = 0
        self._block: SharedBlock | None = None
        self._processes: list[subprocess.Popen] = []
        self._sockets: list[socket.socket] = []
        self._sequence = 0
        self._answering: list[int] = []  # the processes with an order out
        self._lost: dict[int, str] = {}  # processes found gone while giving the current order, and how
        self._ordered_at = 0.0  # time.monotonic() of the last order (or start): how long the silence has lasted
        self.orders = 0  # orders given since the engine was made: how much work the processes got
        self.failures = 0  # processes lost so far
        self.off = False  # no more processes: every worker runs in the calling thread
        self.hurry = False  # a stop was asked for: wait HURRY_AFTER, not SILENT_AFTER, for a silent process

    def pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    def usable(self, capacity: int, image_shape: tuple[int, ...]) -> bool:
        """Whether the processes are up for ``capacity`` images of this shape; if they are not, (re)starts them
        without waiting: they take ~0.3 s to import NumPy and build the network, meanwhile the engine's own
        thread does their pieces."""
        if self.off:
            return False
        try:
            if not self._fits(capacity, image_shape):
                self.close()
                self._start(max(capacity, self.capacity), tuple(image_shape))
            if self._answering and self._sequence == 0:  # started: ready once each has answered 0
                readable, _, _ = select.select([self._sockets[i] for i in self._answering], [], [], 0)
                for i in [i for i in self._answering if self._sockets[i] in readable]:
                    self._answer(i)
                    self._answering.remove(i)
        except _Lost as lost:
            self._give_up(str(lost))
            return False
        return not self._answering

    def ready(self, capacity: int, image_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """The batch arrays, for at least ``capacity`` images of this shape, once the processes are up ({} when
        there are none to be had)."""
        if not self.usable(capacity, image_shape) and not self.off:
            self.wait()
        return self.batch

    def _fits(self, capacity: int, image_shape: tuple[int, ...]) -> bool:
        return bool(self._processes) and capacity <= self.capacity and self.batch["x"].shape[1:] == tuple(image_shape)

    def _start(self, capacity: int, image_shape: tuple[int, ...]) -> None:
        """Start the processes; a machine limit (file descriptors, memory, processes, file size) raises _Lost
        after turning processes off: trying again at the next step would meet the same limit."""
        from lenet5.child import start_child

        try:
            self._block = SharedBlock(batch_layout(capacity, image_shape, self.dtype))
            self.batch, self.capacity = self._block.arrays, capacity
            for index in range(self.count):
                args = [
                    str(self.state.fd),
                    str(self._block.fd),
                    self.model_name,
                    self.dtype.name,
                    repr(self.label_smoothing),
                    str(index),
                    str(self.count),
                    str(capacity),
                    *map(str, image_shape),
                ]
                process, ours = start_child(
                    "lenet5.engines.numpy.workers", args, keep_fds=(self.state.fd, self._block.fd)
                )
                self._processes.append(process)
                self._sockets.append(ours)
        except (OSError, subprocess.SubprocessError, MemoryError) as exc:
            self.off = True
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise _Lost(f"could not start the NumPy engine's worker processes ({reason})") from None
        self._sequence, self._answering = 0, list(range(self.count))  # each answers 0 once it has built its network
        self._ordered_at = time.monotonic()

    def order(self, what: int, total: int, plans: list[list[tuple[int, int]]]) -> None:
        """Give plans[i] (pieces of the batch block) to process i; wait() collects the answers."""
        self._sequence = self._sequence % (2**32 - 1) + 1  # 1..2**32-1: 0 is the start-up answer
        self._lost = {}
        for i, pieces in enumerate(plans):
            message = ORDER.pack(what, self._sequence, total, len(pieces))
            message += b"".join(PIECE.pack(a, b) for a, b in pieces)
            try:
                self._sockets[i].sendall(message)
            except OSError:
                self._lost[i] = self._how(i, "closed its socket")
        self._answering = list(range(len(plans)))
        self._ordered_at = time.monotonic()
        self.orders += len(plans)

    def wait(self) -> list[tuple[float, int] | None]:
        """(loss, correct predictions) of each process given an order, in process order; None for a process
        that was lost (it died, failed or stayed silent): the caller does its pieces. A loss is told in one
        line, and the processes are closed (the next step starts new ones, or none after MAX_FAILURES)."""
        lost = self._lost
        results: list[tuple[float, int] | None] = []
        for i in self._answering:
            if i in lost:
                results.append(None)
                continue
            try:
                results.append(self._answer(i))
            except _Lost as exc:
                lost[i] = str(exc)
                results.append(None)
        self._answering, self._lost = [], {}
        if lost:
            self._give_up(next(iter(lost.values())))
        return results

    def _answer(self, i: int) -> tuple[float, int]:
        """The answer of process i to the current order; _Lost if it closed its socket, failed or stayed silent."""
        while True:
            head = self._await(i)
            sequence, loss, n_correct, error_bytes = ANSWER.unpack(head)
            error = _receive(self._sockets[i], error_bytes) if error_bytes else b""
            if error is None:
                raise _Lost(self._how(i, "closed its socket"))
            if sequence == self._sequence:  # older answers belong to orders of an interrupted step
                break
        if error:
            raise _Lost(self._how(i, f"failed: {error.decode(errors='replace')}"))
        return loss, n_correct

    def _await(self, i: int) -> bytes:
        """The next answer header from process i: polls for SPIN seconds, then sleeps in select for at most
        POLL at a time, so that a silent process is noticed and a Ctrl-C is honoured (signal handlers run
        between the polls)."""
        sock = self._sockets[i]
        head = _receive(sock, ANSWER.size, SPIN) if self._readable(sock, 0.0) else b""
        while not head:
            if head is None:
                raise _Lost(self._how(i, "closed its socket"))
            silent = time.monotonic() - self._ordered_at
            limit = HURRY_AFTER if self.hurry else SILENT_AFTER
            if silent >= limit:
                raise _Lost(
                    f"the NumPy engine's worker process {self._processes[i].pid} has not answered for "
                    f"{silent:.0f} s (stopped?); it is ended"
                )
            if self._readable(sock, min(POLL, limit - silent)):
                head = _receive(sock, ANSWER.size)
        return head

    @staticmethod
    def _readable(sock: socket.socket, timeout: float) -> bool:
        try:
            readable, _, _ = select.select([sock], [], [], timeout)
        except (OSError, ValueError):  # a closed socket: recv says so
            return True
        return bool(readable)

    def _how(self, i: int, what: str) -> str:
        process = self._processes[i]
        try:
            code = process.wait(timeout=0.2) if what == "closed its socket" else process.poll()
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and what == "closed its socket":
            what = f"exited with code {code}"
        return f"the NumPy engine's worker process {process.pid} {what}"

    def _give_up(self, message: str) -> None:
        """End every process at once (a silent one would not stop when asked), count the loss, and say in one
        line what happened and what the engine does now."""
        for process in self._processes:
            if process.poll() is None:
                process.kill()
        self.close()
        self.failures += 1
        if self.failures >= MAX_FAILURES:
            self.off = True
        then = (
            "every worker runs in this process from now on"
            if self.off
            else "its pieces ran in this process, and a new one starts"
        )
        warn(f"{message}; {then} (the same results)")

    def close(self) -> None:
        """Stop the processes (each exits when its socket closes) and free the batch block."""
        for sock in self._sockets:
            try:
                sock.sendall(ORDER.pack(STOP, 0, 0, 0))
            except OSError:
                pass
            sock.close()
        for process in self._processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes, self._sockets, self._answering = [], [], []
        if self._block is not None:
            self._block.close()
            self._block, self.batch, self.capacity = None, {}, 0


# --- the process's side -----------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """A worker process: answers orders until its socket closes. Whatever goes wrong is told to the engine over
    the socket, never printed (stderr goes nowhere): the engine's one line names it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the engine's to handle; it closes us
    sock = socket.socket(fileno=int(argv[0]))
    try:
        return _serve(sock, argv)
    except OSError:  # the engine is gone (EPIPE, ECONNRESET): nobody to answer
        return 0
    except BaseException as exc:  # noqa: BLE001 - start-up failed (no memory...): tell the engine, then exit
        error = f"{type(exc).__name__}: {exc}".encode()[:4000]
        try:
            sock.sendall(ANSWER.pack(0, 0.0, 0, len(error)) + error)  # 0: the answer the engine awaits at start
        except OSError:
            pass
        return 1


def _serve(sock: socket.socket, argv: list[str]) -> int:
    from lenet5.engines.numpy.model import Network, parameter_count

    state_fd, batch_fd = map(int, argv[1:3])
    model_name, dtype, label_smoothing = argv[3], np.dtype(argv[4]), float(argv[5])
    index, count, capacity = map(int, argv[6:9])
    image_shape = tuple(map(int, argv[9:]))

    state = SharedBlock(state_layout(parameter_count(model_name), count, dtype), state_fd).arrays
    batch = SharedBlock(batch_layout(capacity, image_shape, dtype), batch_fd).arrays
    net = Network(model_name, dtype, params=state["params"])
    worker = Worker(net, state["grads"][index], label_smoothing)
    sock.sendall(ANSWER.pack(0, 0.0, 0, 0))  # ready
    while True:
        head = _receive(sock, ORDER.size, SPIN)
        if head is None:
            return 0
        what, sequence, total, n_pieces = ORDER.unpack(head)
        if what == STOP:
            return 0
        raw = _receive(sock, n_pieces * PIECE.size) if n_pieces else b""
        if raw is None:
            return 0
        pieces = [PIECE.unpack_from(raw, k * PIECE.size) for k in range(n_pieces)]
        loss, n_correct, error = 0.0, 0, b""
        try:
            if what == TRAIN:
                loss, n_correct = worker.loss_and_grad(batch["x"], batch["y"], pieces, total)
            elif what == LOGITS:
                worker.logits(batch["x"], pieces, batch["logits"])
            else:
                raise ValueError(f"unknown order {what}")
        except Exception as exc:  # told to the engine, which does these pieces itself
            error = f"{type(exc).__name__}: {exc}".encode()[:4000]
        sock.sendall(ANSWER.pack(sequence, loss, n_correct, len(error)) + error)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
