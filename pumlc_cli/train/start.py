"""Start (or resume) one training run from the options a user gave: recipe < --config file < flags.

Why one function: `pumlc train` and the audit's fold models start runs the same way (the same resume checks, the
same refusals before the run folder exists, the same torchrun re-launch), so neither repeats the other's rules.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pumlc_cli.atomic import write_text_atomic
from pumlc_cli.errors import PumlcError
from pumlc_cli.runtime.workers import cap_workers, die_with_parent
from pumlc_cli.train.config import read_config_file

# Options whose change would alter a resumed run's trajectory; everything else (workers, TensorBoard, process
# count — global batches do not depend on it) may change on --resume.
RESUME_LOCKED = frozenset(
    {
        "loss",
        "model",
        "local_global",
        "head",
        "class_embeddings",
        "train_policy",
        "freeze_bn",
        "epochs",
        "schedule_epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "optimizer",
        "pct_start",
        "image_size",
        "scale_size",
        "ema_decay",
        "ema_warmup",
        "seed",
        "alpha",
        "gamma",
        "mixup_weight",
        "mixup_beta",
        "loss_options",
        "grad_clip",
    }
)


@dataclass(frozen=True)
class TrainRequest:
    """One `pumlc train` invocation: the options given explicitly (config field names), the rest from the recipe."""

    data: Path
    out: Path
    explicit: dict[str, Any] = field(default_factory=dict)
    config: Path | None = None
    resume: bool = False
    dry_run: bool = False


def start_training(req: TrainRequest) -> int:
    """Resolve, check and run; returns the exit code (0, or 130/143 when a signal stopped the run)."""
    from pumlc_cli.data.prepared import load_prepared
    from pumlc_cli.train.recipe import resolve

    explicit = {**req.explicit, "data": str(req.data), "out": str(req.out)}
    file_values: dict[str, Any] = read_config_file(req.config) if req.config else {}
    config_label = str(req.config) if req.config else None
    under_torchrun = "LOCAL_RANK" in os.environ
    if not under_torchrun:  # a saved config.json repeats a run; only --resume (or a torchrun parent) resumes one
        file_values.pop("resume", None)
    saved = req.out / "config.json"
    if req.resume and not under_torchrun:
        if not (req.out / "last.pt").is_file():
            _refuse_if_claimed(req.out)  # a run still starting has no last.pt yet: name it, not "nothing"
            raise PumlcError(f"{req.out / 'last.pt'}: nothing to resume")
        previous = read_config_file(saved)
        check_resume({**file_values, **explicit}, previous, saved)
        file_values, config_label = {**previous, **file_values, "max_steps": 0}, str(saved)
    elif not under_torchrun and (req.out / "last.pt").exists():
        raise PumlcError(f"{req.out}: already holds a run; pass --resume to continue it or choose another --out")
    prepared = load_prepared(req.data)
    resolved = resolve(file_values, explicit, prepared.manifest, prepared.classes, config_file=config_label)
    cfg = resolved.config
    check_runnable(cfg)
    if not under_torchrun:  # the children read the capped value from config.json
        cfg.workers = cap_workers("--workers", cfg.workers)
    notes = [line for line in (*resolved.notes, resolved.pu_weights) if line and not under_torchrun]
    if req.dry_run:
        _print_notes(notes)
        sys.stdout.write(cfg.to_json())
        return 0
    if not under_torchrun and not cfg.resume and cfg.pretrained and cfg.pretrained_path is None:
        from pumlc_cli.models import fetch_pretrained

        fetch_pretrained(cfg.model)  # a missing download fails here, before the run folder exists
    if under_torchrun:  # the parent checked and claimed the run folder
        die_with_parent()  # torchrun gone (killed with the pumlc process that started it): this worker goes too
        return _run(cfg)
    return _claim_and_start(cfg, req, saved, notes)


def _refuse_if_claimed(out: Path) -> None:
    """Another pumlc holding `out`'s lock is named (`outputs.claim` refuses naming the holder)."""
    from pumlc_cli.outputs import claim, lock_path

    if lock_path(out).exists():
        with claim(out, "pumlc train"):
            pass


def _claim_and_start(cfg: Any, req: TrainRequest, saved: Path, notes: list[str]) -> int:
    from pumlc_cli.outputs import prepared_inputs
    from pumlc_cli.runtime.interrupt import Stopped, stop_on_signals
    from pumlc_cli.train.run_folder import claim_run_folder

    # --config is an input like any other: one inside --out would be overwritten by the run's own config.json
    inputs = [*prepared_inputs(cfg.data), req.config, cfg.pretrained_path, cfg.class_embeddings]
    try:
        # until the trainer installs its own handlers (which save a checkpoint), a signal undoes the start
        with stop_on_signals(), claim_run_folder(req.out, inputs=inputs):
            _print_notes(notes)  # after every refusal, so a refused start stays one line
            return _start(cfg, req.out, saved)
    except Stopped as stop:
        print(f"pumlc: {stop} before training started; nothing was saved", file=sys.stderr)
        return stop.code


def _print_notes(notes: list[str]) -> None:
    for line in notes:
        print(f"pumlc: {line}", file=sys.stderr)


def _start(cfg: Any, out: Path, saved: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(saved, cfg.to_json())
    if cfg.world_procs_per_node() > 1 or cfg.nnodes > 1:
        from pumlc_cli.train.launch import relaunch

        return relaunch(cfg, saved)
    return _run(cfg)


def _run(cfg: Any) -> int:
    from pumlc_cli.train.trainer import Interrupted, run_training

    try:
        run_training(cfg)
    except Interrupted as stop:
        if "LOCAL_RANK" not in os.environ:
            print(f"pumlc: {stop}", file=sys.stderr)
            return stop.code
        if os.environ.get("RANK") == "0":  # one line for the run, not one per process
            print(f"pumlc: {stop}", file=sys.stderr)
        return 0  # torchrun reports any other status as a failed worker; the parent it forwarded exits 128 + signal
    return 0


def check_resume(given: dict[str, Any], previous: dict[str, Any], saved: Path) -> None:
    """A resumed run keeps its trajectory: only options outside RESUME_LOCKED may change (epochs may extend)."""
    changed = sorted(k for k in RESUME_LOCKED if k in given and given[k] != previous.get(k))
    if "epochs" in changed:  # more (or fewer) epochs of the same schedule is the same trajectory
        check_extension(int(given["epochs"]), previous)
        changed.remove("epochs")
    if changed:
        raise PumlcError(f"--resume cannot change {', '.join(changed)} (saved in {saved})")


def check_extension(epochs: int, previous: dict[str, Any]) -> None:
    """`--resume --epochs N` continues the saved one-cycle schedule, which spans `schedule_epochs`: a run can be
    extended up to that length, never past it (the learning rate would have nowhere to go)."""
    schedule = int(previous.get("schedule_epochs") or previous["epochs"])
    if epochs > schedule:
        raise PumlcError(
            f"--resume --epochs {epochs}: this run's one-cycle schedule ends at epoch {schedule} "
            f"(schedule_epochs); train a new run with --schedule-epochs {epochs} or more"
        )


def parse_loss_options(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; VALUE is read as JSON when it parses (numbers, true/false), else kept as text."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise PumlcError(f"--loss-option {item!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = json.loads(raw)
        except (ValueError, RecursionError):
            options[key.strip()] = raw
    return options


def check_runnable(cfg: Any) -> None:
    """What the config's validators cannot see: the loss options, the model name and this machine's devices."""
    from pumlc_cli.losses import build_loss
    from pumlc_cli.models import check_model_name
    from pumlc_cli.runtime.dist import check_gpus, device_kind

    build_loss(cfg.loss, 2, **cfg.loss_options)  # bad loss options fail here, before the run folder is made
    check_model_name(cfg.model)  # a typo fails here (and in --dry-run), not after the data is loaded
    if cfg.tensorboard:
        from pumlc_cli.train.tracking import check_tensorboard

        check_tensorboard()
    check_gpus(cfg.gpus, device_kind(cfg.resolved_device()))
