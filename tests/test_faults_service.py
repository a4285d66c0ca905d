"""`lenet5 serve` under abuse: a burst of good and bad requests from a second process, slow-loris clients,
and bodies over the limit. The server is the real one (`python -m lenet5 serve`) on 127.0.0.1.

Budgets: LENET5_BURST_REQUESTS (default 5,000; the README's figure is from 20,000) requests, 64 concurrent.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from serving import running_server, wait_for_workers, worker_pids

ROOT = Path(__file__).resolve().parents[1]
BURST = int(os.environ.get("LENET5_BURST_REQUESTS", "5000"))
CONCURRENCY = 64
BODY_TIMEOUT = 1.0  # --body-timeout for the server under test (the default is 20 s)
RSS_GROWTH_LIMIT_MIB = 48  # peak VmRSS during the burst over VmRSS after a 1,000-request warm-up
RSS_AFTER_LIMIT_MIB = 24  # VmRSS when the burst is over, same reference (the server, and its workers apart)
WORKERS = 2  # serve --workers: uploads are read in worker processes, as on a 2-core machine left idle


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.fixture(scope="module")
def server(untrained_checkpoint):
    """The real server, on an untrained model: its work per request does not depend on the weights' values."""
    flags = ("--body-timeout", str(BODY_TIMEOUT), "--workers", str(WORKERS))
    with running_server(untrained_checkpoint, *flags) as (url, pid):
        wait_for_workers(pid, WORKERS)
        yield url, pid


def run_burst(url: str, n: int, pid: int) -> dict:
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "service_burst.py"),
        "--url",
        url,
        "--requests",
        str(n),
        "--concurrency",
        str(CONCURRENCY),
        "--pid",
        str(pid),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def healthy(url: str) -> bool:
    return httpx.get(url + "/healthz", timeout=5).status_code == 200


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_burst_of_good_and_bad_requests_gets_no_5xx_and_no_memory_growth(server):
    url, pid = server
    run_burst(url, 1000, pid)  # warm-up: thread pool, allocator arenas, lazily imported code
    workers = worker_pids(pid)
    before, workers_before = rss_kib(pid), sum(map(rss_kib, workers))
    report = run_burst(url, BURST, pid)
    after, workers_after = rss_kib(pid), sum(map(rss_kib, workers))
    print(
        f"\nburst of {report['requests']} requests, {CONCURRENCY} concurrent: {report['requests_per_second']} req/s, "
        f"latency p50 {report['latency_ms']['p50']} ms, p99 {report['latency_ms']['p99']} ms, "
        f"max {report['latency_ms']['max']} ms; statuses {report['statuses']}; VmRSS after warm-up "
        f"{before / 1024:.1f} MiB, peak {report['rss_kib']['peak'] / 1024:.1f} MiB, after {after / 1024:.1f} MiB; "
        f"its {len(workers)} workers {workers_before / 1024:.1f} MiB, after {workers_after / 1024:.1f} MiB"
    )
    assert report["requests"] == BURST
    assert report["server_errors"] == 0 and report["no_answer"] == 0
    assert report["mismatches"] == {}, report["mismatches"]
    assert set(report["statuses"]) == {"200", "400", "404", "413", "415", "422"}
    assert report["rss_kib"]["peak"] - before < RSS_GROWTH_LIMIT_MIB * 1024
    assert after - before < RSS_AFTER_LIMIT_MIB * 1024
    assert worker_pids(pid) == workers, "a worker was lost during the burst"
    assert workers_after - workers_before < RSS_AFTER_LIMIT_MIB * 1024
    assert healthy(url)


def slow_body(
    port: int,
    answers: dict,
    key: int,
    connected: threading.Semaphore,
    stop: threading.Event | None = None,
    interval: float = 0.25,
) -> None:
    """Headers with Content-Length 5000, then one byte every ``interval`` s until ``stop`` is set or the server
    answers; ``answers[key]`` holds what the server has sent so far and, once it ends, how long it took."""
    start = time.monotonic()
    answers[key] = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
        )
        connected.release()
        s.settimeout(interval)
        for _ in range(200):  # 50 s at most
            if stop is not None and stop.is_set():
                break
            try:
                s.send(b" ")
            except OSError:
                break
            try:
                data = s.recv(4096)
            except (TimeoutError, ConnectionError):
                continue
            if not data:
                break
            answers[key] += data
    answers[key] = (answers[key], time.monotonic() - start)


def slow_headers(
    port: int, connected: threading.Semaphore, stop: threading.Event, dropped: list, interval: float = 0.25
) -> None:
    """A request line, then one more header every ``interval`` s, never the blank line that ends them."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        connected.release()
        while not stop.wait(interval):
            try:
                s.sendall(b"X-Slow: y\r\n")
            except OSError:
                dropped.append(1)
                return


def wait_until_connected(connected: threading.Semaphore, n: int) -> None:
    for _ in range(n):
        assert connected.acquire(timeout=60), "a slow client could not connect"


def serve_normal_requests(url: str, n: int) -> list[float]:
    """n requests one after another; each must be answered 200 (a client timeout of 30 s fails the test)."""
    pixels = np.zeros((28, 28), np.uint8)
    pixels[6:22, 12:16] = 255
    seconds = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(n):
            start = time.monotonic()
            r = client.post("/predict", json={"pixels": pixels.tolist()})
            seconds.append(time.monotonic() - start)
            assert r.status_code == 200, r.text
    return seconds


@pytest.fixture(scope="module")
def patient_server(untrained_checkpoint):
    """A server whose body and header deadlines (120 s) are longer than any of these tests: slow clients keep
    their connections for as long as a test needs them to."""
    with running_server(untrained_checkpoint, "--body-timeout", "120", "--header-timeout", "120") as (url, pid):
        yield url, pid


def test_slow_loris_bodies_time_out_with_408(server):
    """Bodies trickling in one byte at a time are cut off after --body-timeout with a 408 that says why."""
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    answers: dict = {}
    connected = threading.Semaphore(0)
    threads = [threading.Thread(target=slow_body, args=(port, answers, i, connected)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(answers) == 32
    for answer, took in answers.values():
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"did not arrive within" in answer
        # not before the deadline; and long before the 50 s the client would go on sending
        assert BODY_TIMEOUT <= took < 30 * BODY_TIMEOUT, took
    assert healthy(url)


def test_slow_loris_bodies_do_not_block_other_clients(patient_server):
    """While 32 clients hold connections with bodies that never finish, other clients are answered."""
    url, _ = patient_server
    port = int(url.rsplit(":", 1)[1])
    answers: dict = {}
    connected, stop = threading.Semaphore(0), threading.Event()
    threads = [threading.Thread(target=slow_body, args=(port, answers, i, connected, stop)) for i in range(32)]
    for t in threads:
        t.start()
    try:
        wait_until_connected(connected, 32)
        seconds = serve_normal_requests(url, 30)
        held = [i for i, answer in answers.items() if answer == b""]  # still sending, no answer yet
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    print(f"\nslowest of 30 requests behind 32 slow bodies: {max(seconds):.3f} s")
    assert len(held) == 32, "the slow clients were answered before the normal ones: nothing was tested"
    assert healthy(url)


def test_slow_headers_do_not_block_other_clients(patient_server):
    """Clients sending headers one by one hold a connection each until --header-timeout (here 120 s, so they
    stay for the whole test), and the event loop serves everyone else meanwhile (test_serve_connections.py
    checks the deadline itself)."""
    url, _ = patient_server
    port = int(url.rsplit(":", 1)[1])
    connected, stop, dropped = threading.Semaphore(0), threading.Event(), []
    threads = [threading.Thread(target=slow_headers, args=(port, connected, stop, dropped)) for _ in range(32)]
    for t in threads:
        t.start()
    try:
        wait_until_connected(connected, 32)
        seconds = serve_normal_requests(url, 30)
        held = sum(t.is_alive() for t in threads) - len(dropped)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    print(f"\nslowest of 30 requests behind 32 slow header senders: {max(seconds):.3f} s")
    assert held == 32, "the slow clients were gone before the normal ones were served: nothing was tested"


def test_an_oversized_body_is_refused_before_it_is_sent(server):
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 104857600\r\n\r\n")
        s.sendall(b"\x00" * 1024)  # 1 KiB of the 100 MiB announced, then nothing
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = s.recv(4096)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"connection: close" in answer.lower() and b"the limit is 10000000 bytes" in answer


def test_a_chunked_body_over_the_limit_is_cut_off_while_arriving(server):
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    chunk = b"\x00" * 65536
    sent, answer = 0, b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n")
        s.settimeout(0.002)  # a fast client: the body timeout must not be what stops it
        while sent < 64 * 1024 * 1024:  # would be 64 MiB; the server must stop us long before
            try:
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
            except OSError:
                break
            try:
                data = s.recv(4096)
                if data:
                    answer += data
                    break
            except TimeoutError:
                continue
            except ConnectionError:
                break
    from lenet5.serve.app import MAX_BODY_BYTES

    slack = 6 * 1024 * 1024  # what the socket buffers on both sides hold before the cut-off is seen
    assert sent < MAX_BODY_BYTES + slack, f"the client sent {sent} bytes before the server stopped it"
    if answer:  # when the reset beats the answer to the client, the early stop above is the proof
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert healthy(url)
