"""`pumlc eval CKPT`: metrics of a checkpoint on a prepared split, as rich tables and JSON."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import typer

from pumlc_cli.help import examples, unit_interval

EXAMPLES = examples(
    "pumlc eval runs/pu",
    "pumlc eval runs/pu/last.pt --split val --json - | jq .mAP",
    "pumlc eval runs/pu --per-class-csv per_class.csv",
)


_OUT = "Output"
_RUN = "Devices and speed"


def eval_command(
    ctx: typer.Context,
    ckpt: Annotated[Path, typer.Argument(help="Run folder (its best.pt) or a checkpoint file (best.pt, last.pt).")],
    data: Annotated[Path | None, typer.Option(help="Prepared folder; default: the one the run trained on.")] = None,
    split: Annotated[Literal["train", "val", "test"], typer.Option(help="Split to score.")] = "test",
    threshold: Annotated[
        float,
        typer.Option(
            parser=unit_interval,
            metavar="FLOAT",
            help="Fixed threshold for CP/CR/CF1/OP/OR/OF1 (also shown: at val thresholds).",
        ),
    ] = 0.5,
    mask_unknown: Annotated[
        bool, typer.Option("--mask-unknown", help="Score against the observed labels, unknowns ignored.")
    ] = False,
    weights: Annotated[
        Literal["best", "regular", "ema"], typer.Option(help="Headline weights; best = selected on val.")
    ] = "best",
    voc11: Annotated[bool, typer.Option("--voc11", help="Also report VOC 11-point interpolated AP.")] = False,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write every number as JSON ('-': stdout).", rich_help_panel=_OUT)
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="PNG of per-class AP (and AP vs missing-positive rate).", rich_help_panel=_OUT)
    ] = None,
    scores_file: Annotated[
        Path | None,
        typer.Option("--save-scores", help="Write images, targets, scores (.npz file).", rich_help_panel=_OUT),
    ] = None,
    per_class_csv: Annotated[
        Path | None,
        typer.Option(
            help="Write per-class support, AP, threshold, precision, recall, F1 as CSV ('-': stdout).",
            rich_help_panel=_OUT,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch per process.", rich_help_panel=_RUN)] = 64,
    workers: Annotated[
        int, typer.Option(min=0, help="Data-loading workers (default: cores).", rich_help_panel=_RUN)
    ] = min(8, os.cpu_count() or 1),
    decode: Annotated[
        Literal["pil", "gpu"],
        typer.Option(help="JPEG decoding: CPU workers or nvJPEG on the device.", rich_help_panel=_RUN),
    ] = "pil",
    device: Annotated[Literal["auto", "cuda", "cpu"], typer.Option(help="Device.", rich_help_panel=_RUN)] = "auto",
    gpus: Annotated[int, typer.Option(min=1, help="Shard across GPUs (torchrun).", rich_help_panel=_RUN)] = 1,
    nproc: Annotated[int, typer.Option(min=1, help="Shard across CPU processes (gloo).", rich_help_panel=_RUN)] = 1,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace existing output files.", rich_help_panel=_OUT),
    ] = False,
) -> None:
    """Metrics of a run's val-selected weights (best.pt), or of both weight sets of a last.pt, on one split."""
    from pumlc_cli.evaluate.run import EvalOptions, run_eval
    from pumlc_cli.runtime.launch import repeat_argv

    # torchrun children get the resolved checkpoint, data and device first, and no process count (torchrun's
    # parser would take `--nproc` for its own option)
    argv = repeat_argv(ctx, data=None, device=None, gpus=None, nproc=None)[1:]
    code = run_eval(EvalOptions(**ctx.params, argv=tuple(argv)))
    if code:
        raise typer.Exit(code)
