"""`pumlc audit CKPT`: rank the probably missing and wrong labels of a prepared split, estimate them per class."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import typer

from pumlc_cli.errors import PumlcError

Split = Literal["train", "val", "all"]
AUDITED = {"train": ("train",), "val": ("val",), "all": ("train", "val")}


@dataclass(frozen=True)
class AuditOptions:
    """Everything `audit` needs, so a torchrun re-launch can repeat it exactly."""

    ckpt: Path
    data: Path | None
    split: str
    top: int
    floor: float
    csv_file: Path | None
    json_file: Path | None
    plot: Path | None
    folds: int
    folds_dir: Path | None
    train_args: str
    seed: int
    batch_size: int
    workers: int
    device: str
    gpus: int
    nproc: int
    force: bool = False
    # the command line that repeats these options under torchrun (which then adds the resolved --device)
    argv: tuple[str, ...] = ()


def audit(
    ctx: typer.Context,
    ckpt: Annotated[Path, typer.Argument(help="Checkpoint or run folder (its best.pt).")],
    data: Annotated[Path | None, typer.Option(help="Prepared folder; default: the one the run trained on.")] = None,
    split: Annotated[Split, typer.Option(help="train, val or all (= train + val; test is never audited).")] = "train",
    top: Annotated[int, typer.Option(min=0, help="Suggestions of each kind shown in the tables.")] = 10,
    floor: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="--csv/--json keep suggestions with score ≥ this.")
    ] = 0.1,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Every suggestion above the floor, ranked.")] = None,
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
    force: Annotated[bool, typer.Option("--force", help="Replace existing --csv/--json/--plot files.")] = False,
) -> None:
    """Rank suspected missing positives (unknown/negative, high score) and wrong positives (positive, low score)."""
    from pumlc_cli.launch import repeat_argv

    opts = AuditOptions(
        ckpt=ckpt,
        data=data,
        split=split,
        top=top,
        floor=floor,
        csv_file=csv_file,
        json_file=json_file,
        plot=plot,
        folds=folds,
        folds_dir=folds_dir,
        train_args=train_args,
        seed=seed,
        batch_size=batch_size,
        workers=workers,
        device=device,
        gpus=gpus,
        nproc=nproc,
        force=force,
        # children need no process count (torchrun's parser would take `--nproc` as its own) and get --device
        argv=tuple(repeat_argv(ctx, device=None, gpus=None, nproc=None)),
    )
    run_audit(opts)


def run_audit(opts: AuditOptions) -> None:
    import torch

    from pumlc_cli import load_prepared
    from pumlc_cli.audit_folds import plan_folds, train_folds
    from pumlc_cli.checkpoint import check_classes, load_checkpoint, resolve_checkpoint
    from pumlc_cli.dist import check_gpus

    kind = opts.device if opts.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    check_gpus(opts.gpus, kind)  # before any fold is trained
    ckpt = resolve_checkpoint(opts.ckpt)
    payload = load_checkpoint(ckpt)
    data = opts.data or Path(payload["config"]["data"])
    outputs = _check_outputs(opts, [ckpt, data, opts.folds_dir])
    prepared = load_prepared(data)
    check_classes(payload, list(prepared.classes), ckpt, data)
    plan = None
    if opts.folds:
        if opts.split != "train":
            raise PumlcError("--folds cross-fits the train split; use --split train")
        config = ckpt.parent / "config.json"
        if not config.is_file() and not opts.train_args:
            raise PumlcError(f"{config}: missing; --folds needs the run's config.json or --train-args")
        plan = plan_folds(prepared, opts.folds_dir or ckpt.parent / f"audit-folds{opts.folds}", opts.folds, opts.seed)
        if "LOCAL_RANK" not in os.environ:
            train_folds(prepared, plan, config if config.is_file() else None, opts.train_args)
    procs = opts.gpus if kind == "cuda" else opts.nproc
    if procs > 1 and "LOCAL_RANK" not in os.environ:
        raise typer.Exit(_relaunch(procs, opts, kind))
    _score_and_report(opts, outputs, ckpt, payload, prepared, plan, kind)


def _check_outputs(opts: AuditOptions, inputs: list) -> dict[str, Path | None]:
    """Every report path is checked before any training or scoring (h9's rules in `pumlc_cli.outputs`)."""
    from pumlc_cli.outputs import check_distinct, check_output_file

    given = {"--csv": opts.csv_file, "--json": opts.json_file, "--plot": opts.plot}
    outputs = {flag: check_output_file(path, flag, inputs=inputs, force=opts.force) for flag, path in given.items()}
    check_distinct(outputs)
    return outputs


def _score_and_report(
    opts: AuditOptions, outputs: dict[str, Path | None], ckpt: Path, payload: dict, prepared, plan, kind: str
) -> None:
    import numpy as np
    import torch

    from pumlc_cli import dist
    from pumlc_cli.atomic import write_text_atomic
    from pumlc_cli.audit import audit_scores
    from pumlc_cli.audit_folds import ScoreOptions, score_folds, score_images
    from pumlc_cli.audit_report import build_report, csv_text, plot_audit, render
    from pumlc_cli.evaluate import selected_weights

    parts = [(name, prepared.split_data(name)) for name in AUDITED[opts.split]]
    images = [img for _, part in parts for img in part.images]
    if not images:
        raise PumlcError(f"{prepared.path}: split {opts.split!r} has no images")
    splits = [name for name, part in parts for _ in part.images]
    observed = np.concatenate([part.observed for _, part in parts])
    truth = np.concatenate([part.truth for _, part in parts])
    info = dist.setup(kind)
    try:
        amp = "bf16" if kind == "cuda" and torch.cuda.is_bf16_supported() else "none"
        score_opts = ScoreOptions(opts.batch_size, opts.workers, amp, show_progress=opts.json_file != Path("-"))
        if plan is not None:
            probs = score_folds(prepared, plan, info, score_opts)
        else:
            probs = score_images(payload, prepared.image_root, images, info, score_opts)
    finally:
        dist.teardown(info)
    if not info.is_main:
        return
    source = {
        "checkpoint": str(ckpt),
        "data": str(prepared.path),
        "split": opts.split,
        "weights": "val-selected, per fold" if plan else selected_weights(payload),
        "folds": opts.folds,
        "folds_dir": str(plan.root) if plan else None,
    }
    differs = not np.array_equal(truth, observed)
    result = audit_scores(probs, observed)
    report = build_report(
        result, images, splits, list(prepared.classes), truth if differs else None, floor=opts.floor, source=source
    )
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    if opts.json_file == Path("-"):
        typer.echo(text, nl=False)
    else:
        if plan is None and opts.split in ("train", "all"):
            typer.echo(
                "note: the model trained on these images, so hidden positives there score low; "
                "--folds K scores each image with a model that did not see it",
                err=True,
            )
        render(report, opts.top)
        if outputs["--json"]:
            write_text_atomic(outputs["--json"], text)
    if outputs["--csv"]:
        write_text_atomic(outputs["--csv"], csv_text(report["suggestions"]))
    if outputs["--plot"]:
        plot_audit(outputs["--plot"], report)


def _relaunch(procs: int, opts: AuditOptions, kind: str) -> int:
    from pumlc_cli.launch import run_local

    return run_local(procs, ["audit", *opts.argv, "--device", kind])
