"""`pumlc audit`: score a split with a checkpoint (or cross-fitted fold models), rank the probably missing and
wrong labels, estimate their rates per class and report them (tables, CSV, JSON, plot)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pumlc_cli.errors import PumlcError
from pumlc_cli.outputs import is_stdout, prepared_inputs
from pumlc_cli.runtime.workers import cap_workers

if TYPE_CHECKING:
    from pumlc_cli.train.start import TrainRequest

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
    # --train-args parsed by `pumlc train`'s own parser (commands.train.parse_train_args)
    fold_template: TrainRequest | None
    seed: int
    batch_size: int
    workers: int
    device: str
    gpus: int
    nproc: int
    label_frequency: float | None = None
    top_unknown: int = 10  # entry data: unknown classes scored per image
    force: bool = False
    # the command line that repeats these options under torchrun (which then adds the resolved --device)
    argv: tuple[str, ...] = ()


def run_audit(opts: AuditOptions) -> int:
    """Score (training the fold models first with --folds), rank and report; returns the exit code."""

    from pumlc_cli.audit.folds import plan_folds, train_folds
    from pumlc_cli.data.prepared import load_prepared
    from pumlc_cli.runtime.checkpoint import check_classes, load_checkpoint, resolve_checkpoint
    from pumlc_cli.runtime.dist import check_gpus, device_kind

    kind = device_kind(opts.device)
    check_gpus(opts.gpus, kind)  # before any fold is trained
    ckpt = resolve_checkpoint(opts.ckpt)
    payload = load_checkpoint(ckpt)
    opts = replace(opts, workers=cap_workers("--workers", opts.workers))
    data = opts.data or Path(payload["config"]["data"])
    folds_dir = _check_folds_dir(opts, ckpt, data)
    outputs = _check_outputs(opts, [ckpt, *prepared_inputs(data), folds_dir])
    prepared = load_prepared(data)
    check_classes(payload, list(prepared.classes), ckpt, data)
    plan = None
    if opts.folds:
        if opts.split != "train":
            raise PumlcError("--folds cross-fits the train split; use --split train")
        config = ckpt.parent / "config.json"
        if not config.is_file() and not opts.train_args:
            raise PumlcError(f"{config}: missing; --folds needs the run's config.json or --train-args")
        template = replace(opts.fold_template, config=config if config.is_file() else None)
        plan = plan_folds(prepared, folds_dir, opts.folds, opts.seed)
        if "LOCAL_RANK" not in os.environ:
            train_folds(prepared, plan, template)
    procs = opts.gpus if kind == "cuda" else opts.nproc
    if procs > 1 and "LOCAL_RANK" not in os.environ:
        return _relaunch(procs, opts, kind)
    _score_and_report(opts, outputs, ckpt, payload, prepared, plan, kind)
    return 0


def _check_folds_dir(opts: AuditOptions, ckpt: Path, data: Path) -> Path | None:
    """With --folds, the folder the fold data and runs go to, checked before anything is written there: never
    inside the prepared folder or its images, and only a new, empty or earlier folds folder."""
    if not opts.folds:
        return None
    from pumlc_cli.outputs import check_output_folder

    given = opts.folds_dir or ckpt.parent / f"audit-folds{opts.folds}"
    return check_output_folder(given, "--folds-dir", inputs=[ckpt, *prepared_inputs(data)], kind="folds")


def _check_outputs(opts: AuditOptions, inputs: list) -> dict[str, Path | None]:
    """Every report path is checked before any training or scoring (the rules of `pumlc_cli.outputs`)."""
    from pumlc_cli.outputs import check_report_files

    given = {"--csv": opts.csv_file, "--json": opts.json_file, "--plot": opts.plot}
    return check_report_files(given, inputs=inputs, force=opts.force)


def _score_and_report(
    opts: AuditOptions, outputs: dict[str, Path | None], ckpt: Path, payload: dict, prepared, plan, kind: str
) -> None:
    import torch

    from pumlc_cli.audit.folds import ScoreOptions
    from pumlc_cli.audit.report import build_report, csv_text, plot_audit, render
    from pumlc_cli.evaluate.evaluation import selected_weights
    from pumlc_cli.runtime import dist
    from pumlc_cli.textout import write_text

    entry_data = prepared.absent_truth == 0  # unstated labels unknown (Open Images): scores at entries only
    if entry_data and opts.label_frequency is not None:
        raise PumlcError(
            f"--label-frequency: {prepared.path} states its labels as entries (unstated ones unknown); its audit "
            "scores are calibrated on the stated labels and use no label frequency"
        )
    info = dist.setup(kind)
    try:
        amp = "bf16" if kind == "cuda" and torch.cuda.is_bf16_supported() else "none"
        score_opts = ScoreOptions(opts.batch_size, opts.workers, amp, show_progress=not is_stdout(opts.json_file))
        audited = (_entry_audit if entry_data else _dense_audit)(opts, payload, prepared, plan, info, score_opts)
    finally:
        dist.teardown(info)
    if audited is None:  # not the main rank
        return
    result, images, splits, truth = audited
    source = {
        "checkpoint": str(ckpt),
        "data": str(prepared.path),
        "split": opts.split,
        "weights": "val-selected, per fold" if plan else selected_weights(payload),
        "folds": opts.folds,
        "folds_dir": str(plan.root) if plan else None,
    }
    source["in_sample"] = plan is None and opts.split in ("train", "all")
    if entry_data:
        source["label_frequency"] = "not used: calibrated on the stated labels"
        source["scored"] = f"stated labels and each image's {opts.top_unknown} highest-scoring unknown classes"
    else:
        source["label_frequency"] = result.label_frequency  # "estimated": a lower bound, the scores upper bounds
        source["scores_upper_bounds"] = result.upper_bounds
    report = build_report(result, images, splits, list(prepared.classes), truth, floor=opts.floor, source=source)
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    if is_stdout(opts.json_file):
        sys.stdout.write(text)
    else:
        if source["in_sample"]:
            print(
                "note: in-sample scores: the model trained on these images, so hidden positives score low and the "
                "estimated probabilities are not checked on held-out images; --folds K scores each image with a model "
                "that did not see it",
                file=sys.stderr,
            )
        render(report, opts.top, stderr=is_stdout(opts.csv_file))
        if outputs["--json"]:
            write_text(outputs["--json"], text)
    if opts.csv_file is not None:
        write_text(outputs["--csv"] or "-", csv_text(report["suggestions"]))
    if outputs["--plot"]:
        plot_audit(outputs["--plot"], report)


def _dense_audit(opts: AuditOptions, payload: dict, prepared, plan, info, score_opts) -> tuple | None:
    """Scores of every (image, class) of the audited split(s) and the audit on them: (audit, images, splits,
    truth check); None on the ranks other than the main one."""
    import numpy as np

    from pumlc_cli.audit.folds import score_folds, score_images
    from pumlc_cli.audit.scores import audit_scores, truth_report

    parts = [(name, prepared.split_data(name)) for name in AUDITED[opts.split]]
    images = [img for _, part in parts for img in part.images]
    if not images:
        raise PumlcError(f"{prepared.path}: split {opts.split!r} has no images")
    splits = [name for name, part in parts for _ in part.images]
    observed = np.concatenate([part.observed for _, part in parts])
    truth = np.concatenate([part.truth for _, part in parts])
    if plan is not None:
        probs = score_folds(prepared, plan, info, score_opts)
    else:
        probs = score_images(payload, prepared.image_root, images, info, score_opts)
    if not info.is_main:
        return None
    result = audit_scores(probs, observed, opts.label_frequency)
    differs = not np.array_equal(truth, observed)
    return result, images, splits, truth_report(result, truth, list(prepared.classes)) if differs else None


def _entry_audit(opts: AuditOptions, payload: dict, prepared, plan, info, score_opts) -> tuple | None:
    """`_dense_audit` for entry data (see `pumlc_cli.audit.entries`): scores at the stated labels and each image's
    `--top-unknown` best unknown classes, never an images x classes matrix."""
    import numpy as np

    from pumlc_cli.audit.entries import entry_audit, entry_truth_report
    from pumlc_cli.audit.folds import score_entry_folds, score_entry_images
    from pumlc_cli.data.entries import Entries, lookup

    names = AUDITED[opts.split]
    parts = [prepared.split_entries(name) for name in names]
    images = [img for part in parts for img in part.images]
    if not images:
        raise PumlcError(f"{prepared.path}: split {opts.split!r} has no images")
    splits = [name for name, part in zip(names, parts, strict=True) for _ in part.images]
    offsets = np.cumsum([0] + [int(part.indptr[-1]) for part in parts[:-1]])
    indptr = np.concatenate([[0]] + [part.indptr[1:] + off for part, off in zip(parts, offsets, strict=True)])
    classes = np.concatenate([part.classes for part in parts])
    truth = np.concatenate([part.truth for part in parts])
    observed = np.concatenate([part.observed for part in parts])
    entries = (indptr, classes, observed != 0)  # stated labels stay out of the top K
    if plan is not None:
        scored = score_entry_folds(prepared, plan, entries, opts.top_unknown, info, score_opts)
    else:
        scored = score_entry_images(payload, prepared.image_root, images, entries, opts.top_unknown, info, score_opts)
    if not info.is_main:
        return None
    rows = np.repeat(np.arange(len(images), dtype=np.int64), np.diff(indptr))
    n_classes = len(prepared.classes)
    result = entry_audit((rows, classes, observed, scored.entry), (scored.top_classes, scored.top_scores), n_classes)
    # the truth of each scored entry: a stored entry's own, else the absent truth (unknown)
    pos = lookup(Entries(rows, classes, truth, observed), n_classes, result.rows, result.cols)
    truth_at = np.where(pos >= 0, truth[np.maximum(pos, 0)] if len(truth) else 0, prepared.absent_truth)
    check = entry_truth_report(result, truth_at, (classes, truth, observed), list(prepared.classes))
    return result, images, splits, check


def _relaunch(procs: int, opts: AuditOptions, kind: str) -> int:
    from pumlc_cli.runtime.launch import run_local

    return run_local(procs, ["audit", *opts.argv, "--device", kind])
