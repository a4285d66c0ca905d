"""Distorted training batches made ahead of time in a second process, while the engine trains.

The distortions of an epoch are a pure function of the training images, the batch size, the augmentation
settings, the seed and the epoch (``EpochPlan.draw(epoch_rng(seed, epoch))``: the order, then one generator
per batch). So another process can make them: the same function on the same inputs gives the same bits as
making them in the training thread, and only finished uint8 arrays come back (a chunk of CHUNK_BATCHES
batches at a time, through a pipe).

The process is a fresh interpreter (``python -m lenet5.data.prefetch``, like the NumPy engine's workers: no
copy of the trainer's threads or engine state, and no second run of the caller's main script, as a
multiprocessing ``spawn`` would do), in a session of its own so that Ctrl-C at the terminal reaches the
trainer only, which decides when a run stops; closing this stops the process. It gets the training images
once, pickled over a socket pair (arrays this process made, never anything read from disk); from then on the
trainer's process asks for chunks in the order it will train on them, keeping up to AHEAD_CHUNKS chunks asked
for, across epoch boundaries (while the last batches of an epoch and its validation run, the next epoch's
first chunks are being made). A process that finds its socket closed (the trainer's process ended) exits.

Failures never hang and never change a bit: when the process dies (killed, out of memory), reports an
error, or gives no chunk for STALL_SECONDS, the rest of the run is distorted in the training thread, from
the very batch that was missing, after one warning line.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import weakref
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import Connection

import numpy as np

from lenet5.config import AugmentConfig
from lenet5.data.augment import make_augmenter
from lenet5.data.datasets import EpochPlan, draw_batches, epoch_rng

CHUNK_BATCHES = 16  # batches per message: ~1 MB of uint8 at batch 64, ~15 ms of distortion
AHEAD_CHUNKS = 8  # chunks asked for ahead of the one being trained on (~8,000 images at batch 64)
STALL_SECONDS = 120.0  # no chunk for this long from a live process: give up on it (a stopped or starved process)
POLL_SECONDS = 0.05  # how often a wait for a chunk checks that the process is still alive
CLOSE_SECONDS = 2.0  # how long close() waits for the process to leave before it is terminated


class PrefetchLost(Exception):
    """The distortion process can give no more chunks; the message says why."""


def distort_range(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    epoch: int,
    transform,
    start_batch: int,
    stop_batch: int,
    plan: EpochPlan | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Batches ``start_batch`` up to ``stop_batch`` of training epoch ``epoch``, distorted, stacked:
    uint8 (M, 28, 28) images and int64 (M,) labels, exactly the batches ``iterate_batches`` would hand the
    trainer (before normalization). ``plan``: the epoch's plan when already drawn (it is the same)."""
    plan = plan or EpochPlan.draw(len(images), epoch_rng(seed, epoch), transform is not None)
    pairs = list(draw_batches(images, labels, batch_size, plan, transform, start_batch, stop_batch))
    if not pairs:
        return images[:0].copy(), labels[:0].astype(np.int64)
    return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])


def serve_chunks(conn) -> int:
    """The distortion process: read the setup ``(images, labels, batch_size, seed, augment config)``, then
    answer each request ``(epoch, start_batch, stop_batch)`` with ``("chunk", epoch, start_batch, images,
    labels)``, until ``None`` or the socket closes. An error is sent back as ``("error", text)`` and ends it."""
    try:
        images, labels, batch_size, seed, cfg = conn.recv()
        transform = make_augmenter(cfg)
        plans: dict[int, EpochPlan] = {}
        while (request := conn.recv()) is not None:
            epoch, start, stop = request
            if epoch not in plans:
                plans.clear()  # one epoch at a time: the permutation is 440 KB
                plans[epoch] = EpochPlan.draw(len(images), epoch_rng(seed, epoch), True)
            x, y = distort_range(images, labels, batch_size, seed, epoch, transform, start, stop, plans[epoch])
            conn.send(("chunk", epoch, start, x, y))
    except (EOFError, OSError):  # the trainer's process closed the socket or ended: nobody to answer
        return 0
    except BaseException as exc:  # noqa: BLE001 - anything else: the trainer falls back, and says why
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"[:4000]))
        return 1
    return 0


def start_process() -> tuple[subprocess.Popen, Connection]:
    """Start ``python -m lenet5.data.prefetch`` with one end of a socket pair; return it and the other end.
    OSError or SubprocessError where the machine has no process or file descriptor left."""
    from lenet5.child import start_child

    process, ours = start_child("lenet5.data.prefetch", [])
    return process, Connection(ours.detach())


class PrefetchedDistortions:
    """The distorted batches of a run's epochs ``first_epoch``..``last_epoch`` (``batches_per_epoch`` each,
    the first epoch from ``first_batch``: a resumed run), made in a second process.

    ``batches(epoch, start_batch)`` yields the (uint8 images, int64 labels) batches of one epoch and must be
    called for the epochs in order, as planned; ``close()`` stops the process (also done when this object is
    garbage-collected). ``log`` gets the one warning line of a fallback.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        seed: int,
        cfg: AugmentConfig,
        *,
        batches_per_epoch: int,
        first_epoch: int,
        first_batch: int,
        last_epoch: int,
        log,
    ):
        self.images, self.labels, self.batch_size, self.seed, self.cfg = images, labels, batch_size, seed, cfg
        self.batches_per_epoch, self.log = batches_per_epoch, log
        self.requests = deque(
            (epoch, start, min(start + CHUNK_BATCHES, batches_per_epoch))
            for epoch in range(first_epoch, last_epoch + 1)
            for start in range(first_batch if epoch == first_epoch else 0, batches_per_epoch, CHUNK_BATCHES)
        )
        self.asked: deque[tuple[int, int, int]] = deque()  # sent, not yet received, in order
        self.transform = None  # the in-thread augmenter, once the process is lost
        self.process, self.conn, self._finalizer = None, None, None
        try:
            self.process, self.conn = start_process()
            self._finalizer = weakref.finalize(self, stop_process, self.process, self.conn)
            self.conn.send((images, labels, batch_size, seed, cfg))
        except (OSError, subprocess.SubprocessError) as exc:
            self._lose(f"it could not be started: {getattr(exc, 'strerror', None) or exc}", first_epoch, first_batch)
        self._ask()

    # --------------------------------------------------------------------------------------------- use
    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of ``epoch`` from ``start_batch`` on: made ahead when the process is well, in this
        thread from the first missing batch on when it is not (the same bits either way)."""
        batch, size = start_batch, self.batch_size
        while self.transform is None and batch < self.batches_per_epoch:
            try:
                x, y = self._next_chunk(epoch, batch)
            except PrefetchLost as exc:
                self._lose(str(exc), epoch, batch)
                break
            for at in range(0, len(y), size):
                yield x[at : at + size], y[at : at + size]
                batch += 1
        if batch < self.batches_per_epoch:
            plan = EpochPlan.draw(len(self.images), epoch_rng(self.seed, epoch), True)
            stop = self.batches_per_epoch
            yield from draw_batches(self.images, self.labels, size, plan, self.transform, batch, stop)

    def close(self) -> None:
        """Stop the process (a chunk in the making is dropped); safe to call twice."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> PrefetchedDistortions:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ inside
    def _ask(self) -> None:
        """Keep AHEAD_CHUNKS chunks asked for."""
        while self.transform is None and self.requests and len(self.asked) < AHEAD_CHUNKS:
            request = self.requests.popleft()
            try:
                self.conn.send(request)
            except OSError:  # the process is gone; the wait for its chunk says so
                pass
            self.asked.append(request)

    def _next_chunk(self, epoch: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """The chunk that starts at ``batch`` of ``epoch``: the next one asked for, or PrefetchLost."""
        if not self.asked or self.asked[0][:2] != (epoch, batch):
            raise PrefetchLost(f"epoch {epoch} from batch {batch} was not planned")
        x, y = self._receive(epoch, batch)
        self.asked.popleft()
        self._ask()
        return x, y

    def _receive(self, epoch: int, start: int) -> tuple[np.ndarray, np.ndarray]:
        """Wait for the next message: a chunk, or PrefetchLost when the process has died, failed or stalled."""
        deadline = time.monotonic() + STALL_SECONDS
        try:
            while not self.conn.poll(POLL_SECONDS):
                if self.process.poll() is not None and not self.conn.poll(0):
                    raise PrefetchLost(f"it ended with {describe_exit(self.process.returncode)}")
                if time.monotonic() > deadline:
                    raise PrefetchLost(f"it gave no batches for {STALL_SECONDS:.0f} s")
            message = self.conn.recv()
        except (EOFError, OSError):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(CLOSE_SECONDS)
            raise PrefetchLost(f"it ended with {describe_exit(self.process.returncode)}") from None
        if message[0] == "error":
            raise PrefetchLost(f"it failed: {message[1]}")
        _, got_epoch, got_start, x, y = message
        if (got_epoch, got_start) != (epoch, start):
            raise PrefetchLost(f"it sent epoch {got_epoch} batch {got_start}, expected epoch {epoch} batch {start}")
        return x, y

    def _lose(self, why: str, epoch: int, batch: int) -> None:
        """Give up on the process: warn once, stop it, and make every batch from here on in this thread."""
        self.log(
            f"warning: the process making distorted batches ahead stopped ({why}); distorting in the training "
            f"process from epoch {epoch}, batch {batch} on (the same distortions, more slowly)"
        )
        if self.process is not None:
            self.close()
        self.asked.clear()
        self.requests.clear()
        self.transform = make_augmenter(self.cfg)


def stop_process(process: subprocess.Popen, conn: Connection) -> None:
    """Ask the process to leave and close the socket (it also leaves at the closed socket); kill it if it is
    still there after CLOSE_SECONDS (stopped, or in the middle of a long chunk)."""
    with contextlib.suppress(OSError, ValueError):
        conn.send(None)
    with contextlib.suppress(OSError):
        conn.close()
    try:
        process.wait(CLOSE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle; it closes us
    sys.exit(serve_chunks(Connection(int(sys.argv[1]))))
