"""Where text output goes: `-` means stdout (for pipes), any other path is written atomically.

Why one helper: every command's `--json FILE` (and `--csv FILE`) must treat `-` the same way, and the rich
tables must then move to stderr so that stdout holds the document alone.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pumlc_cli.atomic import write_text_atomic
from pumlc_cli.errors import PumlcError
from pumlc_cli.outputs import is_stdout

if TYPE_CHECKING:
    from rich.console import Console

# Tables written to a pipe or file use this fixed width, so the output does not depend on the terminal.
PIPE_WIDTH = 80


def write_text(path: Path | str, text: str) -> None:
    """Write `text` to stdout for `-`, else atomically to `path` (an unwritable path is a one-line error)."""
    if is_stdout(path):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        write_text_atomic(path, text)
    except OSError as err:
        raise PumlcError(f"{path}: cannot write ({err.strerror})") from None


def table_console(stderr: bool = False) -> Console:
    """A console for tables: the terminal's width when interactive; plain and `PIPE_WIDTH` wide when piped."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else PIPE_WIDTH)
