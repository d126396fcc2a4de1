"""Checkpoints on disk: atomic writes, and refusal of files that do not belong to the data at hand."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from pumlc_cli.atomic import atomic_path
from pumlc_cli.errors import PumlcError
from pumlc_cli.inputs import MAX_IMAGE_SIDE, input_file

FORMAT = "pumlc-checkpoint-v1"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a crash never leaves a torn checkpoint."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save({"format": FORMAT, **payload}, fh)
        fh.flush()
        os.fsync(fh.fileno())


def resolve_checkpoint(path: Path) -> Path:
    """A run folder stands for its val-selected `best.pt` (then `last.pt`): users pass what `train --out` made."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise PumlcError(f"{path}: a folder without best.pt or last.pt; pass a checkpoint or a run folder")
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a pumlc checkpoint on the CPU; anything else is refused with the reason."""
    path = Path(path)
    input_file(path, "checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about a plain pickle's protocol before refusing it
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file; all mean the same to a user
        text = str(err).strip()
        # torch's own message suggests weights_only=False, i.e. running the file's code: never for a foreign file
        if isinstance(err, pickle.UnpicklingError) and "Unsupported global" in text:
            raise PumlcError(f"{path}: not a pumlc checkpoint (it holds Python objects a safe load refuses)") from None
        if isinstance(err, pickle.UnpicklingError):
            raise PumlcError(f"{path}: not a readable checkpoint (not a file torch.save wrote, or damaged)") from None
        first = text.splitlines()[0].split(". ")[0] if text else err.__class__.__name__
        raise PumlcError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise PumlcError(f"{path}: not a pumlc checkpoint (no '{FORMAT}' marker)")
    _check_payload(payload, path)
    return payload


def _check_payload(payload: dict[str, Any], path: Path) -> None:
    """The parts every reader of a checkpoint needs: weights, class names and a plausible config."""
    require_keys(payload, ("model", "config", "classes"), path, "used")
    classes, cfg = payload["classes"], payload["config"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise PumlcError(f"{path}: damaged checkpoint ('classes' is not a list of class names)")
    if not isinstance(cfg, dict):
        raise PumlcError(f"{path}: damaged checkpoint ('config' is not a table of options)")
    checks = {
        "model": lambda v: isinstance(v, str) and bool(v),
        "image_size": lambda v: type(v) is int and 8 <= v <= MAX_IMAGE_SIDE,
        "local_global": lambda v: isinstance(v, bool),
        "head": lambda v: isinstance(v, str),
    }
    for key, ok in checks.items():
        if key not in cfg or not ok(cfg[key]):
            raise PumlcError(f"{path}: damaged checkpoint (config {key} = {cfg.get(key)!r} is impossible)")
    if not isinstance(payload["model"], dict):
        raise PumlcError(f"{path}: damaged checkpoint ('model' is not a state dict)")


def require_keys(payload: dict[str, Any], keys: tuple[str, ...], path: Path, purpose: str) -> None:
    missing = [k for k in keys if k not in payload]
    if missing:
        raise PumlcError(f"{path}: damaged checkpoint, cannot be {purpose} (missing {', '.join(missing)})")


def check_classes(payload: dict[str, Any], classes: list[str], path: Path, data: Path) -> None:
    """A checkpoint only fits data with the same classes in the same order."""
    saved = list(payload.get("classes", []))
    if saved == list(classes):
        return
    if len(saved) != len(classes):
        raise PumlcError(
            f"{path}: checkpoint has {len(saved)} classes but {data} has {len(classes)}; "
            "it was trained on another dataset"
        )
    diff = next(i for i, (a, b) in enumerate(zip(saved, classes, strict=True)) if a != b)
    raise PumlcError(
        f"{path}: checkpoint classes differ from {data} at index {diff} ('{saved[diff]}' vs '{classes[diff]}')"
    )
