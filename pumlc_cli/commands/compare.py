"""`pumlc compare RUN...`: one table of the options in which runs differ and their val / test metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pumlc_cli.help import examples

EXAMPLES = examples(
    "pumlc compare runs/pu runs/asl",
    "pumlc eval runs/pu --json runs/pu/eval.json && pumlc compare runs/*",
)


def compare(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN...", help="Run folders (from `pumlc train`).")],
) -> None:
    """Compare runs: the options that differ, best and last val mAP, and test metrics from RUN/eval*.json."""
    from pumlc_cli.train.compare import compare_runs

    compare_runs(runs)
