"""Input paths are checked to be what they should be before anything opens them.

Why: opening a FIFO or a device for reading blocks until a writer comes, so pumlc would hang forever; a folder
given where a file is expected (or the reverse) should be named as such, not reported as "not found".
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pumlc_cli.errors import PumlcError

# The largest image side pumlc trains or infers at (--image-size, --scale-size, synth): 2048 px is more than four
# times the published 448, and one 2048² batch of 64 is already 3 GB of float input.
MAX_IMAGE_SIDE = 2048


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def _stat(path: Path, what: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise PumlcError(f"{path}: {what} not found") from None
    except OSError as err:
        raise PumlcError(f"{path}: cannot read {what} ({err.strerror})") from None


def input_file(path: Path | str, what: str) -> Path:
    """`path`, after checking (symlinks followed) that it is an existing regular file; else one line naming it."""
    path = Path(path)
    mode = _stat(path, what).st_mode
    if not stat.S_ISREG(mode):
        raise PumlcError(f"{path}: {what} is {_kind(mode)}, not a regular file")
    return path


def input_folder(path: Path | str, what: str) -> Path:
    """`path`, after checking (symlinks followed) that it is an existing folder; else one line naming it."""
    path = Path(path)
    mode = _stat(path, what).st_mode
    if not stat.S_ISDIR(mode):
        raise PumlcError(f"{path}: {what} is {_kind(mode)}, not a folder")
    return path


def read_input(path: Path | str, what: str) -> bytes:
    """The bytes of a regular file. It is opened without blocking and checked on the open descriptor, so a FIFO
    swapped in after a check cannot block the read either."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise PumlcError(f"{path}: {what} not found") from None
    except OSError as err:
        raise PumlcError(f"{path}: cannot read {what} ({err.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise PumlcError(f"{path}: {what} is {_kind(mode)}, not a regular file")
    with os.fdopen(fd, "rb") as fh:
        try:
            return fh.read()
        except OSError as err:
            raise PumlcError(f"{path}: cannot read {what} ({err.strerror})") from None
