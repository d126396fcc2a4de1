"""`pumlc train`: resolve options (recipe < --config file < flags), then train here or under torchrun."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from pumlc_cli.atomic import write_text_atomic
from pumlc_cli.config import (
    AmpMode,
    DeviceName,
    HeadName,
    LossName,
    OptimizerName,
    RecipeName,
    TrainPolicy,
    ValUnknown,
    read_config_file,
)
from pumlc_cli.errors import PumlcError
from pumlc_cli.help import examples

# Options whose change would alter a resumed run's trajectory; everything else (workers, TensorBoard, process
# count — global batches do not depend on it) may change on --resume.
_RESUME_LOCKED = {
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
_RECIPE = "recipe"  # shown as the default of options whose value the recipe (or a derivation) sets

# Help panels in the order a user decides: what to train, on which model, how long, on what hardware.
_METHOD = "Method (loss)"
_MODEL = "Model"
_SCHEDULE = "Schedule"
_DEVICES = "Devices and speed"

EXAMPLES = examples(
    "pumlc train prep --out runs/pu",
    "pumlc train prep --out runs/pu --resume --epochs 60",
)


def train(
    ctx: typer.Context,
    data: Path = typer.Argument(..., help="Prepared folder (from `pumlc prepare`)."),
    out: Path = typer.Option(..., "--out", help="Run folder: last.pt, best.pt, metrics.jsonl, config.json."),
    recipe: RecipeName = typer.Option(
        "paper", help="Defaults per dataset kind: the released PU-MLC commands (VOC reader → VOC, else COCO)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the resolved config as JSON and exit; write nothing, build no model."
    ),
    loss: LossName = typer.Option("pu", help="Training loss: PU-MLC or a baseline.", rich_help_panel=_METHOD),
    model: str | None = typer.Option(
        None, show_default=_RECIPE, help="timm backbone name (recipe: resnet101.tv_in1k).", rich_help_panel=_MODEL
    ),
    local_global: bool = typer.Option(
        True, "--local-global/--no-local-global", help="Local-global branches.", rich_help_panel=_MODEL
    ),
    head: HeadName | None = typer.Option(
        None,
        show_default=_RECIPE,
        help="Classifier head (recipe: semantic with the shipped GloVe vectors, or linear).",
        rich_help_panel=_MODEL,
    ),
    class_embeddings: Path | None = typer.Option(
        None, help="Semantic head: .npy [C, E] class vectors.", rich_help_panel=_MODEL
    ),
    pretrained: bool = typer.Option(
        True,
        "--pretrained/--no-pretrained",
        help="Start from timm's pretrained weights (downloaded once).",
        rich_help_panel=_MODEL,
    ),
    pretrained_path: Path | None = typer.Option(
        None,
        help="Local backbone weights (timm or torchvision layout) instead of the download.",
        rich_help_panel=_MODEL,
    ),
    train_policy: TrainPolicy | None = typer.Option(
        None,
        "--train",
        "--train-policy",
        show_default=_RECIPE,
        help="Trainable weights (recipe: last; all without pretrained weights).",
        rich_help_panel=_MODEL,
    ),
    freeze_bn: bool | None = typer.Option(
        None,
        "--freeze-bn/--no-freeze-bn",
        help="Frozen BatchNorm statistics (default: with pretrained weights).",
        rich_help_panel=_MODEL,
    ),
    epochs: int | None = typer.Option(
        None, show_default=_RECIPE, help="Epochs trained (recipe: 41 COCO, 56 VOC).", rich_help_panel=_SCHEDULE
    ),
    schedule_epochs: int | None = typer.Option(
        None,
        show_default=_RECIPE,
        help="One-cycle schedule length in epochs (recipe: 80; = --epochs from scratch).",
        rich_help_panel=_SCHEDULE,
    ),
    batch_size: int | None = typer.Option(
        None,
        show_default=_RECIPE,
        help="Global batch size, split across processes (recipe: 70 / 90).",
        rich_help_panel=_SCHEDULE,
    ),
    lr: float | None = typer.Option(
        None,
        show_default=_RECIPE,
        help="Peak learning rate (recipe: 1e-4 COCO, 4e-5 VOC; 3e-3 from scratch).",
        rich_help_panel=_SCHEDULE,
    ),
    weight_decay: float | None = typer.Option(
        None, show_default=_RECIPE, help="Weight decay (recipe: 1e-4, L2 with adam).", rich_help_panel=_SCHEDULE
    ),
    optimizer: OptimizerName | None = typer.Option(
        None, show_default=_RECIPE, help="adam (L2 decay, recipe) or adamw (decoupled).", rich_help_panel=_SCHEDULE
    ),
    pct_start: float | None = typer.Option(
        None, show_default=_RECIPE, help="One-cycle warm-up share (recipe: 0.2).", rich_help_panel=_SCHEDULE
    ),
    image_size: int | None = typer.Option(
        None, show_default=_RECIPE, help="Training/eval resolution (recipe: 448).", rich_help_panel=_SCHEDULE
    ),
    scale_size: int | None = typer.Option(
        None,
        show_default=_RECIPE,
        help="Square resize before the random crop (default: 512/448 × size).",
        rich_help_panel=_SCHEDULE,
    ),
    amp: AmpMode = typer.Option(
        "auto", help="auto = bf16 on CUDA, none on the CPU; fp16 uses a GradScaler.", rich_help_panel=_DEVICES
    ),
    ema_decay: float | None = typer.Option(
        None, show_default=_RECIPE, help="EMA decay (recipe: 0.9997 COCO, 0.991 VOC).", rich_help_panel=_SCHEDULE
    ),
    ema_warmup: bool | None = typer.Option(
        None,
        "--ema-warmup/--no-ema-warmup",
        show_default=_RECIPE,
        help="EMA decay warm-up, not the paper's (recipe: off; on from random weights).",
        rich_help_panel=_SCHEDULE,
    ),
    grad_clip: float | None = typer.Option(
        None, show_default=_RECIPE, help="Max gradient norm; 0 disables (recipe: 0).", rich_help_panel=_SCHEDULE
    ),
    channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last", rich_help_panel=_DEVICES),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model.", rich_help_panel=_DEVICES),
    workers: int | None = typer.Option(
        None,
        show_default="cores, at most 8",
        help="Data-loading workers per process.",
        rich_help_panel=_DEVICES,
    ),
    seed: int = typer.Option(0),
    device: DeviceName = typer.Option("auto", rich_help_panel=_DEVICES),
    gpus: int = typer.Option(1, help="GPUs per node; >1 re-launches under torchrun (NCCL).", rich_help_panel=_DEVICES),
    nproc: int = typer.Option(
        1, help="Processes per node on the CPU (gloo), e.g. to test DDP.", rich_help_panel=_DEVICES
    ),
    nnodes: int = typer.Option(1, rich_help_panel=_DEVICES),
    node_rank: int = typer.Option(0, rich_help_panel=_DEVICES),
    master_addr: str = typer.Option("127.0.0.1", rich_help_panel=_DEVICES),
    master_port: int = typer.Option(
        0, help="0 picks a free port on one node (29500 on several).", rich_help_panel=_DEVICES
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue RUN/last.pt exactly."),
    alpha: float | None = typer.Option(
        None, show_default=_RECIPE, help="PU temperature scale α (recipe: COCO 1.0, VOC 2.0).", rich_help_panel=_METHOD
    ),
    gamma: float | None = typer.Option(
        None,
        show_default=_RECIPE,
        help="PU re-balance exponent γ (recipe: COCO 0.55, VOC 0.85).",
        rich_help_panel=_METHOD,
    ),
    mixup_weight: float | None = typer.Option(
        None,
        show_default=_RECIPE,
        help="Weight of PU's mixup regulariser; 0 disables (recipe: 1).",
        rich_help_panel=_METHOD,
    ),
    mixup_beta: float | None = typer.Option(
        None, show_default=_RECIPE, help="Beta(b, b) of the mixup coefficient (recipe: 0.3).", rich_help_panel=_METHOD
    ),
    loss_option: list[str] = typer.Option(
        [],
        "--loss-option",
        help="Loss-specific KEY=VALUE (repeatable), e.g. gamma_neg=2 for asl.",
        rich_help_panel=_METHOD,
    ),
    val_unknown: ValUnknown = typer.Option(
        "auto", help="Val unknowns: ignored, or negatives when none is known.", rich_help_panel=_METHOD
    ),
    tensorboard: bool = typer.Option(
        False, "--tensorboard", help="Also log to RUN/tensorboard.", rich_help_panel=_DEVICES
    ),
    max_steps: int = typer.Option(
        0, help="Stop (resumably) after this many steps; 0 = no limit.", rich_help_panel=_SCHEDULE
    ),
    config: Path | None = typer.Option(None, help="TOML/YAML/JSON file of the same option names."),
) -> None:
    """Train PU-MLC or a baseline on a prepared folder; validates on its val split every epoch."""
    from pumlc_cli import load_prepared
    from pumlc_cli.recipe import resolve

    explicit = {
        name: value
        for name, value in ctx.params.items()
        if name not in {"config", "loss_option", "dry_run"} and ctx.get_parameter_source(name).name == "COMMANDLINE"
    }
    if loss_option:
        explicit["loss_options"] = parse_loss_options(loss_option)
    explicit["data"], explicit["out"] = str(data), str(out)
    for name in ("pretrained_path", "class_embeddings"):
        if explicit.get(name) is not None:
            explicit[name] = str(explicit[name])
    file_values: dict[str, Any] = read_config_file(config) if config else {}
    config_label = str(config) if config else None
    under_torchrun = "LOCAL_RANK" in os.environ
    if not under_torchrun:  # a saved config.json repeats a run; only --resume (or a torchrun parent) resumes one
        file_values.pop("resume", None)
    saved = out / "config.json"
    if resume and not under_torchrun:
        if not (out / "last.pt").is_file():
            raise PumlcError(f"{out / 'last.pt'}: nothing to resume")
        previous = read_config_file(saved)
        given = {**file_values, **explicit}
        changed = sorted(k for k in _RESUME_LOCKED if k in given and given[k] != previous.get(k))
        if "epochs" in changed:  # more (or fewer) epochs of the same schedule is the same trajectory
            check_extension(int(given["epochs"]), previous)
            changed.remove("epochs")
        if changed:
            raise PumlcError(f"--resume cannot change {', '.join(changed)} (saved in {saved})")
        file_values, config_label = {**previous, **file_values, "max_steps": 0}, str(saved)
    elif not under_torchrun and (out / "last.pt").exists():
        raise PumlcError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
    prepared = load_prepared(data)
    resolved = resolve(file_values, explicit, prepared.manifest, prepared.classes, config_file=config_label)
    cfg = resolved.config
    _check_choices(cfg)
    notes = [line for line in (*resolved.notes, resolved.pu_weights) if line and not under_torchrun]
    if dry_run:
        _print_notes(notes)
        sys.stdout.write(cfg.to_json())
        return
    if not under_torchrun and not cfg.resume and cfg.pretrained and cfg.pretrained_path is None:
        from pumlc_cli.models import fetch_pretrained

        fetch_pretrained(cfg.model)  # a missing download fails here, before the run folder exists

    if under_torchrun:  # the parent checked and claimed the run folder
        _run(cfg)
        return
    from pumlc_cli.interrupt import Stopped, stop_on_signals
    from pumlc_cli.outputs import prepared_inputs, resolved_path
    from pumlc_cli.run_folder import claim_run_folder

    own_config = config is not None and resolved_path(config) == resolved_path(saved)  # the run's own config.json
    inputs = [*prepared_inputs(cfg.data), None if own_config else config, cfg.pretrained_path, cfg.class_embeddings]
    try:
        # until the trainer installs its own handlers (which save a checkpoint), a signal undoes the start
        with stop_on_signals(), claim_run_folder(out, inputs=inputs, resume=resume):
            _print_notes(notes)  # after every refusal, so a refused start stays one line
            _start(cfg, out, saved)
    except Stopped as stop:
        print(f"pumlc: {stop} before training started; nothing was saved", file=sys.stderr)
        raise typer.Exit(stop.code) from None


def _print_notes(notes: list[str]) -> None:
    for line in notes:
        print(f"pumlc: {line}", file=sys.stderr)


def _start(cfg: Any, out: Path, saved: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(saved, cfg.to_json())
    if cfg.world_procs_per_node() > 1 or cfg.nnodes > 1:
        from pumlc_cli.launch import relaunch

        code = relaunch(cfg, saved)
        if code:
            raise typer.Exit(code)
        return
    _run(cfg)


def _run(cfg: Any) -> None:
    from pumlc_cli.trainer import Interrupted, run_training

    try:
        run_training(cfg)
    except Interrupted as stop:
        print(f"pumlc: {stop}", file=sys.stderr)
        raise typer.Exit(stop.code) from None


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
    import json

    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise PumlcError(f"--loss-option {item!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = json.loads(raw)
        except ValueError:
            options[key.strip()] = raw
    return options


def _check_choices(cfg: Any) -> None:
    from pumlc_cli.losses import build_loss

    build_loss(cfg.loss, 2, **cfg.loss_options)  # bad loss options fail here, before the run folder is made
    if cfg.resolved_device() == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise PumlcError("--device cuda: no CUDA device is visible")
    from pumlc_cli.dist import check_gpus

    check_gpus(cfg.gpus, cfg.resolved_device())
