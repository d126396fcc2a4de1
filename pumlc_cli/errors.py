"""User-facing errors: one line on stderr and a non-zero exit, never a traceback."""


class PumlcError(Exception):
    """Bad input or state the user can fix; the CLI prints `pumlc: error: <message>` and exits 2."""
