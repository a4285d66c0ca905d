"""The helper processes of lenet5 (the NumPy engine's workers, the distortion prefetcher, serve's readers): a
fresh interpreter running one of lenet5's modules, talking to its parent over one end of a socket pair."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def start_child(
    module: str, args: list[str], keep_fds: tuple[int, ...] = (), quiet: bool = True
) -> tuple[subprocess.Popen, socket.socket]:
    """Start ``python -m module <fd> *args``, where <fd> is the child's end of a new socket pair, passing it the
    descriptors ``keep_fds`` too; return the process and our end. The child runs one BLAS thread, in its own
    session (Ctrl-C reaches the parent, which stops it), with stderr discarded when ``quiet``, and finds lenet5
    where this process found it (a source tree included). OSError or SubprocessError when the machine has no
    process or file descriptor left."""
    import lenet5

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(lenet5.__file__)))  # where lenet5 is imported from
    if os.path.basename(root) not in ("site-packages", "dist-packages"):  # a source tree: the process needs it
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", module, str(theirs.fileno()), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if quiet else None,
            start_new_session=True,
            pass_fds=(theirs.fileno(), *keep_fds),
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return process, ours
