"""Start a real, throw-away PostgreSQL server for tests: initdb + pg_ctl in a temporary folder, 127.0.0.1 only.

PostgreSQL refuses to run as root, and tests run as root in CI. As root the server runs as the `postgres`
user (Debian's postgresql package creates it; .ci/run creates it where the binaries came without it), with the
data folder handed to that user; as anyone else it runs as the current user. Authentication is `trust` on
127.0.0.1 only: nothing outside this machine can connect, and the folder is deleted afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from serving import free_port

PREFERRED_VERSION = "15"


def find_bindir() -> Path | None:
    """Debian's PostgreSQL binaries (15 first, else the newest installed), or initdb on PATH."""
    candidates = [f"/usr/lib/postgresql/{PREFERRED_VERSION}/bin"]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for folder in candidates:
        if all(os.access(Path(folder) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def server_user() -> tuple[str | None, str | None]:
    """(user to run the server as, None for the current one) or (None, reason it cannot run)."""
    if os.geteuid() != 0:
        return None, None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None, "running as root and there is no `postgres` user to run the server as (initdb refuses root)"
    if not shutil.which("runuser") and not shutil.which("su"):
        return None, "running as root and neither runuser nor su is there to switch to the `postgres` user"
    return "postgres", None


def unavailable_reason() -> str | None:
    """Why a server cannot be started here, or None."""
    if find_bindir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or on PATH"
    user, reason = server_user()
    return reason


def _as_user(user: str | None, cmd: list[str]) -> list[str]:
    if user is None:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *cmd]
    return ["su", user, "-s", "/bin/sh", "-c", " ".join(f"'{c}'" for c in cmd)]


def _run(cmd: list[str], cwd: Path, timeout: float) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


@contextlib.contextmanager
def running_postgres(timeout: float = 60.0):
    """A fresh PostgreSQL cluster on 127.0.0.1:<free port>; yields the base URL postgresql://postgres@127.0.0.1:PORT.

    The server is stopped and its folder removed on the way out, also when the body raised.
    """
    bindir = find_bindir()
    user, reason = server_user()
    if bindir is None or reason:
        raise RuntimeError(unavailable_reason())
    # As root, in /tmp: a TMPDIR only root can enter would keep the server's user out of its own folder.
    root = Path(tempfile.mkdtemp(prefix="lenet5-pg-", dir="/tmp" if user is not None else None))
    data, log = root / "data", root / "server.log"
    started = False
    try:
        data.mkdir()
        if user is not None:
            info = pwd.getpwnam(user)
            for path in (root, data):
                os.chown(path, info.pw_uid, info.pw_gid)
        _run(
            _as_user(
                user,
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
            ),
            cwd=root,
            timeout=timeout,
        )
        port = free_port()
        options = (
            f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off -c synchronous_commit=off "
            f"-c full_page_writes=off -c max_connections=50"
        )
        started = True  # from here on, stop whatever may have started
        _run(
            _as_user(
                user,
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "start",
                ],
            ),
            cwd=root,
            timeout=timeout + 10,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        if started:
            _stop(bindir, user, data, root)
        shutil.rmtree(root, ignore_errors=True)


def _stop(bindir: Path, user: str | None, data: Path, root: Path) -> None:
    for mode in ("fast", "immediate"):
        try:
            _run(
                _as_user(user, [str(bindir / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "-t", "20", "stop"]),
                cwd=root,
                timeout=30,
            )
            return
        except (RuntimeError, subprocess.TimeoutExpired):
            if not (data / "postmaster.pid").exists():
                return  # it never started, or is gone already
    try:  # last resort: the postmaster we started, by the pid it wrote
        pid = int((data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        pass
