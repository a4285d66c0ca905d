"""The HTTP service: a FastAPI app around one Predictor (or a committee of them), loaded once at start-up.

Routes
- ``GET /``          the page to draw a digit on (static/index.html, self-contained)
- ``GET /healthz``   ``{"status": "ok", "model": "modern", "checkpoint": "runs/<name>/model.safetensors",
  "sha256": "<the file's first 12 hex digits>"}``: which file is served, and which version of it (a committee
  also lists every member's file and hash in ``"committee"``)
- ``POST /predict``  an image -> its reading, as ``lenet5 predict --json`` gives it, plus the probabilities:
  ``{"model", "number": "42" or null, "digits": [{"digit", "probability", "probabilities", "box", "top_k",
  "unsure"}], "unsure": bool, "reason" (when unsure)}``, and for one digit also ``"digit"``, ``"probability"``,
  ``"probabilities"`` (10 floats) at the top; a blank page is ``{"number": null, "digit": null, "unsure": true,
  "reason": ...}``. From
    * ``multipart/form-data`` with the image file in field ``file`` (any format ``lenet5 predict`` reads;
      the page is cleaned and each digit prepared like MNIST: cropped, scaled to 20 px, centred);
    * ``application/json`` ``{"pixels": 28x28 numbers 0..255}``: a digit already MNIST-style (white on
      black, centred: 0 is the background, 255 the ink), used as is; with ``"prepare": true`` the pixels
      (any HxW, 4..1024 per side, either polarity) go through the same preparation as an uploaded image.
      Grey levels are 0..255: values that all lie in 0..1 with fractions are refused (422) rather than read
      as a black image; other keys are refused (422);
    * ``image/png``, ``image/jpeg``, ... (images.CONTENT_TYPES): the raw image file as the body.
  ``?prepared=true`` adds ``"prepared"`` to each digit (and at the top for one digit): the 28x28 uint8
  image the network saw.

Limits and status codes (the body of every error is ``{"detail": "<one line>"}``; a client mistake
never gets a 5xx):
- a request body over the limit (``lenet5 serve --max-body-mb``, default 10 MB) -> 413, judged from
  Content-Length before reading and by counting bytes while reading (chunked uploads);
- a body that has not fully arrived BODY_TIMEOUT_S (20 s) after the headers -> 408 (slow-loris clients);
- another Content-Type -> 415;
- malformed JSON or multipart, an undecodable image -> 400 (a blank one is a reading: unsure, no digit);
- a missing ``file`` field or ``pixels`` of the wrong shape, type or range -> 422;
- uploaded images are prepared in two lanes by their decoded size, read from the image's header before any
  decoding: up to SMALL_PIXELS (2 megapixels: drawings, scans, most photos sent by a page) and larger ones
  (up to 40 megapixels). Each lane prepares a few images at once (MAX_PREPARING in the large lane, each costs
  up to its decoded size: 160 MB for 40 megapixels of 4-byte pixels; at least 2, and at least one per worker
  process, in the small lane, where an image costs at most 8 MB) and queues MAX_WAITING more for at most WAIT_S
  seconds; a full queue or a longer wait -> 503 with ``Retry-After`` at once (``LENET5_MAX_PREPARING`` /
  ``LENET5_MAX_WAITING`` set both). A small image never waits behind large ones (before: 7-14 s behind
  40-megapixel PNGs, benchmarks/serve_mixed.py);
- uploaded images are read in worker processes when ``workers`` > 0 (``lenet5 serve --workers``; readers.py):
  the event loop hands a worker the bytes and awaits the reading, so that readings run on several cores instead
  of taking turns on one interpreter lock; a worker that dies or hangs costs the request it was reading a 503
  with one line, and a new worker takes its place. JSON pixels are read in the server's threads;
- more than MAX_REQUESTS requests with a body being handled at once -> 503 with ``Retry-After``, before their
  bodies are read (RequestLimit; GET requests such as /healthz are never refused). Idle connections do not
  count: a connection whose request headers are not complete ``--header-timeout`` seconds (10) after it opened
  or after its previous answer is closed (408 when part of a request came), a kept-alive connection silent for
  ``--idle-timeout`` seconds (5) is closed, and beyond guard.MAX_CONNECTIONS (1,024, fewer when the process
  may open fewer files) a new connection closes the one that has waited longest without a request (guard.py,
  see ``uvicorn_options``). The "socket.accept() out of system resource" line (file descriptors used up) is
  logged at most once per LOG_EVERY_S seconds, with the count of the ones held back.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from lenet5.data.digits import Digit
from lenet5.data.images import CONTENT_TYPES, FORMATS, MIN_SIDE, read_gray
from lenet5.errors import ImageError, Lenet5Error, first_line
from lenet5.predict import Predictor, load_reader
from lenet5.serve.guard import HEADER_TIMEOUT_S, IDLE_TIMEOUT_S, MAX_CONNECTIONS, connection_limit, guarded_protocol
from lenet5.serve.readers import SUPPORTED, ReaderPool
from lenet5.serve.reading import NO_MEMORY, answer_for, reader_paths

MAX_BODY_BYTES = 10_000_000  # lenet5 serve --max-body-mb; a phone photo is 3-10 MB
BODY_TIMEOUT_S = 20.0  # the whole body must arrive in this time (2 MiB needs ~100 KB/s), else 408: slow-loris
MAX_PIXELS_SIDE = 1024  # JSON pixels with "prepare": true
JSON_KEYS = ("pixels", "prepare")  # what a JSON body may hold; anything else is 422
MAX_PREPARING = max(1, min(4, os.cpu_count() or 1))  # images decoded and prepared at once (memory: see above)
MAX_WAITING = 64  # images waiting for a turn; more -> 503 at once
SMALL_PIXELS = 2_000_000  # decoded pixels up to which an image takes the small lane (1600x1250)
WAIT_S = 30.0  # the longest an image waits for its turn before a 503
RETRY_AFTER_S = 1
MAX_REQUESTS = 128  # requests with a body handled at once (each holds up to --max-body-mb); more get 503
LOG_EVERY_S = 10.0  # a flood of one log line (accept out of resource) gets through once per this many seconds
STATIC = Path(__file__).parent / "static"
ACCEPTED = (
    "multipart/form-data (image in field 'file'), application/json ({\"pixels\": 28x28}) or "
    f"a {', '.join(FORMATS)} body"
)


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413, before and while reading, and
    bodies that take longer than ``timeout`` seconds to arrive with 408 (a slow-loris client).

    The body (at most ``limit`` bytes) is read here and replayed to the app.
    """

    def __init__(self, app, limit: int = MAX_BODY_BYTES, timeout: float = BODY_TIMEOUT_S) -> None:
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _send_error(send, 400, "Content-Length is not a number")
                return
            if size > self.limit:
                await _send_error(send, 413, self._too_large(f"{size} bytes"))
                return
        chunks, total = [], 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                await _send_error(send, 408, f"request body did not arrive within {self.timeout:g} s")
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.limit:
                await _send_error(send, 413, self._too_large(f"more than {self.limit} bytes"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self, what: str) -> str:
        return (
            f"request body is too large ({what}); the limit is {self.limit} bytes "
            f"({self.limit / 1e6:g} MB; lenet5 serve --max-body-mb sets it)"
        )


async def _send_error(send, status: int, detail: str, extra: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestLimit:
    """ASGI middleware: at most ``limit`` requests with a body (POST, PUT, ...) handled at once; more get 503
    with Retry-After before their bodies are read (each body may hold up to --max-body-mb of memory). GET,
    HEAD and OPTIONS are never refused, so /healthz answers under any load."""

    def __init__(self, app, limit: int = MAX_REQUESTS) -> None:
        self.app, self.limit, self.active = app, limit, 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            await _send_error(
                send,
                503,
                f"busy: {self.limit} requests are being handled; try again shortly",
                [(b"retry-after", str(RETRY_AFTER_S).encode())],
            )
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


class Busy(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(503, detail, headers={"Retry-After": str(RETRY_AFTER_S)})


class Turns:
    """At most ``slots`` images prepared at once, at most ``waiting`` more queued for ``wait_s`` seconds each;
    anything beyond gets a 503 (Busy) at once. Lives on the event loop (no locks needed)."""

    def __init__(self, slots: int, waiting: int, wait_s: float = WAIT_S) -> None:
        if slots < 1 or waiting < 0:
            raise ValueError(f"need at least 1 slot and 0 waiting, got {slots} and {waiting}")
        self.slots, self.waiting, self.wait_s = slots, waiting, wait_s
        self.admitted = 0  # preparing + waiting
        self._free = asyncio.Semaphore(slots)

    async def run(self, func, *args):
        """func(*args) when a slot is free (awaited when it is a coroutine function, else in a worker thread);
        Busy when there is no room or no turn in time."""
        if self.admitted >= self.slots + self.waiting:
            raise Busy(
                f"busy: {self.slots} images are being prepared and {self.waiting} are waiting; try again shortly"
            )
        self.admitted += 1
        try:
            turn = asyncio.ensure_future(self._free.acquire())
            await asyncio.wait({turn}, timeout=self.wait_s)  # (wait_for could lose a slot won as time ran out)
            if not turn.done():
                turn.cancel()
                try:
                    await turn  # the slot may have come after all
                except asyncio.CancelledError:
                    raise Busy(
                        f"busy: no turn to prepare this image within {self.wait_s:g} s; try again shortly"
                    ) from None
            try:  # the thread is never abandoned: the slot is held until the work is done
                if inspect.iscoroutinefunction(func):
                    return await func(*args)
                return await run_in_threadpool(func, *args)
            finally:
                self._free.release()
        finally:
            self.admitted -= 1


class Lanes:
    """Two Turns: one for images of at most SMALL_PIXELS decoded pixels, one for larger ones, so that a
    drawing is prepared at once while 40-megapixel images wait for theirs. The lane is chosen from the
    image's header (declared width x height), read without decoding; bytes whose header cannot be read take
    the small lane (they fail at once when decoded)."""

    def __init__(
        self, slots: int, waiting: int, wait_s: float = WAIT_S, small_pixels: int = SMALL_PIXELS, small_slots: int = 2
    ) -> None:
        self.large = Turns(slots, waiting, wait_s)
        self.small = Turns(max(small_slots, slots), waiting, wait_s)
        self.small_pixels = small_pixels

    def lane(self, data: bytes) -> Turns:
        """The lane for an image's bytes: self.small or self.large."""
        return self.small if declared_pixels(data) <= self.small_pixels else self.large

    async def run(self, data: bytes, func, *args):
        return await self.lane(data).run(func, *args)


def declared_pixels(data: bytes) -> int:
    """Width x height from an image's header (no pixel is decoded: a few microseconds); 0 when unreadable."""
    import io
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=tuple(FORMATS)) as img:
                w, h = img.size
        return int(w) * int(h)
    except Exception:  # noqa: BLE001 - not an image, a damaged header, a bomb: decoding will say which
        return 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value in (None, "") else int(value)
    except ValueError:
        raise Lenet5Error(f"{name} must be a whole number, got {value!r}") from None


class OncePer(logging.Filter):
    """Lets a log line that matches ``needle`` through once per ``seconds``, telling how many it held back;
    other lines pass untouched. A client that uses up the file descriptors makes asyncio log
    "socket.accept() out of system resource" with a traceback over and over."""

    def __init__(self, needle: str, seconds: float = LOG_EVERY_S) -> None:
        super().__init__()
        self.needle, self.seconds = needle, seconds
        self.last, self.held = -float("inf"), 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a badly formatted record is not ours to judge
            return True
        if self.needle not in message:
            return True
        with self._lock:
            now = time.monotonic()
            if now - self.last < self.seconds:
                self.held += 1
                return False
            self.last, held, self.held = now, self.held, 0
        record.msg = (
            message.splitlines()[0]
            + (f" ({held} more like it in the last {self.seconds:g} s not logged)" if held else "")
            + "; too many open connections?"
        )
        record.args, record.exc_info, record.exc_text = (), None, None  # one line, not a traceback each time
        return True


ACCEPT_FLOOD = "out of system resource"
LOGGERS = ("asyncio", "uvicorn", "uvicorn.error")  # asyncio logs the failed accept; uvicorn its own errors


def limit_log_floods(seconds: float = LOG_EVERY_S) -> None:
    """Install the OncePer filter for the accept flood on the server's loggers (once per process)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OncePer) and f.needle == ACCEPT_FLOOD for f in logger.filters):
            logger.addFilter(OncePer(ACCEPT_FLOOD, seconds))


def uvicorn_options(
    header_timeout: float = HEADER_TIMEOUT_S, idle_timeout: float = IDLE_TIMEOUT_S, max_connections: int | None = None
) -> dict:
    """Settings for uvicorn.run beyond host, port and logging (FastAPI cannot set them: they belong to the
    server): the HTTP/1.1 protocol with a header deadline and room for well-behaved clients (guard.py), and
    the keep-alive idle timeout. ``max_connections`` defaults to $LENET5_MAX_CONNECTIONS, else as many as the
    file-descriptor limit allows up to guard.MAX_CONNECTIONS."""
    if not header_timeout > 0 or not idle_timeout > 0:
        raise Lenet5Error(
            f"the header and idle timeouts must be positive seconds, got {header_timeout} and {idle_timeout}"
        )
    wanted = max_connections if max_connections is not None else _env_int("LENET5_MAX_CONNECTIONS", MAX_CONNECTIONS)
    if wanted < 1:
        raise Lenet5Error(f"LENET5_MAX_CONNECTIONS must be at least 1, got {wanted}")
    return {
        "http": guarded_protocol(header_timeout, connection_limit(wanted)),
        "timeout_keep_alive": idle_timeout,
        "lifespan": "on",  # the app's start-up starts the worker processes: a failure there must stop the server
    }


def create_app(
    model: Predictor | str | Path | list,
    max_body_bytes: int = MAX_BODY_BYTES,
    body_timeout: float = BODY_TIMEOUT_S,
    max_preparing: int | None = None,
    max_waiting: int | None = None,
    workers: int = 0,
    engine: str = "numpy",
) -> FastAPI:
    """The app for one model (a Predictor or a Committee, or checkpoint paths loaded here, once: several make a
    committee). ``max_preparing`` and ``max_waiting`` default to $LENET5_MAX_PREPARING / $LENET5_MAX_WAITING,
    else MAX_PREPARING / MAX_WAITING. ``workers``: processes that read uploaded images (readers.py), started
    with the app and stopped with it, each loading the same checkpoints with ``engine``; 0 reads them in the
    server's threads."""
    if isinstance(model, Predictor):
        predictor = model
    else:
        predictor = load_reader([Path(m) for m in (model if isinstance(model, list) else [model])], engine)
    if workers < 0:
        raise Lenet5Error(f"the service needs 0 or more worker processes, got {workers}")
    if workers and not SUPPORTED:
        raise Lenet5Error("worker processes need a POSIX system (Linux, macOS); use --workers 0")
    pool = ReaderPool(reader_paths(predictor), engine, workers, predictor) if workers else None
    slots = max_preparing if max_preparing is not None else _env_int("LENET5_MAX_PREPARING", MAX_PREPARING)
    waiting = max_waiting if max_waiting is not None else _env_int("LENET5_MAX_WAITING", MAX_WAITING)
    if slots < 1 or waiting < 0:
        raise Lenet5Error(f"the service needs at least 1 image at a time and 0 waiting, got {slots} and {waiting}")
    lanes = Lanes(slots, waiting, small_slots=max(2, workers))  # every worker may read a drawing
    limit_log_floods()
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    health = {
        "status": "ok",
        "model": predictor.model_name,
        "checkpoint": str(predictor.path),
        "sha256": _short_sha256(predictor.path),
    }
    if len(reader_paths(predictor)) > 1:  # a committee: the first member above, every member here
        health["committee"] = [{"checkpoint": str(p), "sha256": _short_sha256(p)} for p in reader_paths(predictor)]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if pool is not None:
            await pool.start()  # never raises: a worker that cannot be had reads in the server's threads
        try:
            yield
        finally:
            if pool is not None:
                await pool.close()

    app = FastAPI(
        title="lenet5", summary="LeNet-5 digit recognition", docs_url="/docs", redoc_url=None, lifespan=lifespan
    )
    app.add_middleware(BodyLimit, limit=max_body_bytes, timeout=body_timeout)
    app.add_middleware(RequestLimit, limit=MAX_REQUESTS)  # added last: runs first, before a body is read

    def read_and_describe(find, *args) -> tuple[dict, list[np.ndarray]]:
        """Runs in a worker thread: decoding, cleaning and the forward passes stay off the event loop."""
        try:
            return predictor.read(*find(predictor.log_probabilities, *args), probabilities=True)
        except Lenet5Error as exc:  # the model, not the request, is at fault: say so in one line
            raise HTTPException(500, str(exc)) from None
        except MemoryError:  # the machine is short of memory now (other processes, a cgroup limit)
            raise Busy(NO_MEMORY) from None

    async def read_upload(data: bytes, name: str, large: bool) -> tuple[dict, list[np.ndarray]]:
        """An uploaded image -> its reading, in a worker process, else in a worker thread."""
        if pool is not None:
            status, doc, fields = await pool.read(data, name, large)
        else:
            status, doc, fields = await run_in_threadpool(answer_for, predictor, data, name)
        if status == 503:
            raise Busy(doc["detail"])
        if status != 200:
            raise HTTPException(status, doc["detail"])
        return doc, fields

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz")
    async def healthz() -> dict:
        return health

    @app.post("/predict")
    async def predict(request: Request, prepared: bool = False) -> JSONResponse:
        kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind == "multipart/form-data":
            data, name = await _read_upload(request)
        elif kind == "application/json":  # at most 1024x1024 pixels, already in memory: no turn needed
            data, name = None, None
            reading, fields = await run_in_threadpool(
                read_and_describe, _find_in_pixels, _parse_json(await request.body())
            )
        elif kind in CONTENT_TYPES:  # image/svg+xml and the like are 415
            data, name = await request.body(), "image"
        else:
            raise HTTPException(415, f"unsupported Content-Type {kind or '(none)'!r}; send {ACCEPTED}")
        if data is not None:  # decoding may cost up to 160 MB: a few at a time, small ones apart
            lane = lanes.lane(data)
            reading, fields = await lane.run(read_upload, data, name, lane is lanes.large)
        if prepared:
            for d, field in zip(reading["digits"], fields):
                d["prepared"] = field.tolist()
            if len(fields) == 1:
                reading["prepared"] = fields[0].tolist()
        return JSONResponse({**reading, "model": predictor.model_name})

    return app


def _short_sha256(path: Path) -> str | None:
    """The first 12 hex digits of the file's SHA-256 (read once, at start-up): two runs' models, or a file
    replaced since, are told apart at a glance. None when the file cannot be read any more."""
    from lenet5.predict import file_sha256

    try:
        return file_sha256(path)[:12]
    except OSError:
        return None


async def _read_upload(request: Request) -> tuple[bytes, str]:
    try:
        form = await request.form(max_files=4, max_fields=16)
    except HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 - python-multipart raises several types for a broken body
        raise HTTPException(400, f"malformed multipart body ({_first_line(exc)})") from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "multipart field 'file' with the image is missing")
        return await upload.read(), upload.filename or "upload"
    finally:
        await form.close()


def _parse_json(body: bytes) -> dict:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise HTTPException(400, f"body is not valid JSON ({_first_line(exc)})") from None
    if not isinstance(doc, dict) or "pixels" not in doc:
        raise HTTPException(422, 'JSON body must be an object {"pixels": [[28 numbers] x 28]}')
    unknown = sorted(str(k)[:40] for k in doc if k not in JSON_KEYS)
    if unknown:
        raise HTTPException(
            422, f"unknown key(s) {', '.join(unknown)} in the JSON body; it takes {', '.join(JSON_KEYS)}"
        )
    return doc


def _find_in_pixels(score, doc: dict) -> tuple[list[Digit], str | None]:
    """{"pixels": ..., "prepare": bool} -> the digits: 28x28 pixels used as they are, or any HxW cleaned and
    read like an uploaded image."""
    prepare = doc.get("prepare", False)
    if not isinstance(prepare, bool):
        raise HTTPException(422, "'prepare' must be true or false")
    _check_pixel_types(doc["pixels"])
    try:
        arr = np.array(doc["pixels"], dtype=np.float64)
    except (TypeError, ValueError, OverflowError, RecursionError):
        raise HTTPException(422, "'pixels' must be a list of rows of numbers, all rows the same length") from None
    if arr.ndim != 2:
        raise HTTPException(422, f"'pixels' must be 2-D (rows of numbers), got shape {list(arr.shape)}")
    h, w = arr.shape
    if not prepare and (h, w) != (28, 28):
        raise HTTPException(422, f"'pixels' must be 28x28, got {h}x{w} (send \"prepare\": true for other sizes)")
    if prepare and not (MIN_SIDE <= min(h, w) and max(h, w) <= MAX_PIXELS_SIDE):
        raise HTTPException(422, f"'pixels' with prepare must be {MIN_SIDE}..{MAX_PIXELS_SIDE} per side, got {h}x{w}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255:
        raise HTTPException(422, "'pixels' must be finite numbers in 0..255")
    if arr.max() <= 1.0 and np.any(arr != np.round(arr)):  # 0..1 floats read as 0..255 would be a black image
        raise HTTPException(422, "'pixels' look like values in 0..1; send grey levels 0..255 (multiply by 255)")
    if not prepare:
        return [Digit(np.round(arr).astype(np.uint8), (0, 0, 28, 28))], None
    try:
        return read_gray((arr / 255.0).astype(np.float32), "pixels", score)
    except ImageError as exc:
        raise HTTPException(400, str(exc)) from None


JSON_NAMES = {str: "a string", bool: "true/false", type(None): "null", dict: "an object", list: "a list"}


def _check_pixel_types(pixels) -> None:
    """422 unless ``pixels`` is a list of lists of JSON numbers. NumPy would read "12" as 12 and true as 1:
    a client sending strings or booleans has a bug, and its picture must not be guessed at."""
    if not isinstance(pixels, list) or not pixels:
        raise HTTPException(422, "'pixels' must be a list of rows of numbers 0..255")
    for r, row in enumerate(pixels):
        if not isinstance(row, list):
            raise HTTPException(
                422,
                f"'pixels' must be a list of rows of numbers 0..255; row {r} is "
                f"{JSON_NAMES.get(type(row), 'a number')}",
            )
        if not set(map(type, row)) <= {int, float}:  # bool is not int here: type(True) is bool
            c, bad = next((c, v) for c, v in enumerate(row) if type(v) not in (int, float))
            kind = JSON_NAMES.get(type(bad), type(bad).__name__)
            raise HTTPException(
                422, f"'pixels' must hold numbers 0..255, not {kind} (row {r}, column {c}: {json.dumps(bad)[:20]})"
            )


def _first_line(exc: Exception) -> str:
    return first_line(exc, 160)
