"""Reading an uploaded image for `lenet5 serve`, and the worker process that does it (readers.py starts them).

``answer_for`` gives what a request gets: the HTTP status and the reading, or ``{"detail": "<one line>"}``.
The server calls it in its own threads (``serve --workers 0``), each worker process (``python -m
lenet5.serve.reading FD ENGINE CHECKPOINT...``) for the images it is handed.

Nothing is pickled. Over a socket pair, a request is REQUEST (the lengths) and the raw bytes of the file name
and of the image; an answer is ANSWER (status and lengths), a JSON document (the reading, or the detail) and
the fields the network saw as raw uint8 bytes. The process loads its reader (``load_reader``) and sends a first
answer when it is ready (200) or cannot be (500, with why); it leaves when its socket closes: the server
closed it, or the server's process ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
import traceback
from pathlib import Path

import numpy as np

from lenet5.errors import ImageError, Lenet5Error, first_line

REQUEST = struct.Struct("<II")  # bytes of the file name (UTF-8), bytes of the image
ANSWER = struct.Struct("<HII")  # HTTP status, bytes of the JSON document, bytes of the fields (N x 28 x 28 uint8)
FIELD = (28, 28)
NO_MEMORY = "not enough memory to prepare this image now; try again shortly"


def reader_paths(reader) -> list[Path]:
    """The checkpoint files a reader was loaded from (a committee's members, in order)."""
    return [m.path for m in getattr(reader, "members", [reader])]


def answer_for(reader, data: bytes, name: str) -> tuple[int, dict, list[np.ndarray]]:
    """An uploaded image's bytes -> (HTTP status, the reading or {"detail": one line}, the fields the network
    saw): 200, 400 (an image that cannot be read), 500 (the model failed), 503 (no memory now)."""
    from lenet5.data.images import open_image, read_image

    name = Path(name).name
    try:
        reading, fields = reader.read(
            *read_image(open_image(data, name), name, reader.log_probabilities), probabilities=True
        )
    except ImageError as exc:
        return 400, {"detail": str(exc)}, []
    except Lenet5Error as exc:  # the model, not the request, is at fault
        return 500, {"detail": str(exc)}, []
    except MemoryError:  # the machine is short of memory now (other processes, a cgroup limit)
        return 503, {"detail": NO_MEMORY}, []
    return 200, reading, fields


def pack_answer(status: int, doc: dict, fields: list[np.ndarray]) -> bytes:
    body = json.dumps(doc).encode()
    raw = np.stack(fields).astype(np.uint8).tobytes() if fields else b""
    return ANSWER.pack(status, len(body), len(raw)) + body + raw


def _receive(sock: socket.socket, n: int) -> bytes | None:
    """Exactly n bytes, or None when the socket closes first."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            return None
        got += k
    return bytes(buf)


def main(argv: list[str]) -> int:
    """A worker process: load the reader, say so, then answer requests until the socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle; it closes us
    sock = socket.socket(fileno=int(argv[0]))
    try:
        from lenet5.predict import load_reader

        reader = load_reader([Path(p) for p in argv[2:]], engine=argv[1])
    except BaseException as exc:  # noqa: BLE001 - tell the server why, in one line
        with contextlib.suppress(OSError):
            sock.sendall(pack_answer(500, {"detail": first_line(exc)}, []))
        return 1
    try:
        sock.sendall(pack_answer(200, {"ready": os.getpid()}, []))
        while (head := _receive(sock, REQUEST.size)) is not None:
            n_name, n_data = REQUEST.unpack(head)
            name, data = _receive(sock, n_name), _receive(sock, n_data)
            if name is None or data is None:
                return 0
            try:
                answer = pack_answer(*answer_for(reader, data, name.decode("utf-8", "replace")))
            except Exception as exc:  # noqa: BLE001 - a bug: the request gets one line, the log the traceback
                traceback.print_exc()
                answer = pack_answer(
                    500, {"detail": f"reading the image failed: {type(exc).__name__}: {first_line(exc)}"}, []
                )
            del data
            sock.sendall(answer)
    except OSError:  # the server is gone (EPIPE, ECONNRESET): nobody to answer
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
