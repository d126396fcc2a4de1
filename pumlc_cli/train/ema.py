"""Exponential moving average of model weights, updated with one fused `_foreach` op per step."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """EMA of every floating-point state tensor with a constant decay, as the released code's ModelEma.

    `warmup` (not the paper's) uses min(decay, (1+t)/(10+t)) instead, so short runs are not dominated by the init.
    """

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = False) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self._bind(model)

    def _bind(self, model: nn.Module) -> None:
        """Pair the EMA's and the model's state tensors once; state_dict tensors share storage with the model."""
        ema_state = self.module.state_dict()
        model_state = model.state_dict()
        self._float_pairs = [(ema_state[k], model_state[k]) for k in ema_state if ema_state[k].dtype.is_floating_point]
        self._other_pairs = [
            (ema_state[k], model_state[k]) for k in ema_state if not ema_state[k].dtype.is_floating_point
        ]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay
        ema_t = [e for e, _ in self._float_pairs]
        model_t = [m.detach() for _, m in self._float_pairs]
        torch._foreach_lerp_(ema_t, model_t, 1.0 - decay)
        for e, m in self._other_pairs:
            e.copy_(m)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
