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


@contextlib.contextmanager
def running_server(checkpoint: Path, *extra: str, timeout: float = 60.0):
    """`python -m lenet5 serve --model checkpoint *extra` on a free port; yields (base URL, server pid).

    The server's output goes to a file, never a pipe: a pipe nobody reads could fill up and stall it.
    """
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-m", "lenet5", "serve", "--model", str(checkpoint), "--port", str(port),
                                 "--log-level", "warning", *extra], stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"server exited with {proc.returncode}: {log.read().decode(errors='replace')}")
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not answer /healthz in time")
                time.sleep(0.1)
            yield url, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
