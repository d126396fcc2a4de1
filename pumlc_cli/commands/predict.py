"""`pumlc predict CKPT PATHS...`: labels and scores for image files, folders or globs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from pumlc_cli.help import examples, unit_interval

EXAMPLES = examples(
    "pumlc predict runs/pu photo.jpg holiday/ --top-k 3",
    "pumlc predict runs/pu 'imgs/**/*.jpg' --csv predictions.csv",
)

_OUT = "Output"


def predict(
    ctx: typer.Context,
    ckpt: Annotated[Path, typer.Argument(help="Run folder (its best.pt) or a checkpoint from `pumlc train`.")],
    paths: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns.")],
    threshold: Annotated[
        float | None,
        typer.Option(
            parser=unit_interval,
            metavar="FLOAT",
            show_default="the per-class thresholds chosen on val in training, else 0.5",
            help="Label the classes scoring at least this.",
        ),
    ] = None,
    top_k: Annotated[
        int | None, typer.Option(min=1, help="Label the K highest-scoring classes instead (threshold ignored).")
    ] = None,
    weights: Annotated[
        Literal["best", "regular", "ema"], typer.Option(help="Weights; best = selected on val.")
    ] = "best",
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write predictions as JSON ('-': stdout).", rich_help_panel=_OUT)
    ] = None,
    csv_file: Annotated[
        Path | None,
        typer.Option("--csv", help="Write image, labels, scores as CSV ('-': stdout).", rich_help_panel=_OUT),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 32,
    device: Annotated[Literal["auto", "cuda", "cpu"], typer.Option(help="Device.")] = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing --json/--csv file.", rich_help_panel=_OUT)
    ] = False,
) -> None:
    """Labels and scores for every readable image (an unreadable one is reported and skipped)."""
    from pumlc_cli.evaluate.predict import PredictOptions, run_predict

    run_predict(PredictOptions(**ctx.params))
