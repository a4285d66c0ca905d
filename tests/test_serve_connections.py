"""`lenet5 serve` with clients that open connections and never finish a request: the real server on 127.0.0.1.

Idle and half-sent connections must not lock other clients out (before: 130 of them made every other request
503 for as long as they stayed open), they are closed after --header-timeout (a 408 when part of a request
came), kept-alive connections after --idle-timeout, and beyond the connection bound the longest-waiting idle
one makes room for a new client.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

import httpx
import pytest

from serving import running_server

HALF_SENT = b"POST /predict HTTP/1.1\r\nHost: x\r\n"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def open_idle(port: int, n: int) -> list[socket.socket]:
    """n connections: even ones send nothing, odd ones a request line and one header, never the rest."""
    out = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if i % 2:
            s.sendall(HALF_SENT)
        out.append(s)
    return out


def closed_by_server(s: socket.socket, wait: float) -> tuple[bool, bytes]:
    """(whether the server closed s within ``wait`` seconds, what it sent before closing)."""
    s.settimeout(wait)
    got = b""
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            data = s.recv(4096)
            if not data:
                return True, got
            got += data
    except TimeoutError:
        return False, got
    except ConnectionError:
        return True, got
    return False, got


def png_drawing() -> bytes:
    import io

    from PIL import Image, ImageDraw

    img = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(img).line([(70, 60), (210, 60), (125, 240)], fill=255, width=20)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(untrained_checkpoint):
    with running_server(untrained_checkpoint) as (url, pid):
        yield url, pid


@pytest.fixture(scope="module")
def impatient_server(untrained_checkpoint):
    """Short deadlines, so the tests need not wait 10 s."""
    with running_server(untrained_checkpoint, "--header-timeout", "1", "--idle-timeout", "1") as (url, pid):
        yield url, pid


@pytest.mark.slow  # holds connections open for seconds
def test_140_idle_connections_do_not_lock_other_clients_out(server):
    url, _ = server
    idle = open_idle(port_of(url), 140)
    try:
        time.sleep(0.5)  # the server has accepted them
        for _ in range(5):
            start = time.monotonic()
            r = httpx.get(url + "/healthz", timeout=10)  # a new connection each time
            assert r.status_code == 200, r.text
            assert time.monotonic() - start < 3
        r = httpx.post(url + "/predict", files={"file": ("d.png", png_drawing(), "image/png")}, timeout=10)
        assert r.status_code == 200, r.text
        still_open = sum(not closed_by_server(s, 0.01)[0] for s in idle)
    finally:
        for s in idle:
            s.close()
    assert still_open == 140, "the idle clients were gone before the others were served: nothing was tested"


def test_silent_and_half_sent_connections_are_closed_after_the_header_timeout(impatient_server):
    url, _ = impatient_server
    silent, half = open_idle(port_of(url), 2)
    start = time.monotonic()
    try:
        closed, sent = closed_by_server(silent, 10)
        assert closed and sent == b""  # nothing came, nothing to answer
        closed, sent = closed_by_server(half, 10)
        assert closed and sent.startswith(b"HTTP/1.1 408 "), sent[:200]
        assert b"request headers did not arrive within 1 s" in sent
    finally:
        silent.close()
        half.close()
    assert 0.9 < time.monotonic() - start < 6


def test_headers_trickling_in_do_not_extend_the_deadline(impatient_server):
    url, _ = impatient_server
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=10) as s:
        s.sendall(HALF_SENT)
        s.settimeout(0.2)
        answer = b""
        while time.monotonic() - start < 10:
            try:
                s.sendall(b"X-Slow: y\r\n")
            except OSError:
                break
            try:
                data = s.recv(4096)
            except TimeoutError:
                continue
            except ConnectionError:
                break
            if not data:
                break
            answer += data
    assert time.monotonic() - start < 6
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


@pytest.mark.slow  # holds connections open for seconds
def test_a_kept_alive_connection_is_closed_after_the_idle_timeout_and_may_be_reused_before(impatient_server):
    url, _ = impatient_server
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=10) as s:
        for _ in range(3):  # answered, kept alive, reused within the idle timeout
            s.sendall(request)
            s.settimeout(10)
            answer = s.recv(4096)
            while b"}" not in answer:  # the head and the body may come in two pieces
                answer += s.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
            time.sleep(0.3)
        start = time.monotonic()
        closed, _ = closed_by_server(s, 10)
    assert closed and time.monotonic() - start < 4


@pytest.fixture(scope="module")
def small_server(untrained_checkpoint):
    """A server that holds at most 16 connections."""
    os.environ["LENET5_MAX_CONNECTIONS"] = "16"
    try:
        with running_server(untrained_checkpoint, "--header-timeout", "60") as (url, pid):
            yield url, pid
    finally:
        os.environ.pop("LENET5_MAX_CONNECTIONS", None)


@pytest.mark.slow  # holds connections open for seconds
def test_beyond_the_connection_bound_the_longest_waiting_idle_connection_makes_room(small_server):
    url, _ = small_server
    idle = open_idle(port_of(url), 40)
    try:
        for _ in range(3):
            r = httpx.get(url + "/healthz", timeout=10)
            assert r.status_code == 200, r.text
        closed = [closed_by_server(s, 0.2)[0] for s in idle]
    finally:
        for s in idle:
            s.close()
    # the oldest were closed to make room, the newest are still held
    assert all(closed[:20]) and not any(closed[-10:]), closed


def test_request_limit_refuses_bodies_beyond_the_limit_but_never_a_get():
    from lenet5.serve.app import RequestLimit

    release = asyncio.Event()
    sent: list[dict] = []

    async def slow_app(scope, receive, send):
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def collect(message):
        sent.append(message)

    async def main():
        limited = RequestLimit(slow_app, limit=1)
        first = asyncio.create_task(limited({"type": "http", "method": "POST"}, None, collect))
        await asyncio.sleep(0)
        await limited({"type": "http", "method": "POST"}, None, collect)  # over the limit: answered at once
        get = asyncio.create_task(limited({"type": "http", "method": "GET"}, None, collect))
        await asyncio.sleep(0)
        assert not get.done()  # a GET is let through to the app, not refused
        release.set()
        await asyncio.gather(first, get)

    asyncio.run(main())
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [503, 200, 200]
    assert (b"retry-after", b"1") in starts[0]["headers"]
