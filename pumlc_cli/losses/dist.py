"""Collectives for batch statistics that must span all ranks, so a loss does not depend on the GPU count.

Every helper is the identity when torch.distributed is not initialised, so the same loss code runs in
one process. No process group is created here.

Gradient bookkeeping for `all_reduce_sum`: every rank computes the same loss L from the reduced sum
G = sum_r g_r. The backward all-reduces the incoming gradient, so rank r receives
sum_r' dL/dG = W * dL/dG for its local g_r (W = world size), and its parameter gradient is
W * dL/dG * dg_r/dtheta. DDP then averages over ranks: (1/W) * sum_r W * dL/dG * dg_r/dtheta =
dL/dG * dG/dtheta, exactly the gradient of one process holding the whole batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group (the only case where anything is reduced)."""
    return dist.is_available() and dist.is_initialized()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward also sums over ranks (see the module docstring for why)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks (identity in a single process)."""
    if not is_distributed():
        return tensor
    return _AllReduceSum.apply(tensor)


@torch.no_grad()
def reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks for statistics that carry no gradient; returns the tensor."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


@torch.no_grad()
def reduce_max_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place element-wise max over ranks (no gradient); returns the tensor."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor
