"""`pumlc audit CKPT`: rank the probably missing and wrong labels of a prepared split, estimate them per class."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from pumlc_cli.errors import PumlcError
from pumlc_cli.help import unit_interval

if TYPE_CHECKING:
    from pumlc_cli.train.start import TrainRequest

Split = Literal["train", "val", "all"]


def audit(
    ctx: typer.Context,
    ckpt: Annotated[Path, typer.Argument(help="Checkpoint or run folder (its best.pt).")],
    data: Annotated[Path | None, typer.Option(help="Prepared folder; default: the one the run trained on.")] = None,
    split: Annotated[Split, typer.Option(help="train, val or all (= train + val; test is never audited).")] = "train",
    top: Annotated[int, typer.Option(min=0, help="Suggestions of each kind shown in the tables.")] = 10,
    floor: Annotated[
        float,
        typer.Option(parser=unit_interval, metavar="FLOAT", help="--csv/--json keep suggestions with score ≥ this."),
    ] = 0.1,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Every suggestion above the floor, ranked ('-': stdout).")
    ] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="The whole report ('-': stdout only).")] = None,
    plot: Annotated[Path | None, typer.Option(help="PNG of the per-class estimated rates.")] = None,
    folds: Annotated[int, typer.Option(min=0, help="Cross-fit K models on K−1 folds of train each (0: off).")] = 0,
    folds_dir: Annotated[
        Path | None, typer.Option(help="Where fold data and runs go (default: RUN/audit-folds<K>).")
    ] = None,
    train_args: Annotated[
        str, typer.Option(help="Extra `pumlc train` flags for the fold models (after the run's config.json).")
    ] = "",
    seed: Annotated[int, typer.Option(help="Seed of the fold assignment.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch per process.")] = 64,
    workers: Annotated[int, typer.Option(min=0, help="Data-loading workers.")] = min(8, os.cpu_count() or 1),
    device: Annotated[Literal["auto", "cpu", "cuda"], typer.Option(help="cuda, cpu or auto.")] = "auto",
    gpus: Annotated[int, typer.Option(min=1, help="Shard scoring across this many GPUs (torchrun).")] = 1,
    nproc: Annotated[int, typer.Option(min=1, help="Shard scoring across this many CPU processes (gloo).")] = 1,
    label_frequency: Annotated[
        float | None,
        typer.Option(
            min=0.01, max=1.0, help="Share of true positives that are observed positive, if known (else estimated)."
        ),
    ] = None,
    top_unknown: Annotated[
        int,
        typer.Option(
            min=1,
            help="Data whose unstated labels are unknown (Open Images): score each image's K highest-scoring unknown "
            "classes as suspected missing positives (memory N·K, not N x classes).",
        ),
    ] = 10,
    force: Annotated[bool, typer.Option("--force", help="Replace existing --csv/--json/--plot files.")] = False,
) -> None:
    """Rank suspected missing positives (unknown/negative, high score) and wrong positives (positive, low score)."""
    from pumlc_cli.audit.run import AuditOptions, run_audit
    from pumlc_cli.runtime.launch import repeat_argv

    opts = AuditOptions(
        **ctx.params,
        fold_template=_fold_template(train_args) if folds else None,
        # children need no process count (torchrun's parser would take `--nproc` as its own) and get --device
        argv=tuple(repeat_argv(ctx, device=None, gpus=None, nproc=None)),
    )
    code = run_audit(opts)
    if code:
        raise typer.Exit(code)


def _fold_template(train_args: str) -> TrainRequest:
    """The fold runs' extra options, parsed by `pumlc train` itself (the audit adds the run's config.json)."""
    import shlex

    from pumlc_cli.commands.train import parse_train_args
    from pumlc_cli.help import parser_error_line

    placeholder = ["FOLD-DATA", "--out", "FOLD-RUN"]  # each fold replaces both
    try:
        request = parse_train_args([*placeholder, *shlex.split(train_args)])
    except ValueError as err:  # shlex: an unclosed quote
        raise PumlcError(f"--train-args {train_args!r}: {err}") from None
    except typer.TyperException as err:
        raise PumlcError(f"--train-args {train_args!r}: {parser_error_line(err)}") from None
    return request
