"""`pumlc train`: resolve options (recipe < --config file < flags), then train here or under torchrun."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pumlc_cli.help import examples
from pumlc_cli.train.config import (
    THRESHOLD_MIN_POSITIVES,
    AmpMode,
    DeviceName,
    HeadName,
    LossName,
    OptimizerName,
    RecipeName,
    TrainPolicy,
    ValUnknown,
)

if TYPE_CHECKING:
    from pumlc_cli.train.start import TrainRequest

_RECIPE = "recipe"  # shown as the default of options whose value the recipe (or a derivation) sets

# Help panels in the order a user decides: what to train, on which model, how long, on what hardware.
_METHOD = "Method (loss)"
_MODEL = "Model"
_SCHEDULE = "Schedule"
_DEVICES = "Devices and speed"
_LOGS = "Logs and checkpoints"

EXAMPLES = examples(
    "pumlc train prep --out runs/pu",
    "pumlc train prep --out runs/pu --resume --epochs 60",
)


def train(
    ctx: typer.Context,
    data: Path = typer.Argument(..., help="Prepared folder (from `pumlc prepare`)."),
    out: Path = typer.Option(..., "--out", help="Run folder: last.pt, best.pt, metrics.jsonl/.csv, config.json."),
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
    threshold_min_positives: int = typer.Option(
        THRESHOLD_MIN_POSITIVES,
        help="Val positives a class needs for its own decision threshold (else the global one).",
        rich_help_panel=_METHOD,
    ),
    tensorboard: bool = typer.Option(
        False,
        "--tensorboard",
        help="Also log val mAP, loss, lr, img/s to RUN/tensorboard (needs the tensorboard extra).",
        rich_help_panel=_LOGS,
    ),
    log_every: int | None = typer.Option(
        None,
        show_default="a tenth of an epoch when not a terminal",
        help="Print a line of loss, lr and img/s every N steps; 0 = none.",
        rich_help_panel=_LOGS,
    ),
    save_every: int | None = typer.Option(
        None,
        show_default="every 10 min",
        help="Rewrite last.pt every N epochs (always after the first and last, and on a stop).",
        rich_help_panel=_LOGS,
    ),
    max_steps: int = typer.Option(
        0, help="Stop (resumably) after this many steps; 0 = no limit.", rich_help_panel=_SCHEDULE
    ),
    config: Path | None = typer.Option(None, help="TOML/YAML/JSON file of the same option names."),
) -> None:
    """Train PU-MLC or a baseline on a prepared folder; validates on its val split every epoch."""
    from pumlc_cli.train.start import start_training

    code = start_training(request_from_context(ctx))
    if code:
        raise typer.Exit(code)


def request_from_context(ctx: typer.Context) -> TrainRequest:
    """The options given on the command line (not defaults), by config field name; `--config` and the recipe
    fill the rest in `start_training`."""
    from pumlc_cli.train.start import TrainRequest, parse_loss_options

    params = ctx.params
    explicit = {
        name: value
        for name, value in params.items()
        if name not in {"data", "out", "config", "loss_option", "dry_run"}
        and ctx.get_parameter_source(name).name == "COMMANDLINE"
    }
    if params["loss_option"]:
        explicit["loss_options"] = parse_loss_options(params["loss_option"])
    for name in ("pretrained_path", "class_embeddings"):
        if explicit.get(name) is not None:
            explicit[name] = str(explicit[name])
    return TrainRequest(
        data=params["data"],
        out=params["out"],
        explicit=explicit,
        config=params["config"],
        resume=params["resume"],
        dry_run=params["dry_run"],
    )


def parse_train_args(args: list[str]) -> TrainRequest:
    """`pumlc train` flags given as a list (the audit's --train-args) parsed by this very command, so they mean
    what they mean on the command line."""
    import typer.main

    app = typer.Typer()
    app.command(context_settings={"ignore_unknown_options": False})(train)
    command = typer.main.get_command(app)
    with command.make_context("train", list(args)) as ctx:
        return request_from_context(ctx)
