"""User-facing errors: one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations


def first_line(message: str) -> str:
    """The user's line of a message. A DataLoader worker re-raises its exception as
    "Caught X in DataLoader worker process N.\\nOriginal Traceback ...\\nmodule.X: <message>": keep <message>."""
    text = str(message).strip()
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        last = text.splitlines()[-1]
        head, sep, rest = last.partition(": ")
        text = rest if sep and " " not in head else last
    lines = text.splitlines()
    return lines[0] if lines else ""


class PumlcError(Exception):
    """Bad input or state the user can fix; the CLI prints `pumlc: error: <message>` and exits 2.

    The message is kept to one line even when the error crossed a DataLoader worker boundary.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(first_line(str(message)))
