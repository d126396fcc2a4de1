"""Straightforward local-global branch, written the way the paper's code computes it, for comparison.

Kept out of the package: the tests check that `pumlc_cli.models.local_global` computes the same function,
and the benches time the two against each other. Parameter names follow the published layout, so
`pumlc_cli.models.local_global.published_branch_state` maps this module's weights onto the fast one.
"""

from __future__ import annotations

import torch
from torch import nn


class ReferenceGlobalBranch(nn.Module):
    """reduce, relu, [local; mean], softmax gather and sigmoid scatter of a value map, proj, BN."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, heads: int = 8, reduction: int = 4
    ) -> None:
        super().__init__()
        mid = in_channels // reduction
        self.heads = heads
        self.reduction = nn.Conv2d(in_channels, mid, 1)
        self.agg_attn = nn.Conv2d(2 * mid, heads, 1)
        self.broad_attn = nn.Conv2d(2 * mid, heads, 1)
        self.v = nn.Conv2d(in_channels, in_channels, 1)
        self.proj = nn.Conv2d(in_channels, out_channels, 1, stride=stride)
        self.norm = nn.BatchNorm2d(out_channels)
        nn.init.normal_(self.norm.weight, 0.0, 1e-4)
        nn.init.zeros_(self.norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads = self.heads
        local = torch.relu(self.reduction(x))
        glob = local.mean((2, 3), keepdim=True)
        hidden = torch.cat([local, glob.expand(-1, -1, h, w)], dim=1)
        gather = torch.softmax(self.agg_attn(hidden).reshape(b, heads, h * w), dim=2)
        gather = gather.reshape(b, heads, 1, h, w)
        scatter = torch.sigmoid(self.broad_attn(hidden)).reshape(b, heads, 1, h, w)
        v = self.v(x).reshape(b, heads, c // heads, h, w)
        pooled = (v * gather).sum((-1, -2), keepdim=True)  # [B, heads, d, 1, 1]
        spread = (pooled.expand(-1, -1, -1, h, w) * scatter).reshape(b, c, h, w)
        return self.norm(self.proj(x + spread))


class ReferenceLocalGlobalConv(nn.Module):
    """conv(x) + branch(x), as published."""

    def __init__(self, conv: nn.Conv2d, heads: int = 8, reduction: int = 4) -> None:
        super().__init__()
        self.conv = conv
        self.global_branch = ReferenceGlobalBranch(
            conv.in_channels, conv.out_channels, conv.stride[0], heads, reduction
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.global_branch(x)


def convert_reference(module: nn.Module, heads: int = 8, reduction: int = 4, skip: tuple[str, ...] = ()) -> int:
    """Wrap every plain 3x3 conv (same selection rule as the package's converter); returns the count."""
    count = 0
    for name, child in list(module.named_children()):
        if name in skip:
            continue
        if (
            type(child) is nn.Conv2d
            and child.kernel_size == (3, 3)
            and child.in_channels % heads == 0
            and child.in_channels // reduction >= 1
        ):
            setattr(module, name, ReferenceLocalGlobalConv(child, heads, reduction))
            count += 1
        else:
            count += convert_reference(child, heads, reduction)
    return count
