"""`pumlc export RUN --format onnx|torchscript --out FILE`: the val-selected model for serving outside pumlc."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pumlc_cli.evaluate.export import ExportFormat
from pumlc_cli.help import examples

EXAMPLES = examples(
    "pumlc export runs/pu --format onnx --out pu.onnx",
    "pumlc export runs/pu --format torchscript --out pu.torchscript.pt",
)


def export(
    run: Annotated[Path, typer.Argument(help="Run folder (its best.pt) or a checkpoint file.")],
    format: Annotated[ExportFormat, typer.Option("--format", help="onnx (needs pumlc\\[export]) or torchscript.")],
    out: Annotated[Path, typer.Option("--out", help="File to write.")],
    force: Annotated[bool, typer.Option("--force", help="Replace a model pumlc exported there before.")] = False,
) -> None:
    """Export the val-selected weights, scores out, preprocessing and classes in the metadata; the file is
    checked against `pumlc predict` before it is written."""
    from pumlc_cli.evaluate.export import ExportOptions, report, run_export

    report(run_export(ExportOptions(run=run, format=format, out=out, force=force)), format)
