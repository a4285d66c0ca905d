"""Atomic file writes: write to a temporary name in the same folder, fsync, then rename.

A crash at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

# A write in progress: ``.<name>.[<pid>.]<8 random>.tmp`` beside the file it becomes (the one format; what a
# killed process leaves is recognised by it and removed by the run folder and the data cache).
_TEMPORARY = re.compile(r"\.[\w.-]+?\.(?:\d+\.)?[0-9a-z_]{8}\.tmp")
_TAIL = re.compile(r"(?:\d+\.)?[0-9a-z_]{8}\.tmp")  # what follows ".<name>."


def temporary_name(name: str, tag: str | None = None) -> str:
    """A fresh hidden name for a write in progress of file ``name`` (``tag``: e.g. the writer's pid)."""
    return f".{name}.{tag + '.' if tag else ''}{secrets.token_hex(4)}.tmp"


def is_temporary(filename: str, names: Iterable[str] | None = None) -> bool:
    """Whether ``filename`` is a write in progress (temporary_name's form), of one of ``names`` when given."""
    if names is None:
        return _TEMPORARY.fullmatch(filename) is not None
    return any(filename.startswith(f".{n}.") and _TAIL.fullmatch(filename[len(n) + 2 :]) for n in names)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is fsynced and renamed onto ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # an exclusive create under a random name, with the mode open() gives (0666 less the umask; the
        # kernel applies it, so the process umask is never changed while other threads create files)
        while tmp is None:
            candidate = path.parent / temporary_name(path.name)
            try:
                os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666))
                tmp = candidate
            except FileExistsError:
                continue
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full or read-only disk: name the file the user knows, not the temporary one
        if exc.filename is None or Path(str(exc.filename)).name.startswith(f".{path.name}."):
            exc.filename = str(path)
        raise
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
