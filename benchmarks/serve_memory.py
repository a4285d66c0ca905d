"""Peak memory of a running `lenet5 serve` fed worst-case images: small files that decode to nearly 40 megapixels.

    python benchmarks/serve_memory.py [--model model.safetensors] [--concurrency 16] [--side 6320]
                                      [--kinds F.tif,I16.png,...] [--max-preparing N] [--address-space-gib G]
                                      [--workers N]

Starts the real server (`python -m lenet5 serve`, the Python and PYTHONPATH of this process) on a free port
of 127.0.0.1 (an untrained modern LeNet-5 unless --model is given: the memory does not depend on the weights),
then sends
1. each kind of worst-case image once, each to a fresh server (memory freed by one request stays resident):
   the server's peak resident memory (VmRSS of the server and its worker processes together, sampled every
   10 ms) over its memory when idle;
2. --concurrency requests at once, cycling through the kinds, to a fresh server: statuses and the peak.
The images (--side x --side, 39.9 megapixels at 6320, just under the limit; a page with one stroke, deflate-
compressed: 25..300 KB each) are float (F), 32-bit (I) and 16-bit (I;16) grey, RGBA, LA, CMYK, 1-bit, palette.
--address-space-gib caps the server's address space (RLIMIT_AS, each worker process's too), as a container's
memory limit would. --workers is serve's --workers (default: the server's own choice, one per free core).
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from machine import running_children

KINDS = ("F.tif", "I.tif", "I16.png", "I16.tif", "RGBA.png", "LA.png", "CMYK.tif", "1.png", "P.png", "RGB.png")
TYPES = {"png": "image/png", "tif": "image/tiff"}


def worst_image(kind: str, side: int) -> bytes:
    """A side x side page with one thick stroke in the mode and format of ``kind`` (e.g. "I16.png")."""
    import numpy as np
    from PIL import Image, ImageDraw

    mode, fmt = kind.split(".")
    page = Image.new("L", (side, side), 255)
    s = side / 6320
    ImageDraw.Draw(page).line(
        [(2000 * s, 1500 * s), (4200 * s, 1500 * s), (3000 * s, 4800 * s)], fill=0, width=max(1, round(300 * s))
    )
    if mode == "I16":
        img = Image.fromarray(np.asarray(page, np.uint16) * 257)
    else:
        img = page.convert(mode)
    buf = io.BytesIO()
    if fmt == "tif":
        img.save(buf, format="TIFF", compression="tiff_adobe_deflate")
    else:
        img.save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


def family(pid: int) -> list[int]:
    """A process and its running children (a server's worker processes)."""
    return [pid, *running_children(pid)]


def family_kib(pid: int, key: str) -> int:
    """``key`` (VmRSS, VmHWM) of a process and its running children, summed."""
    total = status_kib(pid, key)
    for child in family(pid)[1:]:
        try:
            total += status_kib(child, key)
        except (OSError, RuntimeError):  # it ended meanwhile
            pass
    return total


class Sampler:
    """VmRSS of a process and its children every ``every`` seconds, in a thread; ``peak`` since the last
    ``reset``."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        self.pid, self.every, self.peak = pid, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.peak = max(self.peak, family_kib(self.pid, "VmRSS"))
            except (OSError, RuntimeError):
                return

    def reset(self) -> int:
        now = family_kib(self.pid, "VmRSS")
        self.peak = now
        return now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def untrained_checkpoint(folder: Path) -> Path:
    from lenet5.checkpoint import save_checkpoint
    from lenet5.config import ModelConfig, OptimizerConfig
    from lenet5.engines import create_engine

    engine = create_engine("numpy", ModelConfig(), OptimizerConfig(), seed=0)
    path = folder / "model.safetensors"
    save_checkpoint(path, engine.state_dict(), engine="numpy", model="modern")
    return path


def start_server(
    model: Path, log, env: dict, address_space: int | None, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def cap() -> None:
        if address_space:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "lenet5", "serve", "--model", str(model), "--port", str(port)),
            *("--log-level", "warning", *extra),
        ],
        stdout=log,
        stderr=log,
        env=env,
        preexec_fn=cap,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not answer /healthz in time")
        time.sleep(0.1)


def post(url: str, kind: str, body: bytes) -> tuple[int, str]:
    import httpx

    try:
        r = httpx.post(url + "/predict", content=body, headers={"Content-Type": TYPES[kind.split(".")[1]]}, timeout=300)
        return r.status_code, r.headers.get("retry-after", "")
    except httpx.TransportError as exc:
        return 0, type(exc).__name__  # no answer: the server died (OOM kill) or dropped the connection


@contextlib.contextmanager
def served(model: Path, env: dict, cap: int | None, extra: tuple[str, ...] = ()):
    """A fresh server, warmed up with one small image; yields (process, url, sampler, info) where info["idle"] is
    VmRSS after the warm-up and, once stopped, info["log"] counts the lines and tracebacks the server logged."""
    info: dict = {}
    with tempfile.TemporaryFile() as log:
        proc, url = start_server(model, log, env, cap, extra)
        sampler = Sampler(proc.pid)
        try:
            post(url, "L.png", worst_image("L.png", 256))  # warm-up: imports, thread pool
            time.sleep(0.2)
            info["idle"] = sampler.reset()
            yield proc, url, sampler, info
        finally:
            sampler.stop()
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.seek(0)
            text = log.read().decode(errors="replace")
            info["log"] = {"server_log_lines": len(text.splitlines()), "server_tracebacks": text.count("Traceback")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--side", type=int, default=6320)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--max-preparing", type=int, default=None, help="LENET5_MAX_PREPARING for the server")
    ap.add_argument("--address-space-gib", type=float, default=None, help="RLIMIT_AS of the server")
    ap.add_argument("--skip-single", action="store_true", help="only the concurrent phase")
    ap.add_argument("--workers", default=None, help="serve --workers (default: the server's own choice)")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    bodies = {k: worst_image(k, args.side) for k in kinds}
    env = dict(os.environ)
    if args.max_preparing is not None:
        env["LENET5_MAX_PREPARING"] = str(args.max_preparing)
    cap = int(args.address_space_gib * 2**30) if args.address_space_gib else None
    extra = ("--workers", args.workers) if args.workers is not None else ()
    report: dict = {
        "side": args.side,
        "megapixels": round(args.side**2 / 1e6, 1),
        "file_kib": {k: round(len(b) / 1024) for k, b in bodies.items()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or untrained_checkpoint(Path(tmp))
        if not args.skip_single:  # each kind on a fresh server: memory freed by one request stays resident
            single = {}
            for k in kinds:
                with served(model, env, cap, extra) as (proc, url, sampler, info):
                    t = time.perf_counter()
                    status, _ = post(url, k, bodies[k])
                    single[k] = {
                        "status": status,
                        "peak_over_idle_mib": round((sampler.peak - info["idle"]) / 1024, 1),
                        "seconds": round(time.perf_counter() - t, 2),
                    }
                single[k].update(info["log"])
            report["one_at_a_time"] = single
            report["one_at_a_time_max_peak_over_idle_mib"] = max(v["peak_over_idle_mib"] for v in single.values())
        with served(model, env, cap, extra) as (proc, url, sampler, info):
            report["worker_processes"] = len(family(proc.pid)) - 1
            report["idle_rss_mib"] = round(info["idle"] / 1024, 1)
            t = time.perf_counter()
            order = [kinds[i % len(kinds)] for i in range(args.concurrency)]
            with ThreadPoolExecutor(args.concurrency) as pool:
                answers = list(pool.map(lambda k: post(url, k, bodies[k]), order))
            statuses: dict[str, int] = {}
            for status, _ in answers:
                statuses[str(status)] = statuses.get(str(status), 0) + 1
            alive = proc.poll() is None
            report["concurrent"] = {
                "requests": args.concurrency,
                "statuses": statuses,
                "seconds": round(time.perf_counter() - t, 2),
                "peak_rss_mib": round(sampler.peak / 1024, 1),
                "peak_over_idle_mib": round((sampler.peak - info["idle"]) / 1024, 1),
                "vm_hwm_mib": round(family_kib(proc.pid, "VmHWM") / 1024, 1) if alive else None,
                "retry_after": sorted({ra for s, ra in answers if s == 503}),
                "server_alive": alive,
                "server_exit": proc.returncode,
            }
        report["concurrent"].update(info["log"])
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
