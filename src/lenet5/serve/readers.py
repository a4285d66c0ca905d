"""Uploaded images read in worker processes, so that reading them does not share the server's one GIL.

Reading a drawing (decoding, cleaning the page, the network's passes over the candidate cuts) is 7-8 ms of
Python and NumPy; in the server's threads those readings take turns on one interpreter lock with each other
and with the event loop. ``ReaderPool`` keeps ``count`` processes (``python -m lenet5.serve.reading``, a fresh
interpreter each, like the NumPy engine's workers), each with the model loaded once; the event loop hands one
the image's bytes over a socket pair and awaits its answer (reading.py: raw bytes and JSON, nothing pickled).

A worker is never what stops the server:

- one that dies (killed, out of memory) while it reads an image gives that request a 503 with one line saying
  how it ended; a new process takes its place, and requests wait for a free one meanwhile;
- one that takes longer than READ_TIMEOUT_S for an image is killed and replaced the same way (a stopped
  process, or a bug that never ends);
- one that cannot be started (no memory, no processes or file descriptors left) is replaced by a slot that
  reads in the server's threads, as without workers, after one warning line.

The processes run in their own session (Ctrl-C at the terminal reaches the server, which stops them) and
leave when their socket closes, so they also go when the server is killed. Images over SMALL_PIXELS (the
server's large lane) use at most ``count - 1`` of the processes, so that a drawing never waits behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import weakref
from pathlib import Path

import numpy as np

from lenet5.serve.reading import ANSWER, FIELD, REQUEST, answer_for

SUPPORTED = os.name == "posix"  # a socket pair passed to a child process, asyncio's Unix sockets
START_TIMEOUT_S = 120.0  # a process must have loaded its model by then (a busy machine, a committee of ONNX models)
READ_TIMEOUT_S = 60.0  # a 40-megapixel image takes a few seconds; a process silent for this long is replaced
CLOSE_SECONDS = 2.0  # how long close() waits for a process to leave before it is killed
log = logging.getLogger("uvicorn.error")


class WorkerLost(Exception):
    """The worker process can give no answer; the message says why, in words for the client."""


class Worker:
    """One reading process, seen from the event loop: ``read`` hands it an image and awaits the answer."""

    def __init__(self, process: subprocess.Popen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.process, self.reader, self.writer = process, reader, writer

    @classmethod
    async def start(cls, paths: list[Path], engine: str) -> Worker:
        """Start a process and wait until its model is loaded; WorkerLost (with why) when it cannot be had."""
        try:
            process, ours = spawn(paths, engine)
        except (OSError, subprocess.SubprocessError) as exc:
            raise WorkerLost(f"it could not be started ({getattr(exc, 'strerror', None) or exc})") from None
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours)
        except BaseException:
            ours.close()
            kill(process)
            raise
        worker = cls(process, reader, writer)
        try:
            status, doc, _ = await asyncio.wait_for(worker._answer(), START_TIMEOUT_S)
        except asyncio.TimeoutError:
            why = f"it had not loaded the model after {START_TIMEOUT_S:g} s"
        except WorkerLost:
            why = f"it ended before it was ready ({describe_exit(process.poll())})"
        except BaseException:
            worker.abandon()
            raise
        else:
            if status == 200:
                return worker
            why = f"it could not load the model: {doc.get('detail')}"
        worker.abandon()
        raise WorkerLost(why)

    def alive(self) -> bool:
        return self.process.poll() is None

    def abandon(self) -> None:
        """Its exchange was cut short (the request was cancelled): what it sends next is unknown, so it goes."""
        kill(self.process)
        with contextlib.suppress(Exception):
            self.writer.close()

    async def read(self, data: bytes, name: str) -> tuple[int, dict, list[np.ndarray]]:
        """The worker's answer for one image; WorkerLost when it dies or takes longer than READ_TIMEOUT_S (it is
        killed then: what it was doing is unknown)."""
        encoded = name.encode("utf-8", "replace")
        try:
            self.writer.write(REQUEST.pack(len(encoded), len(data)) + encoded)
            self.writer.write(data)
            return await asyncio.wait_for(self._exchange(), READ_TIMEOUT_S)
        except asyncio.TimeoutError:
            kill(self.process)
            raise WorkerLost(
                f"reading this image took longer than {READ_TIMEOUT_S:g} s, and the process reading it was stopped"
            ) from None

    async def _exchange(self) -> tuple[int, dict, list[np.ndarray]]:
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            pass  # the answer's read says how the process ended
        return await self._answer()

    async def _answer(self) -> tuple[int, dict, list[np.ndarray]]:
        try:
            status, n_doc, n_raw = ANSWER.unpack(await self.reader.readexactly(ANSWER.size))
            doc = json.loads(await self.reader.readexactly(n_doc))
            raw = await self.reader.readexactly(n_raw) if n_raw else b""
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            raise WorkerLost(f"the process reading this image ended ({await self._how_it_ended()})") from None
        fields = list(np.frombuffer(raw, np.uint8).reshape(-1, *FIELD)) if raw else []
        return status, doc, fields

    async def _how_it_ended(self) -> str:
        for _ in range(int(CLOSE_SECONDS / 0.01)):  # the socket closes a moment before the exit status is there
            if self.process.poll() is not None:
                return describe_exit(self.process.returncode)
            await asyncio.sleep(0.01)
        kill(self.process)
        return "its socket closed"

    async def close(self) -> None:
        """Let the process leave (it does at the closed socket); kill it after CLOSE_SECONDS."""
        with contextlib.suppress(Exception):
            self.writer.close()
        for _ in range(int(CLOSE_SECONDS / 0.02)):
            if self.process.poll() is not None:
                return
            await asyncio.sleep(0.02)
        kill(self.process)


class InThread:
    """A slot that reads in the server's threads (a worker that could not be started)."""

    def __init__(self, reader) -> None:
        self.reader = reader

    def alive(self) -> bool:
        return True

    def abandon(self) -> None:
        pass

    async def read(self, data: bytes, name: str) -> tuple[int, dict, list[np.ndarray]]:
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(answer_for, self.reader, data, name)

    async def close(self) -> None:
        pass


class ReaderPool:
    """``count`` worker processes reading uploaded images, each with ``load_reader(paths, engine)``; ``here``
    (the server's own reader) reads in the server's threads in the place of a worker that cannot be had.

    Lives on the event loop (no locks): ``start`` before the first request, ``read`` from request handlers,
    ``close`` at shutdown. Images marked large use at most ``count - 1`` workers at once (the one worker when
    there is one)."""

    def __init__(self, paths: list[Path], engine: str, count: int, here) -> None:
        if count < 1:
            raise ValueError(f"a pool needs at least 1 worker, got {count}")
        self.paths, self.engine, self.count, self.here = list(paths), engine, count, here
        self.large_most = max(1, count - 1)
        self.idle: list = []  # Workers (or InThread slots) ready for an image, the last used last
        self.large_busy = 0
        self._waiters: list[asyncio.Future] = []
        self._processes: list[subprocess.Popen] = []  # the processes started, for the finalizer
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._finalizer = weakref.finalize(self, kill_all, self._processes)

    def pids(self) -> list[int]:
        """The worker processes running now."""
        return [p.pid for p in self._processes if p.poll() is None]

    async def start(self) -> None:
        """Start every worker at once and wait for them; one that cannot be had becomes an in-thread slot."""
        self.idle.extend(await asyncio.gather(*(self._new_slot() for _ in range(self.count))))

    async def read(self, data: bytes, name: str, large: bool = False) -> tuple[int, dict, list[np.ndarray]]:
        """(status, the reading or {"detail"}, the fields) for one image, as answer_for gives them; a worker
        lost on the way is a 503 answer that says how, and a new worker takes its place."""
        slot = await self._take(large)
        done = False
        try:
            answer = await slot.read(data, name)
            done = True
            return answer
        except WorkerLost as exc:
            log.warning("%s; starting a new one (the request got a 503)", exc)
            return 503, {"detail": f"{exc}; a new one is starting: try again shortly"}, []
        finally:
            self.large_busy -= large
            if not done:  # cancelled or lost half-way: its next answer could be this one's
                slot.abandon()
            if slot.alive():
                self.idle.append(slot)
            else:
                self._replace()
            self._wake()

    async def close(self) -> None:
        """Stop every worker (also those starting); the pool is not used after."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(slot.close() for slot in self.idle), return_exceptions=True)
        self.idle.clear()
        self._finalizer()

    async def _take(self, large: bool):
        while True:
            if self.idle and (not large or self.large_busy < self.large_most):
                slot = self.idle.pop()
                if slot.alive():
                    self.large_busy += large
                    return slot
                log.warning(
                    "a process reading images ended (%s); starting a new one", describe_exit(slot.process.poll())
                )
                self._replace()  # it died while idle: no request was lost
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def _wake(self) -> None:
        """Every request waiting for a worker looks again."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _replace(self) -> None:
        """A new slot in the place of a lost worker, started in the background."""
        if self._closed:
            return

        async def replace() -> None:
            slot = await self._new_slot()
            if self._closed:
                await slot.close()
                return
            self.idle.append(slot)
            self._wake()

        task = asyncio.get_running_loop().create_task(replace())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _new_slot(self):
        try:
            worker = await Worker.start(self.paths, self.engine)
        except WorkerLost as exc:
            log.warning("a process to read images could not be had (%s); reading in the server's threads instead", exc)
            return InThread(self.here)
        self._processes[:] = [p for p in self._processes if p.poll() is None] + [worker.process]
        return worker


def spawn(paths: list[Path], engine: str) -> tuple[subprocess.Popen, socket.socket]:
    """Start ``python -m lenet5.serve.reading`` with one end of a socket pair; return it and the other end."""
    from lenet5.child import start_child

    process, ours = start_child("lenet5.serve.reading", [engine, *map(str, paths)], quiet=False)
    return process, ours


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(OSError):
            process.kill()
        process.wait()


def kill_all(processes: list[subprocess.Popen]) -> None:
    """Kill the processes still running (the server is leaving without having closed its pool)."""
    for process in processes:
        kill(process)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"signal {name}" + (": killed, or out of memory?" if -code == signal.SIGKILL else "")
    return f"exit code {code}"
