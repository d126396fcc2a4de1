"""`pumlc train`: resolve options (defaults < --config file < flags), then train here or under torchrun."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from pumlc_cli.atomic import write_text_atomic
from pumlc_cli.errors import PumlcError

# Options whose change would alter a resumed run's trajectory; everything else (workers, TensorBoard, process
# count — global batches do not depend on it) may change on --resume.
_RESUME_LOCKED = {
    "loss",
    "model",
    "local_global",
    "head",
    "train_policy",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "optimizer",
    "pct_start",
    "image_size",
    "scale_size",
    "ema_decay",
    "seed",
    "alpha",
    "gamma",
    "mixup_weight",
    "mixup_beta",
    "loss_options",
    "grad_clip",
}


def train(
    ctx: typer.Context,
    data: Path = typer.Argument(..., help="Prepared folder (from `pumlc prepare`)."),
    out: Path = typer.Option(..., "--out", help="Run folder: last.pt, best.pt, metrics.jsonl, config.json."),
    loss: str = typer.Option("pu", help="pu, bce-an, bce-known, asl, wan, epr, ll-r."),
    model: str = typer.Option("resnet101", help="timm backbone name."),
    local_global: bool = typer.Option(True, "--local-global/--no-local-global", help="Local-global branches."),
    head: str = typer.Option("linear", help="Classifier head: linear or semantic (the paper's, label graph)."),
    class_embeddings: Path | None = typer.Option(None, help="Semantic head: .npy [C, E] class vectors (else learned)."),
    pretrained: bool = typer.Option(False, help="Load timm's pretrained weights (needs internet)."),
    pretrained_path: Path | None = typer.Option(None, help="Local backbone state dict to start from."),
    train_policy: str = typer.Option(
        "last", "--train", "--train-policy", help="Trainable weights: all | last (paper) | branches."
    ),
    freeze_bn: bool | None = typer.Option(
        None,
        "--freeze-bn/--no-freeze-bn",
        help="Frozen BatchNorm (default: on when starting from pretrained weights).",
    ),
    epochs: int = typer.Option(40, min=1),
    batch_size: int = typer.Option(32, min=1, help="Global batch size (split across processes)."),
    lr: float = typer.Option(1e-4, min=0.0, help="Peak learning rate of the one-cycle schedule."),
    weight_decay: float = typer.Option(1e-4, min=0.0),
    optimizer: str = typer.Option("adamw", help="adam or adamw."),
    pct_start: float = typer.Option(0.2, min=0.0, max=1.0, help="One-cycle warm-up share."),
    image_size: int = typer.Option(448, min=8, help="Training/eval resolution."),
    scale_size: int = typer.Option(512, min=8, help="Resize before the multi-scale crop."),
    amp: str = typer.Option("auto", help="auto (bf16 on CUDA, none on CPU), none, bf16, fp16 (GradScaler)."),
    ema_decay: float = typer.Option(0.9997, min=0.0, max=1.0),
    grad_clip: float = typer.Option(10.0, min=0.0, help="Max gradient norm; 0 disables."),
    channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last"),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    workers: int = typer.Option(
        min(8, os.cpu_count() or 1), min=0, help="Data-loading workers per process (default: cores, at most 8)."
    ),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="cuda, cpu or auto."),
    gpus: int = typer.Option(1, min=1, help="GPUs per node; >1 re-launches under torchrun (NCCL)."),
    nproc: int = typer.Option(1, min=1, help="Processes per node on the CPU (gloo), e.g. to test DDP."),
    nnodes: int = typer.Option(1, min=1),
    node_rank: int = typer.Option(0, min=0),
    master_addr: str = typer.Option("127.0.0.1"),
    master_port: int = typer.Option(0, min=0, help="0 picks a free port on one node (29500 on several)."),
    resume: bool = typer.Option(False, "--resume", help="Continue RUN/last.pt exactly."),
    alpha: float | None = typer.Option(None, help="PU temperature scale α (default per dataset: COCO 1.0, VOC 2.0)."),
    gamma: float | None = typer.Option(None, help="PU re-balance exponent γ (COCO 0.55, VOC 0.85)."),
    mixup_weight: float = typer.Option(1.0, min=0.0, help="Weight of PU's mixup regulariser; 0 disables."),
    mixup_beta: float = typer.Option(0.3, min=0.0, help="Beta(b, b) of the mixup coefficient."),
    loss_option: list[str] = typer.Option(
        [], "--loss-option", help="Loss-specific KEY=VALUE (repeatable), e.g. gamma_neg=2 for asl."
    ),
    val_unknown: str = typer.Option("auto", help="Val unknowns: ignore | negative | auto."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log to RUN/tensorboard."),
    max_steps: int = typer.Option(0, min=0, help="Stop (resumably) after this many steps; 0 = no limit."),
    config: Path | None = typer.Option(None, help="TOML/YAML/JSON file of the same option names."),
) -> None:
    """Train PU-MLC or a baseline on a prepared folder; validates on its val split every epoch."""
    from pumlc_cli.config import build_config, read_config_file

    explicit = {
        name: value
        for name, value in ctx.params.items()
        if name not in {"config", "loss_option"} and ctx.get_parameter_source(name).name == "COMMANDLINE"
    }
    if loss_option:
        explicit["loss_options"] = parse_loss_options(loss_option)
    explicit["data"], explicit["out"] = str(data), str(out)
    for name in ("pretrained_path", "class_embeddings"):
        if explicit.get(name) is not None:
            explicit[name] = str(explicit[name])
    file_values: dict[str, Any] = read_config_file(config) if config else {}
    under_torchrun = "LOCAL_RANK" in os.environ
    if not under_torchrun:  # a saved config.json repeats a run; only --resume (or a torchrun parent) resumes one
        file_values.pop("resume", None)
    saved = out / "config.json"
    if resume and not under_torchrun:
        if not (out / "last.pt").is_file():
            raise PumlcError(f"{out / 'last.pt'}: nothing to resume")
        previous = read_config_file(saved)
        changed = sorted(
            k
            for k in _RESUME_LOCKED
            if k in {**file_values, **explicit} and {**file_values, **explicit}[k] != previous.get(k)
        )
        if changed:
            raise PumlcError(f"--resume cannot change {', '.join(changed)} (saved in {saved})")
        file_values = {**previous, **file_values, "max_steps": 0}
    elif not under_torchrun and (out / "last.pt").exists():
        raise PumlcError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
    cfg = build_config(file_values, explicit)
    _check_choices(cfg)
    if not Path(cfg.data, "manifest.json").is_file():
        raise PumlcError(f"{cfg.data}: not a prepared folder (no manifest.json); run `pumlc prepare` first")

    distributed = cfg.world_procs_per_node() > 1 or cfg.nnodes > 1
    if not under_torchrun:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(saved, cfg.to_json())
        if distributed:
            from pumlc_cli.launch import relaunch

            code = relaunch(cfg, saved)
            if code:
                raise typer.Exit(code)
            return

    from pumlc_cli.trainer import Interrupted, run_training

    try:
        run_training(cfg)
    except Interrupted as stop:
        print(f"pumlc: {stop}", file=sys.stderr)
        raise typer.Exit(stop.code) from None


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
    from pumlc_cli.losses import LOSS_NAMES, build_loss

    if cfg.loss not in LOSS_NAMES:
        raise PumlcError(f"--loss {cfg.loss!r} is not one of {', '.join(LOSS_NAMES)}")
    build_loss(cfg.loss, 2, **cfg.loss_options)  # bad loss options fail here, before the run folder is made
    if cfg.train_policy not in {"all", "last", "branches"}:
        raise PumlcError(f"--train-policy must be all, last or branches, not {cfg.train_policy!r}")
    if cfg.device not in {"auto", "cpu", "cuda"}:
        raise PumlcError(f"--device must be auto, cpu or cuda, not {cfg.device!r}")
    if cfg.resolved_device() == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise PumlcError("--device cuda: no CUDA device is visible")
