"""`lenet5 serve --workers N`: uploaded images read in worker processes (serve/readers.py, reading.py), the
real server on 127.0.0.1: the same answers as reading them in the server, a worker killed or stopped costs at
most the request it was reading, and no worker outlives the server (Ctrl-C, SIGTERM, SIGKILL)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import lenet5
from lying_headers import png_declaring
from serving import ended, running_server, wait_for_workers, worker_pids

KILLED = "the process reading this image ended (signal SIGKILL: killed, or out of memory?)"


def drawing(digits: int = 1) -> bytes:
    """A 280x280 PNG (280 high, 280 wide per digit) of white strokes on black, what the drawing page sends."""
    img = Image.new("L", (280 * max(1, digits), 280), 0)
    for k in range(digits):
        x = 280 * k
        ImageDraw.Draw(img).line([(x + 70, 60), (x + 210, 60), (x + 125, 240)], fill=255, width=20)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def upload(url: str, data: bytes, name: str = "drawing.png", query: str = "") -> httpx.Response:
    return httpx.post(f"{url}/predict{query}", files={"file": (name, data, "image/png")}, timeout=60)


@pytest.fixture(scope="module")
def reader(untrained_checkpoint):
    from lenet5.predict import load_reader

    return load_reader([untrained_checkpoint])


@pytest.fixture(scope="module")
def server(untrained_checkpoint):
    with running_server(untrained_checkpoint, "--workers", "2") as (url, pid):
        wait_for_workers(pid, 2)
        yield url, pid


def expected(reader, data: bytes, name: str, prepared: bool = False) -> tuple[int, dict]:
    """What reading in the server's own threads answers (the same function, without a worker)."""
    from lenet5.serve.reading import answer_for

    status, doc, fields = answer_for(reader, data, name)
    if status != 200:
        return status, doc
    if prepared:
        for d, field in zip(doc["digits"], fields):
            d["prepared"] = field.tolist()
        if len(fields) == 1:
            doc["prepared"] = fields[0].tolist()
    return status, {**doc, "model": reader.model_name}


BODIES = {
    "a drawing": (drawing(), "drawing.png"),
    "a number": (drawing(3), "number.png"),
    "a blank page": (drawing(0), "blank.png"),
    "an empty file": (b"", "empty.png"),
    "not an image": (b"this is not a picture", "x.png"),
    "a truncated PNG": (drawing()[:200], "cut.png"),
    "a bomb header": (png_declaring(100_000, 100_000), "bomb.png"),
    "a thin strip": (png_declaring(2, 4000), "strip.png"),
}


@pytest.mark.parametrize("what", BODIES)
def test_an_upload_read_by_a_worker_gets_what_the_server_thread_gives(what, server, reader):
    url, pid = server
    data, name = BODIES[what]
    status, doc = expected(reader, data, name, prepared=True)
    r = upload(url, data, name, "?prepared=true")
    assert (r.status_code, r.json()) == (status, doc)
    assert len(worker_pids(pid)) == 2


def test_hostile_images_are_refused_with_the_messages_of_the_reader(server):
    url, _ = server
    r = upload(url, png_declaring(100_000, 100_000), "bomb.png")
    assert r.status_code == 400 and r.json()["detail"] == (
        "bomb.png: image is larger than the 40-megapixel limit (a decompression bomb?)"
    )
    r = upload(url, png_declaring(7000, 7000), "big.png")  # 49 megapixels declared
    assert r.status_code == 400 and r.json()["detail"] == (
        "big.png: image is larger than the 40-megapixel limit (a decompression bomb?)"
    )
    r = upload(url, png_declaring(3, 3000), "thin.png")
    assert r.status_code == 400 and r.json()["detail"] == (
        "thin.png: image is only 3x3000 pixels; a digit needs at least 4x4"
    )
    r = upload(url, drawing()[:200], "cut.png")
    assert r.status_code == 400 and r.json()["detail"].startswith("cut.png: truncated or corrupt image")


def test_workers_killed_while_idle_are_replaced_before_the_next_request(server):
    url, pid = server
    old = wait_for_workers(pid, 2)
    for worker in old:
        os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not all(ended(w) for w in old) and time.monotonic() < deadline:
        time.sleep(0.02)
    answers = [upload(url, drawing()) for _ in range(4)]
    assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
    wait_for_workers(pid, 2, besides=tuple(old))


def test_a_worker_killed_while_reading_costs_that_request_a_503_and_later_ones_are_read(server):
    """Both workers stopped (SIGSTOP), an upload handed to one of them, then both killed: that upload gets a
    503 with one line saying how its reader ended, the server lives, new workers read the next uploads."""
    url, pid = server
    old = wait_for_workers(pid, 2)
    for worker in old:
        os.kill(worker, signal.SIGSTOP)
    answers: list = []
    sender = threading.Thread(target=lambda: answers.append(upload(url, drawing())))
    sender.start()
    time.sleep(0.5)  # the upload is in a stopped worker's socket
    assert not answers, "the upload was answered by a stopped worker: nothing was tested"
    for worker in old:
        os.kill(worker, signal.SIGKILL)
    sender.join(timeout=30)
    [r] = answers
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    detail = r.json()["detail"]
    assert detail == f"{KILLED}; a new one is starting: try again shortly" and "\n" not in detail
    later = [upload(url, drawing()) for _ in range(6)]
    assert [r.status_code for r in later] == [200] * 6, [r.text for r in later]
    assert httpx.get(url + "/healthz", timeout=10).status_code == 200
    wait_for_workers(pid, 2, besides=tuple(old))


def test_json_pixels_are_read_in_the_server_while_the_workers_are_stopped(server):
    url, pid = server
    workers = wait_for_workers(pid, 2)
    pixels = np.zeros((28, 28), np.uint8)
    pixels[6:22, 12:16] = 255
    for worker in workers:
        os.kill(worker, signal.SIGSTOP)
    try:
        r = httpx.post(url + "/predict", json={"pixels": pixels.tolist()}, timeout=10)
    finally:
        for worker in workers:
            os.kill(worker, signal.SIGCONT)
    assert r.status_code == 200 and r.json()["digit"] is not None


# ------------------------------------------------------------------------------------ stopping the server
@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "SIGTERM", "SIGKILL"])
def test_stopping_the_server_leaves_no_worker_behind(how, untrained_checkpoint):
    """Ctrl-C at the terminal (SIGINT to the server's process group; the workers are in sessions of their own)
    and SIGTERM stop the server, which stops its workers; after SIGKILL the workers leave by themselves, at the
    closed socket."""
    with running_server(untrained_checkpoint, "--workers", "2", preexec_fn=os.setsid) as (url, pid):
        workers = wait_for_workers(pid, 2)
        assert upload(url, drawing()).status_code == 200
        if how == "ctrl-c":
            os.killpg(pid, signal.SIGINT)
        else:
            os.kill(pid, getattr(signal, how))
        deadline = time.monotonic() + 20
        while not (ended(pid) and all(ended(w) for w in workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ended(pid), f"the server is still running 20 s after {how}"
        assert [w for w in workers if not ended(w)] == [], f"workers left running after {how}"


# ------------------------------------------------------------------------------------- the pool on its own
def test_large_images_leave_a_worker_for_the_small_ones(reader, untrained_checkpoint):
    from lenet5.serve.readers import ReaderPool

    class Slot:
        def alive(self) -> bool:
            return True

    async def main():
        pool = ReaderPool([untrained_checkpoint], "numpy", 2, reader)
        pool.idle = [Slot(), Slot()]
        await pool._take(large=True)
        with pytest.raises(asyncio.TimeoutError):  # the second worker is kept for small images
            await asyncio.wait_for(pool._take(large=True), 0.1)
        await asyncio.wait_for(pool._take(large=False), 0.1)
        pool._finalizer()

    asyncio.run(main())


def test_a_worker_that_cannot_load_the_model_gives_its_place_to_the_server_threads(reader, tmp_path, caplog):
    from lenet5.serve.readers import ReaderPool

    async def main():
        pool = ReaderPool([tmp_path / "gone.safetensors"], "numpy", 1, reader)
        await pool.start()
        try:
            assert pool.pids() == []
            status, doc, _ = await pool.read(drawing(), "drawing.png")
        finally:
            await pool.close()
        return status, doc

    with caplog.at_level("WARNING", logger="uvicorn.error"):
        status, doc = asyncio.run(main())
    assert status == 200 and doc["number"] is not None
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("a process to read images could not be had (it could not load the model: ")
    assert "gone.safetensors" in line and line.endswith("reading in the server's threads instead")


@pytest.mark.slow
def test_a_stopped_worker_is_replaced_after_the_read_timeout(reader, untrained_checkpoint, monkeypatch):
    from lenet5.serve import readers

    monkeypatch.setattr(readers, "READ_TIMEOUT_S", 1.0)

    async def main():
        pool = readers.ReaderPool([untrained_checkpoint], "numpy", 1, reader)
        await pool.start()
        try:
            [stopped] = pool.pids()
            os.kill(stopped, signal.SIGSTOP)
            first = await pool.read(drawing(), "drawing.png")
            second = await pool.read(drawing(), "drawing.png")
            fresh = pool.pids()
        finally:
            await pool.close()
        return stopped, first, second, fresh

    stopped, (status, doc, _), (again, reading, fields), fresh = asyncio.run(main())
    assert status == 503 and doc["detail"] == (
        "reading this image took longer than 1 s, and the process reading it was stopped; "
        "a new one is starting: try again shortly"
    )
    assert again == 200 and reading["number"] is not None and fields[0].shape == (28, 28)
    assert ended(stopped) and len(fresh) == 1 and fresh != [stopped] and ended(fresh[0])


@pytest.mark.slow
def test_a_committee_is_served_and_read_by_the_workers(untrained_checkpoint):
    from lenet5.checkpoint import BUNDLED
    from lenet5.predict import load_reader

    committee = load_reader([untrained_checkpoint, BUNDLED])
    with running_server(untrained_checkpoint, "--model", str(BUNDLED), "--workers", "1") as (url, pid):
        wait_for_workers(pid, 1)
        health = httpx.get(url + "/healthz", timeout=10).json()
        r = upload(url, drawing(2))
    assert [m["checkpoint"] for m in health["committee"]] == [str(untrained_checkpoint), str(BUNDLED)]
    assert health["checkpoint"] == str(untrained_checkpoint)
    assert (r.status_code, r.json()) == expected(committee, drawing(2), "drawing.png")


def test_workers_out_of_range_is_one_line():
    result = lenet5("serve", "--workers", "-1", timeout=60)
    assert result.returncode == 2 and result.stderr.strip() == "error: --workers must be between 0 and 32, got -1"


@pytest.mark.slow  # a server with its workers started: in the full run, not the quick loop
def test_by_default_a_server_reads_with_one_worker_per_core_however_busy_the_machine(untrained_checkpoint):
    """No --workers: one worker process per core this server may use (none on one core), whatever other
    programs are doing when it starts (a training run beside it must not leave it without workers)."""
    cores = len(os.sched_getaffinity(0))
    with running_server(untrained_checkpoint) as (_url, pid):
        assert len(wait_for_workers(pid, cores if cores > 1 else 0)) == (cores if cores > 1 else 0)
