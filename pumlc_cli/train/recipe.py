"""`--recipe paper`: the released PU-MLC training commands and train.py, per dataset kind, under config and flags.

Precedence: recipe < `--config` file < flags. The dataset kind comes from the prepared folder's manifest: the VOC
reader gets the VOC command's values, COCO and CSV data the COCO command's. Every value is stated once, here,
with where it comes from in the released code (TAKELAMAG/PU-MLC, commit 1a4445f):

- README commands: `--b=35` (COCO) / `--b=45` (VOC) per GPU on 2 GPUs → global batch 70 / 90; `--lr=1e-4` / `4e-5`;
  `--ema=0.9997` / `0.991`; `--Stop_epoch=40` / `55`; `--alpha=1.0 --gamma=0.55` / `--alpha=2.0 --gamma=0.85`;
  `--scaleSize=512 --cropSize=448`.
- train.py: `Epochs = 80` for OneCycleLR(pct_start=0.2), the loop breaks when `epoch > Stop_epoch`, so 41 / 56
  epochs are trained; Adam (L2) with weight_decay 1e-4 over branches + all of layer4 + head; every BatchNorm in
  eval mode (`fix_bn`); no gradient clipping; mixup Beta(0.3, 0.3), weight 1.
- helper_functions.ModelEma: a constant decay (no warm-up).
- Backbone.py + dataloader.py: torchvision's ImageNet ResNet-101 (timm's `resnet101.tv_in1k` is that file), the
  SSGRL semantic head fed the GloVe class vectors, label graph from the training labels.

Without pretrained weights the fine-tuning parts of the recipe cannot apply (freezing random layers, frozen random
BatchNorm statistics, a schedule cut at half its length, a fine-tuning learning rate), so the recipe then trains
every weight with live BatchNorm over a complete one-cycle schedule at a from-scratch learning rate, with a warmed-up
EMA (`FROM_SCRATCH`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pumlc_cli.errors import PumlcError
from pumlc_cli.inputs import input_file
from pumlc_cli.train.config import TrainConfig, flag_name, validate_config

VECTORS_DIR = Path(__file__).resolve().parents[2] / "datasets_meta"
# Shipped class-name vectors (300-d GloVe, released with PU-MLC; provenance in datasets_meta/README.md).
CLASS_VECTORS = {"coco": "coco80_glove300.npy", "voc": "voc20_glove300.npy"}

_COMMON: dict[str, Any] = {
    "model": "resnet101.tv_in1k",
    "local_global": True,
    "head": "semantic",
    "train_policy": "last",
    "freeze_bn": True,
    "image_size": 448,  # --scale-size follows it (512/448 × size, TrainConfig): 512 at 448, 73 at 64
    "optimizer": "adam",
    "weight_decay": 1e-4,
    "pct_start": 0.2,
    "schedule_epochs": 80,
    "ema_warmup": False,
    "grad_clip": 0.0,
    "mixup_weight": 1.0,
    "mixup_beta": 0.3,
}
PAPER: dict[str, dict[str, Any]] = {
    "coco": {**_COMMON, "batch_size": 70, "lr": 1e-4, "epochs": 41, "ema_decay": 0.9997, "alpha": 1.0, "gamma": 0.55},
    "voc": {**_COMMON, "batch_size": 90, "lr": 4e-5, "epochs": 56, "ema_decay": 0.991, "alpha": 2.0, "gamma": 0.85},
}
# From random weights: train everything, BatchNorm statistics live, one complete one-cycle schedule (its length
# follows --epochs), a learning rate for training from scratch rather than fine-tuning, and an EMA whose decay
# warms up (a short run's few hundred steps would otherwise leave the EMA at the random initial weights).
FROM_SCRATCH: dict[str, Any] = {
    "train_policy": "all",
    "freeze_bn": False,
    "schedule_epochs": None,
    "lr": 3e-3,
    "ema_warmup": True,
}
# From random weights on fewer training images than this, the recipe also picks what learns quickly there.
SMALL_TRAIN = 2000
# A share of training images left out of every epoch (drop-last of the incomplete batch) worth a warning.
DROPPED_WARN = 0.10


def dataset_kind(manifest: dict[str, Any]) -> str:
    """`voc` for the VOC reader; `coco` for COCO and CSV data (the paper publishes values for these two only)."""
    return "voc" if (manifest.get("source") or {}).get("reader") == "voc" else "coco"


def shipped_vectors(classes: list[str]) -> Path | None:
    """The shipped GloVe vectors when the class list is exactly COCO's 80 or VOC's 20 in their standard order."""
    from pumlc_cli.data.meta import coco_classes, voc_classes

    for kind, names in (("coco", coco_classes()), ("voc", voc_classes())):
        if list(classes) == names:
            return VECTORS_DIR / CLASS_VECTORS[kind]
    return None


@dataclass
class Resolved:
    """The validated config plus the one-line notices a user should see before training starts."""

    config: TrainConfig
    notes: list[str] = field(default_factory=list)
    pu_weights: str | None = None  # "α=… γ=… (where they came from)" for a `pu` run


def resolve(
    file_values: dict[str, Any],
    flag_values: dict[str, Any],
    manifest: dict[str, Any],
    classes: list[str],
    *,
    config_file: str | None = None,
) -> Resolved:
    """Recipe (per dataset kind and weight source) < config file < flags, validated once by TrainConfig."""
    user = {**file_values, **flag_values}
    sources = {k: "flag" for k in flag_values} | {
        k: config_file or "config" for k in file_values if k not in flag_values
    }
    recipe = user.get("recipe", "paper")
    if recipe != "paper":  # let the model word the error
        validate_config({**user, "recipe": recipe}, sources)
    kind = dataset_kind(manifest)
    with_weights = user.get("pretrained", True) is not False or user.get("pretrained_path") is not None
    base = dict(PAPER[kind])
    if not with_weights:
        base.update(FROM_SCRATCH)
    notes: list[str] = []
    n_train = int((manifest.get("counts") or {}).get("train", 0))
    if not with_weights and 0 < n_train < SMALL_TRAIN:
        notes += _small_from_scratch(base, user, n_train)
    vectors = shipped_vectors(classes)
    if vectors is not None and base["head"] == "semantic":
        base["class_embeddings"] = str(vectors)
    elif user.get("class_embeddings") is None and "head" not in user and base["head"] == "semantic":
        base["head"] = "linear"
        notes.append(
            f"no class vectors for these {len(classes)} classes: linear head "
            "(pass --class-embeddings FILE.npy for the paper's semantic head)"
        )
    for name in base:
        sources.setdefault(name, f"recipe {recipe}")
    cfg = validate_config({**base, **user}, sources)
    if cfg.pretrained_path is not None and not cfg.pretrained:
        raise PumlcError("--pretrained-path and --no-pretrained contradict each other: choose one")
    if cfg.epochs > cfg.schedule_epochs:
        raise PumlcError(
            f"{flag_name('epochs')} {cfg.epochs} exceeds {flag_name('schedule_epochs')} {cfg.schedule_epochs}, "
            "the length of the one-cycle schedule"
        )
    if cfg.class_embeddings is not None:
        _check_vectors(Path(cfg.class_embeddings), len(classes))
    if not with_weights and cfg.train_policy != "all":
        notes.append(f"warning: --train {cfg.train_policy} without pretrained weights keeps random layers frozen")
    dropped = n_train % cfg.batch_size
    if cfg.batch_size <= n_train and dropped > DROPPED_WARN * n_train:
        notes.append(
            f"warning: batch {cfg.batch_size} leaves {dropped} of the {n_train} training images "
            f"({100 * dropped / n_train:.0f}%) out of every epoch (the incomplete last batch is dropped); "
            "a --batch-size that divides the training set more evenly uses them"
        )
    pu = _pu_weights(cfg, kind, manifest, sources) if cfg.loss == "pu" else None
    return Resolved(cfg, notes, pu)


def _small_from_scratch(base: dict[str, Any], user: dict[str, Any], n_train: int) -> list[str]:
    """Few images, random weights: the linear head (a semantic-head step costs ~10x a linear one on a small
    backbone at small sizes, and its class graph has nothing to refine yet) and a batch of at most a quarter of
    the training set (at least four steps an epoch, instead of one step that drops the rest)."""
    chosen = []
    if "head" not in user and user.get("class_embeddings") is None and base["head"] != "linear":
        base["head"] = "linear"
        chosen.append("linear head")
    batch = max(1, n_train // 4)
    if "batch_size" not in user and base["batch_size"] > batch:
        base["batch_size"] = batch
        chosen.append(f"batch {batch} (a quarter of the training set)")
    if not chosen:
        return []
    return [f"{n_train} training images from random weights: {' and '.join(chosen)} (--head, --batch-size override)"]


def _check_vectors(path: Path, num_classes: int) -> None:
    """A class-vector file must be a [C, E] array with one row per class: checked before the run folder exists."""
    import numpy as np

    input_file(path, "class embeddings file")
    try:
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise PumlcError(f"{path}: cannot read class embeddings ({type(err).__name__})") from err
    if not isinstance(vectors, np.ndarray):  # e.g. a zip archive (an .npz, a torch checkpoint)
        vectors.close()
        raise PumlcError(f"{path}: not a .npy array of class embeddings (a zip archive: an .npz or a checkpoint?)")
    shape = vectors.shape
    if len(shape) != 2 or shape[0] != num_classes:
        raise PumlcError(f"{path}: class embeddings have shape {shape}; expected one row per class ({num_classes})")


def _pu_weights(cfg: TrainConfig, kind: str, manifest: dict[str, Any], sources: dict[str, str]) -> str:
    """α and γ of a `pu` run and where each came from (a flag, the config file, the recipe's dataset default)."""
    reader = (manifest.get("source") or {}).get("reader", "coco")
    parts = []
    for name, symbol in (("alpha", "α"), ("gamma", "γ")):
        if name in cfg.loss_options:
            value, origin = cfg.loss_options[name], _origin(sources.get("loss_options", "flag"), "loss_options")
        else:
            value, origin = getattr(cfg, name), _origin(sources.get(name, "flag"), name)
        if origin.startswith("recipe"):
            origin = f"{kind.upper()} dataset default" + (" (CSV data: COCO's values)" if reader == "csv" else "")
        parts.append(f"{symbol}={value} from {origin}")
    return "PU loss: " + ", ".join(parts)


def _origin(source: str, name: str) -> str:
    if source == "flag":
        return flag_name(name)
    if source.startswith("recipe"):
        return source
    return f"config file {source}"
