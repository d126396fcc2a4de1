"""The contract every loss in the registry follows."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from pumlc_cli.errors import PumlcError


class MultiLabelLoss(nn.Module):
    """`loss(logits [N, C], observed [N, C] in {1, 0, -1}) -> scalar`, always computed in float32.

    Logits from an autocast region (bf16/fp16) are upcast and autocast is switched off inside, so the
    log-sigmoids and sums of the loss never run in half precision. `set_epoch` is a no-op unless a loss
    schedules something over epochs; the trainer calls it on every loss so it need not know which.

    Two hooks let a loss keep per-image state (ROLE's label estimates) without the trainer knowing which
    loss it runs: the trainer passes every batch's dataset indices (used when `needs_indices`), and adds
    `param_groups(lr)` to its optimiser. The state is a parameter, so it travels in `state_dict()`.
    """

    needs_indices: ClassVar[bool] = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise PumlcError(f"a loss needs at least one class, got num_classes={num_classes}")
        self.num_classes = num_classes
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Tell the loss which (0-based) epoch is starting."""
        self.epoch = int(epoch)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups for the loss's own parameters (none unless the loss learns something)."""
        return []

    def forward(
        self, logits: torch.Tensor, observed: torch.Tensor, indices: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`indices` are the batch's rows in the training set; only losses with `needs_indices` read them."""
        if logits.ndim != 2 or logits.shape != observed.shape or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"{type(self).__name__}: expected logits and observed of shape [N, {self.num_classes}], "
                f"got {tuple(logits.shape)} and {tuple(observed.shape)}"
            )
        extra: tuple[torch.Tensor, ...] = ()
        if self.needs_indices:
            if indices is None or indices.shape != logits.shape[:1]:
                raise ValueError(f"{type(self).__name__}: needs the batch's {logits.shape[0]} training-set indices")
            extra = (indices.to(logits.device),)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.compute(logits.float(), observed, *extra)

    def compute(self, logits: torch.Tensor, observed: torch.Tensor, *indices: torch.Tensor) -> torch.Tensor:
        """The loss on float32 logits (plus the batch indices when `needs_indices`); one per subclass."""
        raise NotImplementedError


def dataset_default(table: dict[str, float], dataset: str | None) -> float:
    """A per-dataset published value: the VOC one for the VOC reader, COCO's for COCO, CSV and unknown kinds."""
    return table.get(dataset or "coco", table["coco"])


def positive_float(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Validate a loss option so a bad config fails at build time with a readable message."""
    value = float(value)
    if not (value > 0 or (allow_zero and value == 0)):  # also rejects NaN
        bound = ">= 0" if allow_zero else "> 0"
        raise PumlcError(f"loss option {name} must be {bound}, got {value}")
    return value
