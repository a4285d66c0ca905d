"""Start the real `lenet5 serve` for tests: a free port on 127.0.0.1, wait for /healthz, stop it afterwards."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_pids(pid: int) -> list[int]:
    """A server's running worker processes: its children that have not ended (zombies left out)."""
    pids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:  # a thread that ended meanwhile
            pass
    return [p for p in pids if not ended(p)]


def ended(pid: int) -> bool:
    """True once pid has exited (gone, or a zombie nobody has waited for yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def wait_for_workers(pid: int, n: int, seconds: float = 60.0, besides: tuple[int, ...] = ()) -> list[int]:
    """The server's worker processes once there are ``n`` of them, none of them in ``besides`` (replaced
    ones); RuntimeError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        pids = worker_pids(pid)
        if len(pids) == n and not set(pids) & set(besides):
            return pids
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server has workers {pids} after {seconds:g} s, not {n} new ones")
        time.sleep(0.05)


def wait_until_healthy(url: str, seconds: float, proc: subprocess.Popen | None = None, log=None) -> None:
    """Poll GET /healthz until it answers 200; RuntimeError after ``seconds`` or when ``proc`` has exited."""
    deadline = time.monotonic() + seconds
    while True:
        if proc is not None and proc.poll() is not None:
            text = ""
            if log is not None:
                log.seek(0)
                text = log.read().decode(errors="replace")
            raise RuntimeError(f"server exited with {proc.returncode}: {text}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer /healthz within {seconds:g} s")
        time.sleep(0.1)


@contextlib.contextmanager
def running_server(checkpoint: Path, *extra: str, timeout: float = 60.0, log=None, preexec_fn=None):
    """`python -m lenet5 serve --model checkpoint *extra` on a free port; yields (base URL, server pid).

    The server's output goes to a file, never a pipe: a pipe nobody reads could fill up and stall it. Pass
    ``log`` (a binary file) to read that output yourself; ``preexec_fn`` runs in the child before the server
    starts (e.g. to set a resource limit).
    """
    port = free_port()
    with contextlib.ExitStack() as stack:
        log = log if log is not None else stack.enter_context(tempfile.TemporaryFile())
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lenet5",
                "serve",
                "--model",
                str(checkpoint),
                "--port",
                str(port),
                "--log-level",
                "warning",
                *extra,
            ],
            stdout=log,
            stderr=log,
            preexec_fn=preexec_fn,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(url, timeout, proc, log)
            yield url, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
