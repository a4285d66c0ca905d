"""Throughput and latency of `POST /predict` on real `lenet5 serve`s, from a second process on 127.0.0.1:
uploads read in the server's threads (--workers 0) and in worker processes, side by side in one run.

    python benchmarks/serve_load.py [--model PATH] [--workers 0 2] [--rounds 3] [--seconds 5] [--concurrency 8]

One server per --workers value runs as `python -m lenet5 serve --log-level warning --workers N` in its own
process (``auto``: the server's default, one worker per free core); this process is the client (httpx, asyncio,
--concurrency requests in flight on keep-alive connections). Two payloads:
  json pixels    {"pixels": 28x28} of a real-looking digit (no image decoding on the server);
  png 280x280    a multipart upload of a 280x280 PNG drawing, what the page sends (decode + prepare).
After 50 untimed requests to each server and payload, --rounds rounds each time every server in turn (A B A B,
see MEASURING.md) for --seconds per payload. Reported per server: the median requests/s over the rounds,
p50/p99/max latency over all its timed requests, the worker processes it ran, the CPU time the server and its
workers spent per request (less swayed by a busy machine than the rates), and the largest share of CPU time
taken by processes other than the servers (with their workers) and this client in any of its windows (from
/proc/stat; >15% is marked noisy); then, for each server after the first, the median over the rounds of its
requests/s over the first's in the same round. Client and servers share the machine's cores, so the
client's own CPU use lowers the figures. Without --model an untrained checkpoint is used: the time does not
depend on the weights' values.
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

from machine import CLK_TCK, NOISY, cpu_jiffies, process_jiffies


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


async def load(url: str, kwargs: dict, n: int, concurrency: int, seconds: float = 0.0) -> tuple[float, list[float]]:
    """``n`` requests (or, with ``seconds``, as many as are sent in that time) with ``concurrency`` in flight:
    (seconds taken, each request's latency)."""
    import httpx

    latencies: list[float] = []
    remaining = n
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal remaining
            while (time.perf_counter() < deadline) if seconds else remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                r = await client.post("/predict", **kwargs)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise SystemExit(f"/predict answered {r.status_code}: {r.text[:200]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, latencies


def start_server(model: str, port: int, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    import httpx

    chosen = [] if model == "bundled" else ["--model", model]  # bundled: no --model, the bundled reader
    cmd = [sys.executable, "-m", "lenet5", "serve", *chosen, "--port", str(port), "--log-level", "warning"]
    cmd += list(extra)
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


def children(pid: int) -> list[int]:
    """The running child processes of ``pid`` (a server's workers)."""
    pids = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return pids


def family_jiffies(pid: int) -> int:
    """CPU time of a process and of its running children, in jiffies."""
    return process_jiffies(pid) + sum(map(process_jiffies, children(pid)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default=None,
        help="checkpoint to serve, or 'bundled' for the bundled reader (default: an untrained one in a temp folder)",
    )
    p.add_argument(
        "--workers",
        nargs="+",
        default=["0", "2"],
        help="serve --workers of each server to compare, the first being the reference; auto: the server's "
        "default (default: 0 2)",
    )
    p.add_argument("--rounds", type=int, default=3, help="timed windows per server and payload (default 3)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of a timed window (default 5)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    args = p.parse_args()
    names = [f"workers {w}" for w in args.workers]
    stats: dict = {}  # (payload, server) -> {"rps": [...], "lat": [...], "others": [...]}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or untrained_checkpoint(Path(tmp))
        servers = []
        try:
            for w in args.workers:
                extra = () if w == "auto" else ("--workers", w)
                port = free_port()
                servers.append((start_server(model, port, extra), f"http://127.0.0.1:{port}"))
            processes = [len(children(proc.pid)) for proc, _ in servers]
            for name, kwargs in payloads().items():
                for _, url in servers:
                    asyncio.run(load(url, kwargs, 50, args.concurrency))  # warm-up
                for _ in range(args.rounds):
                    for (proc, url), server in zip(servers, names):
                        busy0, total0 = cpu_jiffies()
                        ours0 = sum(family_jiffies(q.pid) for q, _ in servers) + process_jiffies(os.getpid())
                        served0 = family_jiffies(proc.pid)
                        seconds, lat = asyncio.run(load(url, kwargs, 0, args.concurrency, args.seconds))
                        busy1, total1 = cpu_jiffies()
                        ours = sum(family_jiffies(q.pid) for q, _ in servers) + process_jiffies(os.getpid()) - ours0
                        row = stats.setdefault((name, server), {"rps": [], "lat": [], "others": [], "cpu": []})
                        row["rps"].append(len(lat) / seconds)
                        row["lat"] += lat
                        row["others"].append(max(0, busy1 - busy0 - ours) / max(1, total1 - total0))
                        row["cpu"].append((family_jiffies(proc.pid) - served0) / CLK_TCK / max(1, len(lat)))
        finally:
            for proc, _ in servers:
                proc.terminate()
                proc.wait(timeout=10)
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"{os.cpu_count()} CPUs shared by the servers and the client; {args.rounds} rounds of {args.seconds:g} s per "
        f"server and payload, {args.concurrency} in flight, keep-alive, server log level warning"
    )
    head = f"{'payload':<14}{'server':<12}{'procs':>6}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    print(head + f"{'cpu ms':>8}{'others':>9}{'ratio':>8}")
    for name in payloads():
        first = stats[(name, names[0])]["rps"]
        for server, procs in zip(names, processes):
            row = stats[(name, server)]
            lat = sorted(row["lat"])
            p99 = lat[max(0, math.ceil(0.99 * len(lat)) - 1)]
            others = max(row["others"])
            ratio = statistics.median(b / a for a, b in zip(first, row["rps"])) if server != names[0] else 1.0
            flag = "  noisy" if others > NOISY else ""
            print(
                f"{name:<14}{server:<12}{procs:>6}{statistics.median(row['rps']):>8.0f}"
                f"{1000 * statistics.median(lat):>9.1f}{1000 * p99:>9.1f}{1000 * lat[-1]:>9.1f}"
                f"{1000 * statistics.median(row['cpu']):>8.1f}{others:>8.0%}"
                f"{ratio:>8.2f}{flag}"
            )
    print("procs: the server's worker processes; cpu ms: CPU time of the server and its workers per request (median")
    print("over the rounds); others: the most other processes took in a window; ratio: the median over the rounds")
    print(f"of req/s over {names[0]}'s in the same round")


if __name__ == "__main__":
    main()
