"""Small uploads under mixed load: how long a drawing waits while 40-megapixel images are being prepared.

    python benchmarks/serve_mixed.py [--model PATH] [--big-clients 16] [--small-clients 2] [--seconds 40]

Starts the real server (`python -m lenet5 serve --log-level warning`) on a free port of 127.0.0.1 (an
untrained modern LeNet-5 unless --model is given: the time does not depend on the weights). --big-clients
clients each send, one after another, a 6320x6320 grey PNG page with one stroke (39.9 megapixels decoded, about
100 KB sent); --small-clients clients each send, one after another, a 280x280 PNG drawing (about 5 KB, what the
drawing page sends). After --seconds, reported for each kind: requests, statuses, p50/p99/max latency of those
answered 200, and the share of CPU time taken by processes other than the server and this client. Prints one
JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_jiffies, process_jiffies  # noqa: E402
from serve_load import free_port, latency_summary, payloads, start_server, untrained_checkpoint  # noqa: E402
from serve_memory import worst_image  # noqa: E402


def client(url: str, body: bytes, until: float, rows: list) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=120) as c:
        while time.monotonic() < until:
            t = time.perf_counter()
            try:
                status = c.post("/predict", content=body, headers={"Content-Type": "image/png"}).status_code
            except httpx.TransportError:
                status = 0
            rows.append((time.perf_counter() - t, status))
            if status == 503:
                time.sleep(0.5)  # what Retry-After asks for, roughly: a busy answer is not retried at once


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint to serve (default: an untrained one in a temp folder)")
    p.add_argument("--big-clients", type=int, default=16, help="clients sending 40-megapixel PNGs (default 16)")
    p.add_argument("--small-clients", type=int, default=2, help="clients sending 280x280 drawings (default 2)")
    p.add_argument("--seconds", type=float, default=40.0, help="how long the load lasts (default 40)")
    args = p.parse_args()
    big = worst_image("L.png", 6320)
    small = payloads()["png 280x280"]["files"]["file"][1]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or untrained_checkpoint(Path(tmp))
        port = free_port()
        server = start_server(model, port)
        url = f"http://127.0.0.1:{port}"
        try:
            client(url, small, time.monotonic() + 1.0, [])  # warm-up
            busy0, total0 = cpu_jiffies()
            ours0 = process_jiffies(server.pid) + process_jiffies(os.getpid())
            until = time.monotonic() + args.seconds
            big_rows: list = []
            small_rows: list = []
            threads = [
                threading.Thread(target=client, args=(url, big, until, big_rows)) for _ in range(args.big_clients)
            ]
            threads += [
                threading.Thread(target=client, args=(url, small, until, small_rows)) for _ in range(args.small_clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            busy1, total1 = cpu_jiffies()
            ours = process_jiffies(server.pid) + process_jiffies(os.getpid()) - ours0
            others = max(0, busy1 - busy0 - ours) / max(1, total1 - total0)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(
        json.dumps(
            {
                "command": " ".join([sys.executable, *sys.argv]),
                "cpus": os.cpu_count(),
                "big_bytes": len(big),
                "small_bytes": len(small),
                "seconds": args.seconds,
                "others_cpu_share": round(others, 3),
                "small": latency_summary(small_rows),
                "big": latency_summary(big_rows),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
