"""Run `pumlc` sub-commands from the demo and reproduce drivers, echoing each one so users can copy it.

Commands run in this process (one torch/timm import for the whole driver instead of one per step); torchrun
re-launches still start their own processes.
"""

from __future__ import annotations

import contextlib
import io
import shlex
import time

import typer
from rich.console import Console

from pumlc_cli.errors import PumlcError

console = Console(stderr=True, highlight=False)


def flags(**options: object) -> list[str]:
    """`flags(batch_size=32, out=p)` → `["--batch-size", "32", "--out", "p"]`: drivers spell options once."""
    out: list[str] = []
    for name, value in options.items():
        out += [f"--{name.replace('_', '-')}", str(value)]
    return out


def pumlc(*args: str, quiet: bool = False) -> float:
    """Run `pumlc ARGS`; return its wall time; a failure stops the driver with the command's exit code."""
    from pumlc_cli.cli import app

    shown = "pumlc " + " ".join(shlex.quote(str(a)) for a in args)
    console.print(f"[bold cyan]$ {shown}[/]")
    start = time.perf_counter()
    code = 0
    sink = contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()
    try:
        with sink:
            result = app([str(a) for a in args], standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except PumlcError as err:
        console.print(f"pumlc: error: {err}")
        code = 2
    except typer.Exit as stop:
        code = stop.exit_code
    except typer.TyperException as err:  # a parser error (Typer's vendored click)
        from pumlc_cli.help import parser_error_line

        console.print(f"pumlc: error: {parser_error_line(err)}")
        code = err.exit_code
    if code:
        console.print(f"[red]command failed with exit code {code}:[/] {shown}")
        raise SystemExit(code)
    return time.perf_counter() - start
