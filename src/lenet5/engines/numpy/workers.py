"""The NumPy engine's workers: each runs the network on its pieces of a batch; all but the first in a process.

A batch is cut into pieces (engine.py) and dealt to ``threads`` workers. Worker 0 is the engine's own thread;
workers 1, 2, ... are processes (python -m lenet5.engines.numpy.workers). Processes, not threads: NumPy lets go of
the GIL inside a matmul, but a training step is also hundreds of small operations that hold it, and two threads
of this engine trained no faster than one (benchmarks/engine_speed.py: 7.5 s per epoch on one thread, 8.6 s on
two, while two processes each kept their core's pace).

Nothing is pickled. A process shares two blocks of memory with the engine (an anonymous memfd, or an unlinked
temporary file where there is none), both mapped as NumPy arrays:

- the state: the parameters (the engine's Network reads them, its optimizer updates them in place) and one
  gradient buffer per process;
- the batch: images, labels and logits for up to ``capacity`` images. A larger training batch restarts the
  processes with a larger block; logits of more images are computed in rounds of at most ``capacity``.

Orders go over a socket: a fixed binary header, then the pieces as (start, stop) pairs; the answer is the
sequence number, the pieces' summed loss and correct predictions, and an error message if there was one.
Answers to orders of an interrupted step (Ctrl-C) carry an old sequence number and are dropped. A process
that finds its socket closed (the engine closed, or the engine's process died) exits.
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

import numpy as np

from lenet5.errors import Lenet5Error
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


class Worker:
    """One worker's share of a batch: forward and backward over its pieces, into its own gradient buffer."""

    def __init__(self, net, grad: np.ndarray, label_smoothing: float, workspace=None) -> None:
        self.net = net
        self.grad, self.grad_views = grad, net.layer_views(grad)
        self.piece_grad = np.zeros_like(grad)  # a second, third... piece's gradient, added to grad
        self.piece_grad_views = net.layer_views(self.piece_grad)
        self.workspace = workspace or net.new_workspace()  # activations and scratch arrays kept from step to step
        self.label_smoothing = label_smoothing

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray, pieces, total: int) -> tuple[float, int]:
        """Loss and correct predictions of x[a:b] for (a, b) in pieces (loss already divided by total)."""
        loss, n_correct = 0.0, 0
        for j, (a, b) in enumerate(pieces):  # the first piece writes the gradient, later ones add to it
            views = self.grad_views if j == 0 else self.piece_grad_views
            part = self.net.loss_and_grad(x[a:b], y[a:b], views, self.label_smoothing, total, self.workspace)
            if j:
                self.grad += self.piece_grad
            loss, n_correct = loss + part[0], n_correct + part[1]
        return loss, n_correct

    def logits(self, x: np.ndarray, pieces, out: np.ndarray) -> None:
        for a, b in pieces:  # memory stays that of one piece, however many images
            out[a:b] = self.net.forward(x[a:b], keep_caches=False, ws=self.workspace)[0]


# --- shared memory ----------------------------------------------------------------------------------------

def state_layout(n_params: int, processes: int, dtype) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    return {"params": ((n_params,), np.dtype(dtype)), "grads": ((processes, n_params), np.dtype(dtype))}


def batch_layout(capacity: int, image_shape: tuple[int, ...], dtype) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    return {"x": ((capacity, *image_shape), np.dtype(dtype)), "y": ((capacity,), np.dtype(np.int64)),
            "logits": ((capacity, NUM_CLASSES), np.dtype(dtype))}


class SharedBlock:
    """An anonymous file mapped into memory and cut into named arrays; ``fd`` passes it to a process."""

    def __init__(self, layout: dict, fd: int | None = None) -> None:
        offsets, size = {}, 0
        for name, (shape, dtype) in layout.items():
            offsets[name] = size
            size += -(-int(np.prod(shape)) * dtype.itemsize // ALIGN) * ALIGN
        size = max(size, ALIGN)
        self.fd = _anonymous_file(size) if fd is None else fd
        try:
            self._map = mmap.mmap(self.fd, size)
        except OSError:
            self.close()
            raise
        self.arrays = {name: np.frombuffer(self._map, dtype, int(np.prod(shape)), offsets[name]).reshape(shape)
                       for name, (shape, dtype) in layout.items()}

    def close(self) -> None:
        """Close the file; the memory is freed when the last array viewing it is gone."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def shared_block(layout: dict) -> SharedBlock:
    """A new SharedBlock, or one clear error when the system has no memory or file descriptors left for it."""
    try:
        return SharedBlock(layout)
    except OSError as exc:
        raise Lenet5Error(f"could not make shared memory for the NumPy engine's worker processes "
                          f"({exc.strerror or exc}); run with --threads 1") from None


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
    """Exactly n bytes from sock, or None if the other end closed it; polls for up to ``spin`` seconds before
    it sleeps in the kernel (see SPIN)."""
    data = b""
    deadline = time.perf_counter() + spin
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
    return data


# --- the engine's side ------------------------------------------------------------------------------------

class WorkerProcesses:
    """Workers 1..count of a NumpyEngine as processes, started on first use, stopped by close().

    ``state`` is the engine's shared parameters and gradients (state_layout with ``count`` gradient buffers).
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
        self.orders = 0  # orders given since the engine was made: how much work the processes got

    def pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    def usable(self, capacity: int, image_shape: tuple[int, ...]) -> bool:
        """Whether the processes are up for ``capacity`` images of this shape; if they are not, (re)starts them
        without waiting: they take ~0.3 s to import NumPy and build the network, meanwhile the engine's own
        thread does their pieces."""
        if not self._fits(capacity, image_shape):
            self.close()
            self._start(max(capacity, self.capacity), tuple(image_shape))
        if self._answering and self._sequence == 0:  # started: ready once each has answered 0
            readable, _, _ = select.select([self._sockets[i] for i in self._answering], [], [], 0)
            for i in [i for i in self._answering if self._sockets[i] in readable]:
                self._answer(i)
                self._answering.remove(i)
        return not self._answering

    def ready(self, capacity: int, image_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """The batch arrays, for at least ``capacity`` images of this shape, once the processes are up."""
        if not self.usable(capacity, image_shape):
            self.wait()
        return self.batch

    def _fits(self, capacity: int, image_shape: tuple[int, ...]) -> bool:
        return bool(self._processes) and capacity <= self.capacity and self.batch["x"].shape[1:] == tuple(image_shape)

    def _start(self, capacity: int, image_shape: tuple[int, ...]) -> None:
        import lenet5

        self._block = shared_block(batch_layout(capacity, image_shape, self.dtype))
        self.batch, self.capacity = self._block.arrays, capacity
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        root = os.path.dirname(os.path.dirname(os.path.abspath(lenet5.__file__)))  # where lenet5 is imported from
        if os.path.basename(root) not in ("site-packages", "dist-packages"):  # a source tree: the process needs it
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        for index in range(self.count):
            ours, theirs = socket.socketpair()
            args = [sys.executable, "-m", "lenet5.engines.numpy.workers", str(theirs.fileno()), str(self.state.fd),
                    str(self._block.fd), self.model_name, self.dtype.name, repr(self.label_smoothing), str(index),
                    str(self.count), str(capacity), *map(str, image_shape)]
            try:
                process = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           pass_fds=(theirs.fileno(), self.state.fd, self._block.fd))
            except OSError as exc:
                ours.close()
                self.close()
                raise Lenet5Error(f"could not start the NumPy engine's worker process ({exc}); "
                                  f"run with --threads 1") from None
            finally:
                theirs.close()
            self._processes.append(process)
            self._sockets.append(ours)
        self._sequence, self._answering = 0, list(range(self.count))  # each answers 0 once it has built its network

    def order(self, what: int, total: int, plans: list[list[tuple[int, int]]]) -> None:
        """Give plans[i] (pieces of the batch block) to process i; wait() collects the answers."""
        self._sequence = (self._sequence + 1) % 2**32
        for i, pieces in enumerate(plans):
            message = ORDER.pack(what, self._sequence, total, len(pieces))
            message += b"".join(PIECE.pack(a, b) for a, b in pieces)
            self._send(i, message)
        self._answering = list(range(len(plans)))
        self.orders += len(plans)

    def wait(self) -> list[tuple[float, int]]:
        """(loss, correct predictions) of each process given an order, in process order."""
        results = [self._answer(i) for i in self._answering]
        self._answering = []
        return results

    def _send(self, i: int, message: bytes) -> None:
        try:
            self._sockets[i].sendall(message)
        except OSError:
            self._failed(i)

    def _answer(self, i: int) -> tuple[float, int]:
        while True:
            head = _receive(self._sockets[i], ANSWER.size, SPIN)
            if head is None:
                self._failed(i)
            sequence, loss, n_correct, error_bytes = ANSWER.unpack(head)
            error = _receive(self._sockets[i], error_bytes) if error_bytes else b""
            if sequence == self._sequence:  # older answers belong to orders of an interrupted step
                break
        if error:
            raise Lenet5Error(f"the NumPy engine's worker process failed: {error.decode(errors='replace')}")
        return loss, n_correct

    def _failed(self, i: int):
        code = self._processes[i].poll()
        self.close()
        how = "stopped answering" if code is None else f"exited with code {code}"
        raise Lenet5Error(f"the NumPy engine's worker process {how}; run with --threads 1 to train without one")

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
    from lenet5.engines.numpy.model import Network, parameter_count

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the engine's to handle; it closes us
    sock_fd, state_fd, batch_fd = map(int, argv[:3])
    model_name, dtype, label_smoothing = argv[3], np.dtype(argv[4]), float(argv[5])
    index, count, capacity = map(int, argv[6:9])
    image_shape = tuple(map(int, argv[9:]))

    sock = socket.socket(fileno=sock_fd)
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
        except Exception as exc:  # told to the engine, which raises it there
            error = f"{type(exc).__name__}: {exc}".encode()[:4000]
        sock.sendall(ANSWER.pack(sequence, loss, n_correct, len(error)) + error)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
