"""Training options: one pydantic model that validates flags and `--config` files alike, saved as RUN/config.json.

Why one model: a value is checked the same way whichever way it arrives (types, choices, ranges, finite floats),
so a config file can never start a run that the same flags would refuse. The choice types (`Literal`) are shared
with the Typer signature of `pumlc train`, so `--help` lists exactly the values this model accepts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError, model_validator

from pumlc_cli.errors import PumlcError
from pumlc_cli.inputs import MAX_IMAGE_SIDE, input_file, read_input
from pumlc_cli.runtime.workers import available_cpus

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

RecipeName = Literal["paper"]
LossName = Literal["pu", "bce-an", "bce-known", "asl", "wan", "epr", "ll-r", "role"]
TrainPolicy = Literal["all", "last", "branches"]
HeadName = Literal["linear", "semantic"]
OptimizerName = Literal["adam", "adamw"]
AmpMode = Literal["auto", "none", "bf16", "fp16"]
DeviceName = Literal["auto", "cpu", "cuda"]
ValUnknown = Literal["auto", "ignore", "negative"]
THRESHOLD_MIN_POSITIVES = 5  # val positives a class needs for its own decision threshold


def _number(value: Any) -> Any:
    """Floats accept ints and numeric text (YAML reads `1e-4` as text) but never booleans."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"expected a number, not {value!r}") from None
    return value


Int = Annotated[int, Strict()]
Float = Annotated[float, BeforeValidator(_number)]
Bool = Annotated[bool, Strict()]
Text = Annotated[str, Strict(), Field(min_length=1)]


def default_workers() -> int:
    """Data-loading workers per process: up to 8, never more than the CPUs available."""
    return min(8, available_cpus())


class TrainConfig(BaseModel):
    """Every option of `pumlc train`; field names equal the flag names with `-` → `_` (`train_policy` is `--train`).

    The defaults are plain fallbacks; `pumlc train` fills the recipe's per-dataset values (pumlc_cli/train/recipe.py)
    under the config file and the flags. `None` means "derived from other values" (see `_derive`).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)

    data: Text
    out: Text
    recipe: RecipeName = "paper"
    loss: LossName = "pu"
    model: Text = "resnet101.tv_in1k"
    local_global: Bool = True
    head: HeadName = "linear"
    class_embeddings: Text | None = None
    pretrained: Bool = True
    pretrained_path: Text | None = None
    train_policy: TrainPolicy = "last"
    freeze_bn: Bool | None = None
    epochs: Int = Field(41, ge=1)
    schedule_epochs: Int | None = Field(None, ge=1)
    batch_size: Int = Field(70, ge=1)
    lr: Float = Field(1e-4, gt=0)
    weight_decay: Float = Field(1e-4, ge=0)
    optimizer: OptimizerName = "adam"
    pct_start: Float = Field(0.2, gt=0, lt=1)
    image_size: Int = Field(448, ge=8, le=MAX_IMAGE_SIDE)
    scale_size: Int | None = Field(None, ge=8, le=MAX_IMAGE_SIDE)
    amp: AmpMode = "auto"
    ema_decay: Float = Field(0.9997, ge=0, le=1)
    ema_warmup: Bool = False
    grad_clip: Float = Field(0.0, ge=0)
    channels_last: Bool = True
    compile: Bool = False
    workers: Int = Field(default_factory=default_workers, ge=0)
    seed: Int = Field(0, ge=0)
    device: DeviceName = "auto"
    gpus: Int = Field(1, ge=1)
    nproc: Int = Field(1, ge=1)
    nnodes: Int = Field(1, ge=1)
    node_rank: Int = Field(0, ge=0)
    master_addr: Text = "127.0.0.1"
    master_port: Int = Field(0, ge=0, le=65535)
    resume: Bool = False
    alpha: Float | None = Field(None, gt=0)
    gamma: Float | None = Field(None, ge=0)
    mixup_weight: Float = Field(1.0, ge=0)
    mixup_beta: Float = Field(0.3, gt=0)
    loss_options: dict[str, Any] = Field(default_factory=dict)
    val_unknown: ValUnknown = "auto"
    threshold_min_positives: Int = Field(THRESHOLD_MIN_POSITIVES, ge=0)
    tensorboard: Bool = False
    log_every: Int | None = Field(None, ge=0)
    save_every: Int | None = Field(None, ge=1)
    max_steps: Int = Field(0, ge=0)

    @model_validator(mode="after")
    def _derive(self) -> TrainConfig:
        """Values that follow others unless given: the resize before cropping keeps the released 512:448 ratio,
        the one-cycle schedule spans the run, BatchNorm statistics stay frozen exactly with pretrained weights."""
        if self.scale_size is None:
            self.scale_size = round(self.image_size * 512 / 448)
        if self.schedule_epochs is None:
            self.schedule_epochs = self.epochs
        if self.freeze_bn is None:
            self.freeze_bn = self.pretrained
        return self

    def world_procs_per_node(self) -> int:
        """Processes per node: `--gpus` on CUDA, `--nproc` on CPU (the gloo path CI uses)."""
        return max(self.gpus, self.nproc) if self.resolved_device() == "cuda" else self.nproc

    def resolved_device(self) -> str:
        """`auto` means CUDA when present; import torch only here, never at CLI start-up."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n"


FIELD_NAMES = frozenset(TrainConfig.model_fields)


def flag_name(field: str) -> str:
    """The command-line spelling of an option, for messages about values given as flags."""
    return {"train_policy": "--train", "loss_options": "--loss-option"}.get(field, "--" + field.replace("_", "-"))


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON table of option names (dashes or underscores); unknown names are an error."""
    input_file(path, "config file")
    loaders = {".toml": tomllib.loads, ".yaml": _yaml, ".yml": _yaml, ".json": json.loads}
    loader = loaders.get(path.suffix)
    if loader is None:
        raise PumlcError(f"{path}: config must end in .toml, .yaml, .yml or .json")
    try:
        raw = loader(read_input(path, "config file").decode("utf-8"))
    except RecursionError:
        raise PumlcError(f"{path}: cannot parse config: nested too deeply") from None
    except (ValueError, _YamlError) as err:  # TOML, JSON and UTF-8 decode errors are ValueErrors
        first = " ".join(str(err).split())
        raise PumlcError(f"{path}: cannot parse config: {first}") from err
    if raw is None:
        raw = {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise PumlcError(f"{path}: config must be a table of option names")
    values = {key.replace("-", "_"): value for key, value in raw.items()}
    if "train" in values and "train_policy" not in values:  # the flag's own spelling
        values["train_policy"] = values.pop("train")
    unknown = sorted(set(values) - FIELD_NAMES)
    if unknown:
        raise PumlcError(f"{path}: unknown option(s) {', '.join(unknown)}")
    return values


class _YamlError(Exception):
    """Stands for yaml.YAMLError in `except` clauses without importing yaml at start-up."""


def _yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise _YamlError(f"{getattr(err, 'problem', None) or err}{where}") from err


def validate_config(values: dict[str, Any], sources: dict[str, str]) -> TrainConfig:
    """Build the model; the first problem becomes one line naming where the bad value came from.

    `sources` maps a field to its origin ("flag", a config file's path, or a recipe); unknown origins are flags.
    """
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as err:
        problem = err.errors()[0]
        field = str(problem["loc"][0]) if problem["loc"] else ""
        origin = sources.get(field, "flag")
        where = f"{flag_name(field)}" if origin == "flag" else f"{origin}: {field}"
        given = values.get(field, problem.get("input"))
        shown = "" if problem["type"] == "missing" else f" (got {_short(given)})"
        raise PumlcError(f"{where}: {problem['msg'][:1].lower()}{problem['msg'][1:]}{shown}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
