"""A burst of good and bad requests, mixed, against a running `lenet5 serve`, from this (second) process.

    python benchmarks/service_burst.py --url http://127.0.0.1:8000 [--requests 20000] [--concurrency 64] [--pid PID]

Each of --concurrency workers holds a keep-alive connection (raw HTTP/1.1 on asyncio sockets: the client
costs little CPU, so the server gets most of the machine) and sends requests from a fixed, seeded mix:
good JSON pixels, a good PNG body, a good multipart upload, GET /healthz, and mistakes: malformed JSON,
pixels of the wrong shape, NaN pixels, a wrong Content-Type, an undecodable image, an unknown
path, and a body declared over the 2 MiB limit (only its headers are sent: the 413 must come without it);
and a blank image, which is no mistake: a 200 reading with no digit, unsure.
Every answer's status is checked against the status that kind of request must get.

With --pid, the server's resident memory (VmRSS from /proc/PID/status) is sampled every 0.2 s.
Prints one JSON document: counts per status, mismatches, 5xx, latency p50/p99/max (ms), requests/s, RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import sys
import time
from urllib.parse import urlsplit

OVER_LIMIT = 200_000_000  # declared Content-Length over any --max-body-mb (at most 100 MB): 413 before reading


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def request(
    method: str, path: str, host: str, body: bytes = b"", content_type: str | None = None, declared: int | None = None
) -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if content_type:
        head.append(f"Content-Type: {content_type}")
    if method == "POST":
        head.append(f"Content-Length: {len(body) if declared is None else declared}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def mix(host: str) -> list[tuple[str, bytes, int]]:
    """(kind, request bytes, the status it must get)."""
    import numpy as np
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(canvas).line([(70, 60), (210, 60), (125, 240)], fill=255, width=20, joint="curve")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    seven = buf.getvalue()
    buf = io.BytesIO()
    Image.new("L", (64, 64), 255).save(buf, format="PNG")
    blank = buf.getvalue()
    digit = np.asarray(canvas.resize((28, 28), Image.Resampling.LANCZOS)).tolist()
    boundary = "burstboundary"
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="seven.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + seven
        + f"\r\n--{boundary}--\r\n".encode()
    )
    js = "application/json"
    return [
        ("json_ok", request("POST", "/predict", host, json.dumps({"pixels": digit}).encode(), js), 200),
        ("png_ok", request("POST", "/predict", host, seven, "image/png"), 200),
        (
            "multipart_ok",
            request("POST", "/predict", host, multipart, f"multipart/form-data; boundary={boundary}"),
            200,
        ),
        ("healthz", request("GET", "/healthz", host), 200),
        ("bad_json", request("POST", "/predict", host, b'{"pixels": [[1, 2', js), 400),
        ("wrong_shape", request("POST", "/predict", host, json.dumps({"pixels": [[0] * 27] * 28}).encode(), js), 422),
        ("nan_pixels", request("POST", "/predict", host, b'{"pixels": [[NaN]]}', js), 422),
        ("no_pixels", request("POST", "/predict", host, b'{"pixel": 1}', js), 422),
        ("wrong_type", request("POST", "/predict", host, b"hello", "text/plain"), 415),
        ("bad_image", request("POST", "/predict", host, b"\x89PNG\r\n\x1a\nnot really", "image/png"), 400),
        ("blank_image", request("POST", "/predict", host, blank, "image/png"), 200),  # a reading: no digit, unsure
        ("unknown_path", request("GET", "/nothing-here", host), 404),
        ("over_limit", request("POST", "/predict", host, b"", "image/png", declared=OVER_LIMIT), 413),
    ]


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, server wants to close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection", "").lower() == "close"


async def worker(host: str, port: int, jobs: list[tuple[str, bytes, int]], results: list) -> None:
    reader = writer = None
    for kind, payload, expected in jobs:
        for attempt in (1, 2):  # a keep-alive connection the server closed in between: reconnect once
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            start = time.perf_counter()
            try:
                writer.write(payload)
                await writer.drain()
                status, close = await read_response(reader)
                break
            except (ConnectionError, asyncio.IncompleteReadError):
                writer.close()
                reader = writer = None
                if attempt == 2:
                    status, close = -1, True  # no answer at all
        results.append((kind, expected, status, time.perf_counter() - start))
        if close and writer is not None:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def sample_rss(pid: int, samples: list, stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(rss_kib(pid))
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except asyncio.TimeoutError:
            pass


async def burst(url: str, n: int, concurrency: int, seed: int, pid: int | None) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    kinds = mix(f"{host}:{port}")
    rng = random.Random(seed)
    jobs = [kinds[rng.randrange(len(kinds))] for _ in range(n)]
    results: list = []
    samples: list[int] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, samples, stop)) if pid else None
    start = time.perf_counter()
    await asyncio.gather(*(worker(host, port, jobs[i::concurrency], results) for i in range(concurrency)))
    seconds = time.perf_counter() - start
    stop.set()
    if sampler:
        await sampler
    lat = sorted(r[3] for r in results)
    statuses: dict[str, int] = {}
    for _, _, status, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    mismatches: dict[str, int] = {}
    for kind, expected, status, _ in results:
        if status != expected:
            key = f"{kind}: expected {expected}, got {status}"
            mismatches[key] = mismatches.get(key, 0) + 1
    q = lambda p: round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 2)  # noqa: E731
    report = {
        "requests": len(results),
        "concurrency": concurrency,
        "seconds": round(seconds, 2),
        "requests_per_second": round(len(results) / seconds, 1),
        "statuses": statuses,
        "server_errors": sum(v for k, v in statuses.items() if k.startswith("5")),
        "no_answer": statuses.get("-1", 0),
        "mismatches": mismatches,
        "latency_ms": {"p50": q(0.50), "p99": q(0.99), "max": round(1000 * lat[-1], 2)},
    }
    if samples:
        report["rss_kib"] = {"first": samples[0], "peak": max(samples), "last": samples[-1]}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pid", type=int, default=None, help="the server's process id, to sample its RSS")
    args = parser.parse_args()
    print(f"command: python {' '.join(sys.argv)}", file=sys.stderr, flush=True)
    report = asyncio.run(burst(args.url, args.requests, args.concurrency, args.seed, args.pid))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
