"""The contract every loss in the registry follows."""

from __future__ import annotations

import torch
from torch import nn

from pumlc_cli.errors import PumlcError


class MultiLabelLoss(nn.Module):
    """`loss(logits [N, C], observed [N, C] in {1, 0, -1}) -> scalar`, always computed in float32.

    Logits from an autocast region (bf16/fp16) are upcast and autocast is switched off inside, so the
    log-sigmoids and sums of the loss never run in half precision. `set_epoch` is a no-op unless a loss
    schedules something over epochs; the trainer calls it on every loss so it need not know which.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise PumlcError(f"a loss needs at least one class, got num_classes={num_classes}")
        self.num_classes = num_classes
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Tell the loss which (0-based) epoch is starting."""
        self.epoch = int(epoch)

    def forward(self, logits: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2 or logits.shape != observed.shape or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"{type(self).__name__}: expected logits and observed of shape [N, {self.num_classes}], "
                f"got {tuple(logits.shape)} and {tuple(observed.shape)}"
            )
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.compute(logits.float(), observed)

    def compute(self, logits: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """The loss on float32 logits; implemented by each subclass."""
        raise NotImplementedError


def positive_float(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Validate a loss option so a bad config fails at build time with a readable message."""
    value = float(value)
    if not (value > 0 or (allow_zero and value == 0)):  # also rejects NaN
        bound = ">= 0" if allow_zero else "> 0"
        raise PumlcError(f"loss option {name} must be {bound}, got {value}")
    return value
