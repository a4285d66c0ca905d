"""A normal client's latency and success rate while other clients hold idle connections open.

    python benchmarks/serve_idle.py [--model PATH] [--idle 200] [--seconds 20] [--no-reconnect]

Starts the real server (`python -m lenet5 serve --log-level warning`) on a free port of 127.0.0.1 (an
untrained modern LeNet-5 unless --model is given: the time does not depend on the weights), then opens --idle
connections that never finish a request: half connect and send nothing, half send a request line and one
header and then nothing. Whenever the server closes one, it is opened again at once (a client that keeps the
pressure on; --no-reconnect leaves it closed). Meanwhile a normal client sends, one after another for
--seconds, GET /healthz and a POST /predict upload of a 280x280 PNG drawing (what the page sends), each on a
new connection, with a 10 s timeout. Reported per request kind: how many, the share answered 200, p50 and p99
latency of all of them (a failure counts with the time it took), the statuses; and how many idle connections
the server closed. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import free_port, latency_summary, payloads, start_server, untrained_checkpoint  # noqa: E402

HALF_SENT = b"POST /predict HTTP/1.1\r\nHost: x\r\n"


class IdleClients:
    """--idle connections held open in one thread (a selector); reopened when the server closes one."""

    def __init__(self, port: int, n: int, reconnect: bool) -> None:
        self.port, self.n, self.reconnect = port, n, reconnect
        self.closed_by_server = 0
        self.open_failures = 0
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, i: int) -> None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            if i % 2:
                s.sendall(HALF_SENT)
        except OSError:
            self.open_failures += 1
            return
        s.setblocking(False)
        self._sel.register(s, selectors.EVENT_READ, i)

    def start(self) -> None:
        for i in range(self.n):
            self._open(i)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.1):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:  # the server closed it (or answered and closed: a 408, a 503)
                    self._sel.unregister(s)
                    s.close()
                    self.closed_by_server += 1
                    if self.reconnect:
                        self._open(key.data)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()
        self._sel.close()

    @property
    def held(self) -> int:
        return len(self._sel.get_map())


def normal_client(url: str, seconds: float) -> dict:
    import httpx

    png = payloads()["png 280x280"]
    results: dict[str, list[tuple[float, int]]] = {"healthz": [], "predict png": []}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name in results:
            t = time.perf_counter()
            try:
                with httpx.Client(base_url=url, timeout=10) as client:  # a new connection each time
                    r = client.get("/healthz") if name == "healthz" else client.post("/predict", **png)
                status = r.status_code
            except httpx.TransportError:
                status = 0  # no answer in time, or the connection was refused or reset
            results[name].append((time.perf_counter() - t, status))
    return {name: latency_summary(rows, only_ok=False) for name, rows in results.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint to serve (default: an untrained one in a temp folder)")
    p.add_argument("--idle", type=int, default=200, help="idle connections held open (default 200)")
    p.add_argument("--seconds", type=float, default=20.0, help="how long the normal client runs (default 20)")
    p.add_argument(
        "--no-reconnect",
        dest="reconnect",
        action="store_false",
        help="do not reopen an idle connection the server closed",
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or untrained_checkpoint(Path(tmp))
        port = free_port()
        server = start_server(model, port)
        url = f"http://127.0.0.1:{port}"
        idle = IdleClients(port, args.idle, args.reconnect)
        try:
            normal_client(url, 1.0)  # warm-up: imports, thread pool
            idle.start()
            time.sleep(1.0)  # the server has accepted them
            report = normal_client(url, args.seconds)
            held = idle.held
        finally:
            idle.stop()
            server.terminate()
            stop = time.monotonic()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            stop_s = time.monotonic() - stop
    print(
        json.dumps(
            {
                "command": " ".join([sys.executable, *sys.argv]),
                "cpus": os.cpu_count(),
                "idle_connections": args.idle,
                "reconnect": args.reconnect,
                "seconds": args.seconds,
                "idle_held_at_end": held,
                "idle_closed_by_server": idle.closed_by_server,
                "idle_open_failures": idle.open_failures,
                "server_stop_seconds": round(stop_s, 2),
                **report,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
