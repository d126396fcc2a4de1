"""Run `pumlc` sub-commands as child processes, echoing each command so users can copy it."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time

from rich.console import Console

console = Console(stderr=True, highlight=False)


def pumlc(*args: str, quiet: bool = False) -> float:
    """Run `python -m pumlc_cli ARGS`; return its wall time; a failure stops the driver with its exit code."""
    shown = "pumlc " + " ".join(shlex.quote(a) for a in args)
    console.print(f"[bold cyan]$ {shown}[/]")
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pumlc_cli", *args],
        stdout=subprocess.DEVNULL if quiet else None,
        check=False,
    )
    if done.returncode:
        console.print(f"[red]command failed with exit code {done.returncode}:[/] {shown}")
        raise SystemExit(done.returncode)
    return time.perf_counter() - start
