"""A trained run as a Python object: `load_model(run) -> Model`, `Model.predict(images) -> scores [N, C]`.

`pumlc predict` and `pumlc export` score through this class, so a script, the CLI and an exported model see the
same preprocessing (`pumlc_cli.data.datasets.EvalTransform`) and the same weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from pumlc_cli.data.datasets import MEAN, STD, EvalTransform, open_rgb
from pumlc_cli.errors import PumlcError
from pumlc_cli.evaluate.evaluation import model_from_checkpoint, selected_weights
from pumlc_cli.evaluate.thresholds import val_thresholds
from pumlc_cli.runtime.checkpoint import load_checkpoint, resolve_checkpoint

# One image: a file, a decoded PIL image, or an H x W x 3 uint8 RGB array.
ImageLike = str | Path | Image.Image | np.ndarray
Weights = Literal["best", "regular", "ema"]


@dataclass(frozen=True)
class FileScores:
    """Scores of the readable files (in the given order) and the reason each other file was skipped."""

    paths: list[Path]
    scores: np.ndarray
    skipped: list[tuple[Path, str]]


class Model:
    """A checkpoint's network in eval mode with its classes, preprocessing and (when recorded) val thresholds."""

    def __init__(self, payload: dict[str, Any], checkpoint: Path, weights: Weights, device: torch.device) -> None:
        self.checkpoint = checkpoint
        self.classes: list[str] = list(payload["classes"])
        self.weights: str = selected_weights(payload) if weights == "best" else weights
        self.device = device
        self.image_size = int(payload["config"]["image_size"])
        self.config: dict[str, Any] = dict(payload["config"])
        self.epoch: int | None = payload.get("epoch")
        # the val thresholds were chosen for the val-selected weights: another weight set has none
        self.thresholds: dict[str, Any] | None = (
            val_thresholds(payload, str(checkpoint)) if self.weights == selected_weights(payload) else None
        )
        self.network = model_from_checkpoint(payload, self.weights, device)
        self._transform = EvalTransform(self.image_size)

    @property
    def mean(self) -> tuple[float, float, float]:
        return MEAN

    @property
    def std(self) -> tuple[float, float, float]:
        return STD

    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """One image -> the normalised [3, S, S] float tensor the network takes (an unreadable file: PumlcError)."""
        if isinstance(image, (str, Path)):
            image = open_rgb(Path(image))
        elif isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise PumlcError(f"an image array must be H x W x 3 uint8 RGB, not {image.dtype} {image.shape}")
            image = Image.fromarray(image, "RGB")
        elif isinstance(image, Image.Image):
            image = image.convert("RGB")
        else:
            raise PumlcError(f"cannot score a {type(image).__name__}; give a path, a PIL image or a uint8 array")
        return self._transform(image)

    @torch.no_grad()
    def score_tensor(self, images: torch.Tensor) -> np.ndarray:
        """Sigmoid scores [N, C] of a preprocessed batch [N, 3, S, S]."""
        return torch.sigmoid(self.network(images.to(self.device)).float()).cpu().numpy()

    def predict(self, images: ImageLike | Sequence[ImageLike], batch_size: int = 32) -> np.ndarray:
        """Scores [N, C] (float32 in [0, 1], columns in `classes` order) for one image or a sequence of them."""
        items = [images] if isinstance(images, (str, Path, Image.Image, np.ndarray)) else list(images)
        return self._score_stream((self.preprocess(item) for item in items), batch_size)

    def score_files(self, paths: Iterable[Path], batch_size: int = 32) -> FileScores:
        """Like `predict` for files, but an unreadable file is skipped with its reason instead of stopping all."""
        kept: list[Path] = []
        skipped: list[tuple[Path, str]] = []

        def readable() -> Iterator[torch.Tensor]:
            for path in paths:
                try:
                    tensor = self.preprocess(path)
                except PumlcError as err:
                    skipped.append((path, str(err)))
                    continue
                kept.append(path)
                yield tensor

        scores = self._score_stream(readable(), batch_size)
        return FileScores(kept, scores, skipped)

    def _score_stream(self, tensors: Iterable[torch.Tensor], batch_size: int) -> np.ndarray:
        if batch_size < 1:
            raise PumlcError(f"batch_size must be at least 1, not {batch_size}")
        parts: list[np.ndarray] = []
        batch: list[torch.Tensor] = []
        for tensor in tensors:
            batch.append(tensor)
            if len(batch) == batch_size:
                parts.append(self.score_tensor(torch.stack(batch)))
                batch.clear()
        if batch:
            parts.append(self.score_tensor(torch.stack(batch)))
        return np.concatenate(parts) if parts else np.zeros((0, len(self.classes)), np.float32)

    def __repr__(self) -> str:
        return (
            f"Model({str(self.checkpoint)!r}, {self.config['model']}, {len(self.classes)} classes, "
            f"{self.weights} weights, {self.image_size} px, {self.device})"
        )


def resolve_device(device: str | torch.device) -> torch.device:
    """ "auto" is CUDA when there is one; "cuda" without one is refused rather than silently the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PumlcError(f"device {device!r} asked for, but torch sees no CUDA device (use 'cpu')")
    try:
        return torch.device(device)
    except RuntimeError:
        raise PumlcError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'") from None


def load_model(run_or_ckpt: str | Path, device: str | torch.device = "cpu", weights: Weights = "best") -> Model:
    """A run folder (its best.pt, else last.pt) or a checkpoint file, ready to score images.

    `weights="best"` takes the set selected on val during training (regular or EMA), as `pumlc predict` does.
    """
    ckpt = resolve_checkpoint(Path(run_or_ckpt))
    return Model(load_checkpoint(ckpt), ckpt, weights, resolve_device(device))
