"""The project's own error types: each carries one line a user can act on.

The CLI prints ``error: <message>`` for any ``Lenet5Error`` and exits non-zero, without a traceback.
"""

import errno

# OSErrors of the machine, not bugs: a full disk, a file over the size limit, a read-only place, no permission.
# The CLI prints them as one line too.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none), cut at ``limit``: what a
    one-line error says about a library's failure."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


class Lenet5Error(Exception):
    """Base class for every error caused by the user's input or environment (not by a bug)."""


class DataError(Lenet5Error):
    """The dataset is missing, corrupt, or could not be fetched."""


class IDXError(DataError):
    """A file is not a valid IDX file (bad magic, type, dimensions or size)."""


class ConfigError(Lenet5Error):
    """A configuration key, type or value is wrong."""


class CheckpointError(Lenet5Error):
    """A checkpoint file is missing, truncated, foreign or does not fit the model."""


class ImageError(Lenet5Error):
    """An image file cannot be read or holds no digit."""


class TrainingError(Lenet5Error):
    """Training cannot go on (for example the loss became NaN)."""
