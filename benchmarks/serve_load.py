"""Throughput and latency of `POST /predict` on a real `lenet5 serve`, from a second process on 127.0.0.1.

    python benchmarks/serve_load.py [--model PATH] [--requests 2000] [--concurrency 8]

The server runs as `python -m lenet5 serve --log-level warning` in its own process; this process is the
client (httpx, asyncio, --concurrency requests in flight on keep-alive connections). Two payloads, each
--requests requests after 50 untimed ones:
  json pixels    {"pixels": 28x28} of a real-looking digit (no image decoding on the server);
  png 280x280    a multipart upload of a 280x280 PNG drawing, what the page sends (decode + prepare).
Reported: requests/s, p50/p99/max latency, and the share of CPU time taken by processes other than the
server and this client (from /proc/stat; >15% is marked noisy, see MEASURING.md). Client and server share
the machine's cores, so the client's own CPU use lowers the figure. Without --model an untrained checkpoint
is used: the time does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import NOISY, cpu_jiffies, process_jiffies


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def payloads() -> dict[str, dict]:
    import numpy as np
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(canvas).line([(70, 60), (210, 60), (125, 240)], fill=255, width=20, joint="curve")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    pixels = np.asarray(canvas.resize((28, 28), Image.Resampling.BOX)).tolist()
    return {
        "json pixels": {"json": {"pixels": pixels}},
        "png 280x280": {"files": {"file": ("canvas.png", buf.getvalue(), "image/png")}},
    }


async def load(url: str, kwargs: dict, n: int, concurrency: int) -> tuple[float, list[float]]:
    import httpx

    latencies: list[float] = []
    remaining = n
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                r = await client.post("/predict", **kwargs)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise SystemExit(f"/predict answered {r.status_code}: {r.text[:200]}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, latencies


def start_server(model: str, port: int) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, "-m", "lenet5", "serve", "--model", model, "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("server did not start in 30 s")


def latency_summary(rows: list[tuple[float, int]], only_ok: bool = True) -> dict:
    """(seconds, HTTP status or 0 for no answer) per request -> requests, statuses, the share answered 200, and
    p50/p99/max latency in ms, of the 200s (``only_ok``) or of every request."""
    statuses: dict[str, int] = {}
    for _, s in rows:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    out = {"requests": len(rows), "statuses": statuses, "success": round(statuses.get("200", 0) / max(1, len(rows)), 4)}
    lat = sorted(t for t, s in rows if s == 200 or not only_ok)
    if lat:
        p99 = lat[max(0, math.ceil(0.99 * len(lat)) - 1)]  # nearest rank
        out.update(
            p50_ms=round(1000 * statistics.median(lat), 1), p99_ms=round(1000 * p99, 1), max_ms=round(1000 * lat[-1], 1)
        )
    return out


def untrained_checkpoint(folder: Path) -> str:
    from lenet5.checkpoint import save_checkpoint
    from lenet5.config import ModelConfig, OptimizerConfig
    from lenet5.engines import create_engine

    engine = create_engine("numpy", ModelConfig(), OptimizerConfig(), seed=0, threads=1)
    path = str(folder / "model.safetensors")
    save_checkpoint(path, engine.state_dict(), engine="numpy", model="modern")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint to serve (default: an untrained one in a temp folder)")
    p.add_argument("--requests", type=int, default=2000, help="timed requests per payload (default 2000)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or untrained_checkpoint(Path(tmp))
        port = free_port()
        server = start_server(model, port)
        url = f"http://127.0.0.1:{port}"
        try:
            for name, kwargs in payloads().items():
                asyncio.run(load(url, kwargs, 50, args.concurrency))  # warm-up
                busy0, total0 = cpu_jiffies()
                ours0 = process_jiffies(server.pid) + process_jiffies(os.getpid())
                seconds, lat = asyncio.run(load(url, kwargs, args.requests, args.concurrency))
                busy1, total1 = cpu_jiffies()
                ours = process_jiffies(server.pid) + process_jiffies(os.getpid()) - ours0
                others = max(0, busy1 - busy0 - ours) / max(1, total1 - total0)
                lat.sort()
                rows.append(
                    (
                        name,
                        args.requests / seconds,
                        statistics.median(lat),
                        lat[int(0.99 * (len(lat) - 1))],
                        lat[-1],
                        others,
                    )
                )
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"{os.cpu_count()} CPUs shared by server and client; {args.requests} requests per payload, "
        f"{args.concurrency} in flight, keep-alive, server log level warning"
    )
    print(f"{'payload':<14}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'others':>9}")
    for name, rps, p50, p99, worst, others in rows:
        flag = "  noisy" if others > NOISY else ""
        print(f"{name:<14}{rps:>8.0f}{1000 * p50:>9.1f}{1000 * p99:>9.1f}{1000 * worst:>9.1f}{others:>8.0%}{flag}")


if __name__ == "__main__":
    main()
