"""The command line: the only place that parses arguments and prints for humans.

Every command prints one JSON document on stdout with --json; progress and logs go to stderr.
A user mistake (Lenet5Error) prints one line `error: ...` and exits 2, never a traceback.
Each command's flags are declared in commands/parser.py and run by its function in commands/<command>.py;
this module ties them together and turns what can go wrong anywhere into one line and an exit code.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from lenet5.commands.data import cmd_data
from lenet5.commands.evaluate import cmd_evaluate
from lenet5.commands.export import cmd_export
from lenet5.commands.output import EXIT_INTERRUPTED, EXIT_USER_ERROR, print_err
from lenet5.commands.parser import command_parser, subcommands
from lenet5.commands.predict import cmd_predict
from lenet5.commands.serve import cmd_serve
from lenet5.commands.summary import cmd_summary
from lenet5.commands.train import cmd_train
from lenet5.commands.tune import cmd_tune
from lenet5.errors import WRITE_ERRNOS, Lenet5Error, first_line

# The least address space (ulimit -v, prlimit --as) lenet5 runs in: below it the libraries fail where no one
# line can be said (OpenBLAS prints its own message and exits, C++ code throws std::bad_alloc), so it is
# refused at the start. A small training run peaks at ~430 MB of address space.
MIN_ADDRESS_SPACE = 512 * 2**20
# lenet5 runs BLAS on one thread where it computes (blas.py; the NumPy engine's workers are processes), yet
# OpenBLAS starts a thread per core when NumPy is imported, and where a process limit (ulimit -u, a container's
# pids limit) leaves no room for them it raises SIGINT: a run "interrupted" by nobody. Without that pool nothing
# can fail; set OPENBLAS_NUM_THREADS yourself to have one.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

COMMANDS = {  # command -> the function that runs it with the parsed flags and returns the exit code
    "data": cmd_data,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "summary": cmd_summary,
    "export": cmd_export,
    "predict": cmd_predict,
    "serve": cmd_serve,
    "tune": cmd_tune,
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (commands/parser.py), each with the function that runs it (``args.func``)."""
    parser = command_parser()
    for name, command in subcommands(parser).items():
        command.set_defaults(func=COMMANDS[name])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = subcommands(parser)
    if argv and not argv[0].startswith("-") and argv[0] not in commands:
        import difflib

        close = difflib.get_close_matches(argv[0], list(commands), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; commands are: {', '.join(commands)}"
        print_err(f"error: unknown command '{argv[0]}'{hint}")
        return EXIT_USER_ERROR
    args = parser.parse_args(argv)
    try:
        _check_address_space()
        return int(args.func(args) or 0)
    except Lenet5Error as exc:
        print_err(f"error: {exc}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print_err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except MemoryError as exc:  # NumPy's, Python's, and C++'s std::bad_alloc as Python sees it
        print_err(f"error: out of memory ({first_line(exc)}){_address_space_note()}")
        return EXIT_USER_ERROR
    except OSError as exc:
        message = _os_error_line(exc)
        if message is None:
            raise
        print_err(f"error: {message}")
        return EXIT_USER_ERROR


MACHINE_LIMITS = {  # errno -> what limit it is and how to raise it
    errno.EMFILE: "this process may open only {nofile} files (ulimit -n); raise the limit, e.g. ulimit -n 1024",
    errno.ENFILE: "the system has no file descriptors left; close programs or raise fs.file-max",
    errno.ENOMEM: "out of memory{note}",
    errno.EAGAIN: "the system refused a new process or thread (ulimit -u, or a container's pids limit); raise it",
}


def _os_error_line(exc: OSError) -> str | None:
    """One line for an OSError of the machine or of a file the user named (a full or read-only disk, no
    permission, a name too long, a read error, a limit reached); None for anything else (a bug: traceback)."""
    if exc.errno in WRITE_ERRNOS:
        verb = "cannot write " if exc.errno not in (errno.EACCES, errno.EPERM) else ""  # those may be reads
        return f"{verb}{exc.filename or 'a file'}: {exc.strerror}"
    if exc.errno in MACHINE_LIMITS:
        limit = MACHINE_LIMITS[exc.errno].format(nofile=_limit("RLIMIT_NOFILE"), note=_address_space_note())
        return f"{exc.strerror or os.strerror(exc.errno)}: {limit}"
    if exc.filename is not None and exc.errno is not None:  # EIO, ENAMETOOLONG, ELOOP, ENOTDIR, ...
        name = os.fsdecode(exc.filename) if isinstance(exc.filename, bytes) else str(exc.filename)
        return f"{name}: {exc.strerror or os.strerror(exc.errno)}"
    return None


def _limit(name: str):
    """The soft resource limit ``name`` (resource.RLIMIT_...), or None where there is none or no way to ask."""
    try:
        import resource

        soft, _ = resource.getrlimit(getattr(resource, name))
        return None if soft == resource.RLIM_INFINITY else soft
    except (ImportError, AttributeError, OSError, ValueError):
        return None


def _address_space_note() -> str:
    limit = _limit("RLIMIT_AS")
    if limit is None:
        return "; free some memory or run with less (--threads 1, a smaller --batch-size)"
    return f"; this process may use {limit / 2**20:.0f} MB of address space (ulimit -v, prlimit --as): raise the limit"


def _check_address_space() -> None:
    limit = _limit("RLIMIT_AS")
    if limit is not None and limit < MIN_ADDRESS_SPACE:
        raise Lenet5Error(
            f"this process may use {limit / 2**20:.0f} MB of address space (ulimit -v, prlimit --as); "
            f"lenet5 needs at least {MIN_ADDRESS_SPACE // 2**20} MB: raise the limit"
        )
