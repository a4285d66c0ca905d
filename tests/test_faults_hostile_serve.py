"""`lenet5 serve` against hostile images and clients, the real server on 127.0.0.1:

- small uploads that decode to nearly 40 megapixels, many at once: at most LENET5_MAX_PREPARING are prepared
  at a time, the rest wait in a short queue or get 503 with Retry-After at once; the peak memory of the server
  and its worker processes stays bounded (before: 6 GB for 16 such requests), no 5xx, the server lives on;
- every Pillow mode as an upload: a reading or a 4xx with one line, never a 5xx;
- content types the service does not read (SVG, HEIC, text) -> 415;
- clients that hold connections open without a request: beyond the connection limit the longest-waiting idle
  ones are closed and new requests are answered, also when the server may open only 100 files; the "accept out
  of system resource" line is logged at most once per 10 s, not thousands of times a second (before: 20 MB of
  log in 3 s).
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from serving import running_server, wait_for_workers, wait_until_healthy, worker_pids
from test_faults_hostile_images import MODES, REFUSED, encoded

SLOTS, WAITING = 1, 2  # LENET5_MAX_PREPARING / LENET5_MAX_WAITING for the server under test
WORKERS = 2  # serve --workers: images are read in worker processes, as on a 2-core machine left idle
BIG = 6320  # 39.9 megapixels


def vm_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key}")


def family_kib(pid: int, key: str) -> int:
    """``key`` of the server and of its worker processes, summed (VmHWM: the sum of each one's own peak)."""
    return vm_kib(pid, key) + sum(vm_kib(w, key) for w in worker_pids(pid))


@pytest.fixture(scope="module")
def checkpoint(untrained_checkpoint) -> Path:
    """The server's work per request does not depend on the weights' values: an untrained model will do."""
    return untrained_checkpoint


@pytest.fixture(scope="module")
def server(checkpoint):
    saved = {k: os.environ.get(k) for k in ("LENET5_MAX_PREPARING", "LENET5_MAX_WAITING")}
    os.environ.update(LENET5_MAX_PREPARING=str(SLOTS), LENET5_MAX_WAITING=str(WAITING))
    try:
        with running_server(checkpoint, "--workers", str(WORKERS)) as (url, pid):
            wait_for_workers(pid, WORKERS)
            yield url, pid
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def big_page(mode: str, fmt: str) -> bytes:
    img = Image.new("L", (BIG, BIG), 255)
    ImageDraw.Draw(img).line([(2000, 1500), (4200, 1500), (3000, 4800)], fill=0, width=300)
    img = Image.fromarray(np.asarray(img, np.uint16) * 257) if mode == "I;16" else img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"compression": "tiff_adobe_deflate"} if fmt == "TIFF" else {}))
    return buf.getvalue()


def post(url: str, body: bytes, content_type: str) -> httpx.Response:
    return httpx.post(url + "/predict", content=body, headers={"Content-Type": content_type}, timeout=120)


@pytest.mark.slow
def test_many_huge_uploads_at_once_get_200_or_503_and_memory_stays_bounded(server):
    url, pid = server
    bodies = [
        (big_page("F", "TIFF"), "image/tiff"),
        (big_page("I;16", "PNG"), "image/png"),
        (big_page("RGBA", "PNG"), "image/png"),
    ]
    assert max(len(b) for b, _ in bodies) < 400_000
    assert post(url, *bodies[0]).status_code == 200  # warm-up: the first huge image, alone
    workers = worker_pids(pid)
    idle = family_kib(pid, "VmRSS")
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: post(url, *bodies[i % len(bodies)]), range(16)))
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {200, 503}, statuses
    assert 1 <= statuses.count(200) <= 16 and statuses.count(503) >= 16 - SLOTS - WAITING - 2, statuses
    for r in answers:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1" and r.json()["detail"].startswith("busy: "), r.text
        else:
            assert r.json()["number"] is not None
    peak = family_kib(pid, "VmHWM")  # each process's own peak resident memory since it started, summed
    print(f"\nserver and workers: {idle / 1024:.0f} MiB after the warm-up, peaks summed {peak / 1024:.0f} MiB")
    assert worker_pids(pid) == workers, "a worker was lost (out of memory?)"
    assert (peak - idle) / 1024 < 400, f"16 huge uploads raised the peaks by {(peak - idle) / 1024:.0f} MiB"
    assert httpx.get(url + "/healthz", timeout=10).status_code == 200


@pytest.mark.slow
def test_a_small_upload_does_not_wait_behind_huge_ones(server):
    """Huge images are prepared one at a time here (SLOTS = 1) with two more queued; a drawing sent meanwhile
    takes the small lane and is answered at once (before: it queued behind them, 7-14 s under load)."""
    url, _ = server
    huge = big_page("RGBA", "PNG")
    small = io.BytesIO()
    drawing = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(drawing).line([(70, 60), (210, 60), (125, 240)], fill=255, width=20)
    drawing.save(small, format="PNG")
    with ThreadPoolExecutor(SLOTS + WAITING) as pool:
        bigs = [pool.submit(post, url, huge, "image/png") for _ in range(SLOTS + WAITING)]
        time.sleep(0.5)  # they are being prepared or waiting
        start = time.monotonic()
        r = post(url, small.getvalue(), "image/png")
        took = time.monotonic() - start
        pending = sum(not f.done() for f in bigs)
        statuses = [f.result().status_code for f in bigs]
    assert r.status_code == 200 and r.json()["number"] is not None, r.text
    assert pending >= 1, "the huge images were done before the small one was sent: nothing was tested"
    assert took < 1.0, f"the small image waited {took:.2f} s"
    assert statuses == [200] * (SLOTS + WAITING)


def test_lanes_by_declared_size():
    from lenet5.serve.app import SMALL_PIXELS, Lanes, declared_pixels

    def png(w: int, h: int) -> bytes:
        buf = io.BytesIO()
        Image.new("1", (w, h), 1).save(buf, format="PNG")
        return buf.getvalue()

    assert declared_pixels(png(280, 280)) == 280 * 280
    assert declared_pixels(png(4000, 3000)) == 12_000_000
    assert declared_pixels(b"not an image") == 0
    lanes = Lanes(slots=1, waiting=0, small_pixels=SMALL_PIXELS)
    import asyncio
    import threading

    release = threading.Event()
    order: list[str] = []

    def work(name: str) -> str:
        if name == "large":
            release.wait(10)
        order.append(name)
        return name

    async def main():
        large = asyncio.ensure_future(lanes.run(png(4000, 3000), work, "large"))
        await asyncio.sleep(0.05)
        assert await lanes.run(png(280, 280), work, "small") == "small"  # not behind the large one
        release.set()
        return await large

    assert asyncio.run(main()) == "large" and order == ["small", "large"]


@pytest.mark.parametrize("mode", [m for m in MODES if encoded(m) is not None])
def test_every_mode_as_an_upload_is_a_reading_or_one_4xx_line(mode, server):
    url, _ = server
    data, opened_as = encoded(mode)
    kind = "image/tiff" if data[:2] in (b"II", b"MM") else "image/png"
    r = post(url, data, kind)
    if opened_as in REFUSED:
        assert r.status_code == 400 and r.json()["detail"] == (
            f"image: cannot read a {opened_as} image as grey levels (a CIE L*a*b* image); save it as RGB"
        )
    else:
        assert r.status_code == 200, r.text
        assert r.json()["number"] is not None


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg"><text>7</text></svg>'),
        ("image/heic", b"\x00\x00\x00\x18ftypheic"),
        ("image/avif", b"\x00\x00\x00\x18ftypavif"),
        ("text/plain", b"7"),
        ("application/octet-stream", b"\x89PNG\r\n\x1a\n"),
        ("", b"7"),
    ],
)
def test_a_content_type_the_service_does_not_read_is_415(content_type, body, server):
    url, _ = server
    headers = {"Content-Type": content_type} if content_type else {}
    r = httpx.post(url + "/predict", content=body, headers=headers, timeout=10)
    assert r.status_code == 415, r.text
    assert r.json()["detail"].startswith("unsupported Content-Type")


def test_beyond_the_connection_limit_idle_connections_make_room_for_new_requests(server):
    """More idle connections than the server holds: the longest-waiting ones are closed, new requests get 200."""
    from lenet5.serve.guard import MAX_CONNECTIONS

    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(MAX_CONNECTIONS + 2)]
    try:
        start = time.monotonic()
        r = httpx.get(url + "/healthz", timeout=10)
        assert r.status_code == 200, r.text
        assert time.monotonic() - start < 5
        idle[0].settimeout(5)
        assert idle[0].recv(1) == b""  # the oldest idle connection was closed to make room
    finally:
        for s in idle:
            s.close()


@contextlib.contextmanager
def server_with_few_files(checkpoint: Path, files: int):
    """The real server with RLIMIT_NOFILE = files; yields (url, a function returning its log so far)."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    with tempfile.TemporaryFile() as log:

        def text() -> str:
            log.seek(0)
            return log.read().decode(errors="replace")

        with running_server(checkpoint, log=log, preexec_fn=cap) as (url, _pid):
            yield url, text


@pytest.mark.slow
def test_few_file_descriptors_and_many_idle_clients_the_server_answers_and_logs_no_flood(checkpoint):
    """RLIMIT_NOFILE 100 and 200 clients that never send a request: the server holds as many connections as
    its descriptors allow, closes the longest-waiting idle ones to accept new clients, and answers /healthz
    while they are all connected; if a burst of connections ever uses up the descriptors, the "accept out of
    system resource" line is logged at most once per 10 s (before: about 9,000 a second, 20 MB in 3 s)."""
    with server_with_few_files(checkpoint, 100) as (url, log):
        port = int(url.rsplit(":", 1)[1])
        clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(200)]  # never a request
        try:
            time.sleep(1.0)
            wait_until_healthy(url, 15)
            time.sleep(2.0)  # a window in which a flood would log thousands of lines
            text = log()
        finally:
            for s in clients:
                s.close()
        floods = [line for line in text.splitlines() if "out of system resource" in line]
        assert len(floods) <= 2, text[-2000:]
        assert all(line == "socket.accept() out of system resource; too many open connections?" for line in floods)
        assert "Traceback" not in text and len(text) < 4000, text[-2000:]


def test_a_flood_of_one_log_line_gets_through_once_per_period():
    import logging

    from lenet5.serve.app import ACCEPT_FLOOD, OncePer

    once = OncePer(ACCEPT_FLOOD, seconds=60)
    records = [
        logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "socket.accept() out of system resource", None, None)
        for _ in range(1000)
    ]
    passed = [r for r in records if once.filter(r)]
    assert len(passed) == 1 and passed[0].getMessage().endswith("; too many open connections?")
    other = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "something else", None, None)
    assert once.filter(other)
