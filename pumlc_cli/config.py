"""Resolved training options: one dataclass, written to RUN/config.json so any run can be repeated from it."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pumlc_cli.errors import PumlcError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@dataclass
class TrainConfig:
    """Every option of `pumlc train`; field names equal the flag names with `-` → `_`."""

    data: str = ""
    out: str = ""
    loss: str = "pu"
    model: str = "resnet101"
    local_global: bool = True
    head: str = "linear"
    class_embeddings: str | None = None
    pretrained: bool = False
    pretrained_path: str | None = None
    train_policy: str = "last"
    freeze_bn: bool | None = None
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    pct_start: float = 0.2
    image_size: int = 448
    scale_size: int = 512
    amp: str = "auto"
    ema_decay: float = 0.9997
    grad_clip: float = 10.0
    channels_last: bool = True
    compile: bool = False
    workers: int = field(default_factory=lambda: default_workers())
    seed: int = 0
    device: str = "auto"
    gpus: int = 1
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 0
    resume: bool = False
    alpha: float | None = None
    gamma: float | None = None
    mixup_weight: float = 1.0
    mixup_beta: float = 0.3
    loss_options: dict[str, Any] = field(default_factory=dict)
    val_unknown: str = "auto"
    tensorboard: bool = False
    max_steps: int = 0

    def world_procs_per_node(self) -> int:
        """Processes per node: `--gpus` on CUDA, `--nproc` on CPU (the gloo path CI uses)."""
        return max(self.gpus, self.nproc) if self.resolved_device() == "cuda" else self.nproc

    def resolved_device(self) -> str:
        """`auto` means CUDA when present; import torch only here, never at CLI start-up."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"


def default_workers() -> int:
    """Data-loading workers per process: up to 8, never more than the machine's cores."""
    return min(8, os.cpu_count() or 1)


FIELD_NAMES = {f.name for f in dataclasses.fields(TrainConfig)}


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON file of option names (dashes or underscores); unknown names are an error."""
    if not path.is_file():
        raise PumlcError(f"{path}: config file not found")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(text)
        elif path.suffix in {".yaml", ".yml"}:
            import yaml

            raw = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            raw = json.loads(text)
        else:
            raise PumlcError(f"{path}: config must end in .toml, .yaml, .yml or .json")
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise PumlcError(f"{path}: cannot parse config: {err}".splitlines()[0]) from err
    except ImportError as err:  # pragma: no cover - pyyaml is a dependency
        raise PumlcError(f"{path}: {err}") from err
    if not isinstance(raw, dict):
        raise PumlcError(f"{path}: config must be a table of option names")
    values = {key.replace("-", "_"): value for key, value in raw.items()}
    unknown = sorted(set(values) - FIELD_NAMES)
    if unknown:
        raise PumlcError(f"{path}: unknown option(s) {', '.join(unknown)}")
    return values


def build_config(file_values: dict[str, Any], cli_values: dict[str, Any]) -> TrainConfig:
    """Defaults < config file < explicitly given flags."""
    merged = {**file_values, **cli_values}
    try:
        return TrainConfig(**merged)
    except TypeError as err:
        raise PumlcError(f"bad training options: {err}") from err
