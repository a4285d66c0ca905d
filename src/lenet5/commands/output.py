"""What every command prints: one JSON document on stdout (--json), lines for people on stderr, exit codes."""

from __future__ import annotations

import sys

EXIT_USER_ERROR = 2  # a mistake the user can mend: one line `error: ...`
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


def print_json(obj) -> None:
    """``obj`` as one strict JSON document on stdout (NaN is null), flushed: what --json prints."""
    from lenet5.jsonout import dumps

    sys.stdout.write(dumps(obj) + "\n")
    sys.stdout.flush()


def print_err(message: str) -> None:
    """A line for the person at the terminal on stderr: progress, notes, `error: ...`; stdout stays for results."""
    print(message, file=sys.stderr, flush=True)
