"""Checkpoints on disk: atomic writes, and refusal of files that do not belong to the data at hand."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pumlc_cli.atomic import atomic_path
from pumlc_cli.errors import PumlcError

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
    if not path.is_file():
        raise PumlcError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file; all mean the same to a user
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise PumlcError(f"{path}: not a readable checkpoint ({first})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise PumlcError(f"{path}: not a pumlc checkpoint (no '{FORMAT}' marker)")
    return payload


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
