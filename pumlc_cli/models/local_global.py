"""Local-global convolution of PU-MLC, written for speed.

A global branch sits beside a 3x3 convolution and its (BatchNorm-ed) output is added to the conv output.
The published branch computes, for x of shape [B, C, H, W] with h heads of d = C/h channels:

    r  = relu(W_r x + b_r)                                   reduce, m = C / reduction channels
    a  = W_a [r; mean(r)] + b_a,   s = softmax_HW(a)          gather logits and weights   [B, h, H, W]
    e  = W_e [r; mean(r)] + b_e,   g = sigmoid(e)             scatter logits and gate     [B, h, H, W]
    v  = W_v x + b_v                                          value, split in heads       [B, h, d, H, W]
    z  = sum_p v[..., p] s[..., p]                            gathered global vectors     [B, h, d]
    u  = z (x) g                                              scattered back              [B, C, H, W]
    out = BN(W_p (x + u) with stride + b_p)

This module computes the same function with these rearrangements (each exact, not an approximation):

1. Gather logits: softmax over positions ignores a per-(image, head) constant, and the global half
   `W_a[:, m:] mean(r) + b_a` is such a constant, so only `W_a[:, :m] r` is computed (the dropped weights
   receive exactly zero gradient in the published code too).
2. Scatter logits: the global half `W_e[:, m:] mean(r) + b_e` is a per-(image, head) vector, computed once
   from the m-vector mean(r) instead of by a 1x1 conv over a broadcast [B, 2m, H, W] concat.
3. Gather: the softmax weights sum to 1 over positions, so z_k = W_v,k (x s_k) + b_v,k; the attention-
   weighted average of x is one bmm [B, h, HW] x [B, HW, C], and the value projection runs on h vectors
   per image instead of on every position (the full-resolution C x C value conv disappears).
4. Scatter + projection: W_p u = sum_k (W_p,k z_k) g_k is a rank-h product, so W_p,k z_k is folded into
   q [B, O, h] and the [B, C, H, W] tensor u is never built: the branch adds bmm(q, g) to W_p x.
5. Stride: a 1x1 conv with stride s reads positions (s i, s j) only, so the gate is subsampled before the
   sigmoid (elementwise, so it commutes) and everything after the gather works at output resolution.
6. Frozen BatchNorm (eval mode, the paper's policy) is a per-channel affine map, so its scale is folded
   into W_p and q and its shift into a bias.
7. With that affine norm, the branch's 1x1 projection W_p x (stride s, no padding) equals a 3x3 kernel
   with W_p at the centre tap (padding 1 = dilation 1 reads the same positions), so it is added to the
   3x3 weight and one convolution computes both. A custom backward takes W_p's gradient as the centre
   slice of the 3x3 weight gradient when that is computed anyway, or as a 1x1 weight gradient when the
   3x3 weight is frozen, so merging never adds a 3x3 weight gradient. Merging costs a few passes over
   the 3x3 weight, so it is used from MERGE_MIN_POSITIONS output positions up (always, in GPU training).
8. Sums: the 1x1 projection and the rank-h term are added into the conv output in place (baddbmm_,
   add_); no backward needs that output, so no extra output-sized tensor is written.

Layouts: the [B, HW, C] view of x is taken by permute+reshape, a view for NCHW and channels_last alike,
and the final rank-h add follows the layout of the conv output, so no layout copies are made.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_LOW_PRECISION = (torch.float16, torch.bfloat16)
# Merging costs a few passes over the 3x3 weight per step and saves ~2 MACs per weight and output
# position (the 1x1 projection's forward and input gradient): from about this many output positions
# (batch x H' x W') up it pays on CPU; GPU training at 448 px, batch 32, has over 6,000 in every stage.
MERGE_MIN_POSITIONS = 1024


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, HW, C]; a view for both NCHW and channels_last (no copy)."""
    b, c = x.shape[:2]
    return x.permute(0, 2, 3, 1).reshape(b, -1, c)


def _is_channels_last(y: torch.Tensor) -> bool:
    return y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()


def _addmm_tokens_(y: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> None:
    """In place, y[b, :, p] += (left[b] @ right[b])[p, :] with left [B, N, K], right [B, K, O].

    Written into the conv output's own layout (y is not needed by any backward, so in place is safe).
    """
    if _is_channels_last(y):
        _tokens(y).baddbmm_(left.to(y.dtype), right.to(y.dtype))
    else:
        b, o = y.shape[:2]
        y.view(b, o, -1).baddbmm_(right.transpose(1, 2).to(y.dtype), left.transpose(1, 2).to(y.dtype))


class _CentreTapConv(torch.autograd.Function):
    """conv3x3(x, w3 + w1 at the centre tap) + bias, with a backward that never pays for what it skips.

    Autograd through `w3 + pad(w1)` would copy and zero-fill 3x3-sized weight tensors every step and, with
    w3 frozen, compute the full 3x3 weight gradient to get w1's; here w1's gradient is the centre slice of
    the 3x3 gradient when that is computed anyway, and a 1x1 weight gradient otherwise. The bias gradient
    is a plain sum unless the weight gradient is computed (mkldnn computes both or neither).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        w3: torch.Tensor,
        w1: torch.Tensor,
        bias: torch.Tensor | None,
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
    ) -> torch.Tensor:
        weight = w3.detach().clone()
        weight[:, :, 1:2, 1:2] += w1.detach()
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, bias is not None)
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        stride, padding, dilation, has_bias = ctx.conf
        need_x, need_w3, need_w1, need_b = ctx.needs_input_grad[:4]
        joint_bias = has_bias and need_b and need_w3
        grad_x, grad_w3, grad_b = torch.ops.aten.convolution_backward(
            grad_y,
            x,
            weight,
            [weight.shape[0]] if joint_bias else None,
            stride,
            padding,
            dilation,
            False,
            [0, 0],
            1,
            [need_x, need_w3, joint_bias],
        )
        if has_bias and need_b and not joint_bias:
            grad_b = grad_y.sum((0, 2, 3))
        grad_w1 = None
        if need_w1 and grad_w3 is not None:
            grad_w1 = grad_w3[:, :, 1:2, 1:2]
        elif need_w1:
            grad_w1 = torch.ops.aten.convolution_backward(
                grad_y,
                x,
                weight[:, :, 1:2, 1:2],
                None,
                stride,
                [0, 0],
                [1, 1],
                False,
                [0, 0],
                1,
                [False, True, False],
            )[1]
        return grad_x, grad_w3, grad_w1, grad_b, None, None, None


def centre_tap_conv(
    x: torch.Tensor,
    w3: torch.Tensor,
    w1: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """conv3x3(x, w3) + conv1x1(x, w1, stride) + bias as one convolution (see item 7); autocast-aware."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        cast = [t.to(dtype) if t is not None else None for t in (x, w3, w1, bias)]
        with torch.autocast(device, enabled=False):
            return _CentreTapConv.apply(*cast, stride, padding, dilation)
    return _CentreTapConv.apply(x, w3, w1, bias, stride, padding, dilation)


class GlobalBranch(nn.Module):
    """The global branch beside one 3x3 conv (see the module docstring for the math and its layout)."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, heads: int = 8, reduction: int = 4
    ) -> None:
        super().__init__()
        mid = in_channels // reduction
        if in_channels % heads or mid < 1:
            raise ValueError(f"{in_channels} channels do not split into {heads} heads / reduction {reduction}")
        self.heads = heads
        self.stride = stride
        self.reduce = nn.Conv2d(in_channels, mid, 1)
        # rows [:heads] are the gather logits, rows [heads:] the local half of the scatter logits
        self.attn = nn.Conv2d(mid, 2 * heads, 1, bias=False)
        self.attn_global = nn.Linear(mid, heads)
        self.value = nn.Conv2d(in_channels, in_channels, 1)
        self.proj = nn.Conv2d(in_channels, out_channels, 1, stride=stride)
        self.norm = nn.BatchNorm2d(out_channels)
        # the published attention convs see 2*mid inputs; keep their initial scale
        bound = (2 * mid) ** -0.5
        for param in (self.attn.weight, self.attn_global.weight, self.attn_global.bias):
            nn.init.uniform_(param, -bound, bound)
        # a near-zero norm scale keeps a converted pretrained model's outputs where they were
        nn.init.normal_(self.norm.weight, 0.0, 1e-4)
        nn.init.zeros_(self.norm.bias)

    def global_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate [B, H'W', h], q [B, h, O]): the branch's global part at output position p is gate[p] @ q.

        Small per-position tensors are kept token-major ([B, HW, ch]) in either input layout; the
        [B, HW, C] view of x feeds batched GEMMs, which read NCHW (transposed) and NHWC alike.
        """
        b, c, height, width = x.shape
        h, s = self.heads, self.stride
        xt = _tokens(x)
        reduce_w = self.reduce.weight.view(-1, c)
        r = F.relu(torch.baddbmm(self.reduce.bias, xt, reduce_w.t().expand(b, -1, -1)))  # [B, HW, m]
        logits = F.linear(r, self.attn.weight.view(2 * h, -1))  # [B, HW, 2h]
        gather = logits[..., :h].transpose(1, 2)
        weights = torch.softmax(gather, dim=-1, dtype=torch.float32 if gather.dtype in _LOW_PRECISION else None)
        pooled = torch.bmm(weights.to(xt.dtype), xt)  # [B, h, C]: softmax-weighted means of x
        value_w = self.value.weight.view(h, c // h, c)
        z = torch.einsum("bkc,kdc->bkd", pooled, value_w) + self.value.bias.view(h, c // h)
        proj_w = self.proj.weight
        q = torch.einsum("bkd,okd->bko", z, proj_w.view(proj_w.shape[0], h, c // h))
        scatter = logits[..., h:]
        if s > 1:
            scatter = scatter.view(b, height, width, h)[:, ::s, ::s].reshape(b, -1, h)
        gate = torch.sigmoid(scatter + self.attn_global(r.mean(1))[:, None])
        return gate, q

    def norm_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and shift of the norm in eval mode (running statistics)."""
        norm = self.norm
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        return scale, norm.bias - norm.running_mean * scale

    def output(self, x: torch.Tensor, gate: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """BN(W_p x + b_p + global part), for any norm mode."""
        local = F.conv2d(x, self.proj.weight, self.proj.bias, self.stride)
        _addmm_tokens_(local, gate, q)
        return self.norm(local)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The branch output alone, BN(W_p (x + u) + b_p) at the conv's stride."""
        return self.output(x, *self.global_terms(x))


def _mergeable(conv: nn.Conv2d) -> bool:
    """A 1x1 conv at the same stride equals this conv's centre tap: 3x3, dense, padding == dilation."""
    return (
        conv.kernel_size == (3, 3)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and tuple(conv.padding) == tuple(conv.dilation)
        and conv.stride[0] == conv.stride[1]
    )


class LocalGlobalConv(nn.Module):
    """A 3x3 conv plus its global branch: conv(x) + branch(x)."""

    def __init__(self, conv: nn.Conv2d, heads: int = 8, reduction: int = 4) -> None:
        super().__init__()
        self.conv = conv
        self.branch = GlobalBranch(conv.in_channels, conv.out_channels, conv.stride[0], heads, reduction)
        self.mergeable = _mergeable(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, branch = self.conv, self.branch
        gate, q = branch.global_terms(x)
        if branch.norm.training:  # batch statistics need the branch output on its own
            return conv(x).add_(branch.output(x, gate, q))
        scale, shift = branch.norm_affine()
        proj_w = branch.proj.weight * scale[:, None, None, None]
        bias = shift + branch.proj.bias * scale
        out_positions = x.shape[0] * -(-x.shape[2] // branch.stride) * -(-x.shape[3] // branch.stride)
        if self.mergeable and out_positions >= MERGE_MIN_POSITIONS:
            if conv.bias is not None:
                bias = bias + conv.bias
            y = centre_tap_conv(x, conv.weight, proj_w, bias, conv.stride, conv.padding, conv.dilation)
        else:
            y = conv(x).add_(F.conv2d(x, proj_w, bias, branch.stride))
        _addmm_tokens_(y, gate, q * scale)
        return y


def unmerge_for_tracing(module: nn.Module) -> int:
    """Make every LocalGlobalConv under `module` compute its 1x1 projection as a convolution of its own; returns
    how many. A traced graph (TorchScript, ONNX) cannot hold the merged path's custom autograd Function, and the
    merge is chosen by the number of output positions, i.e. the batch size, which an exported model leaves open.
    Both paths compute the same function (item 7 of the module docstring)."""
    convs = [m for m in module.modules() if isinstance(m, LocalGlobalConv)]
    for conv in convs:
        conv.mergeable = False
    return len(convs)


def convert_local_global(
    module: nn.Module, heads: int = 8, reduction: int = 4, skip: tuple[str, ...] = ()
) -> tuple[int, int]:
    """Wrap every dense 3x3 conv under `module` (top-level names in `skip` excepted); returns (wrapped, skipped).

    Convs whose input channels do not split into `heads` are left alone (e.g. an RGB stem conv). Grouped
    and depthwise 3x3 convs are skipped and counted: the published branch is a dense C x C design (the
    released code only ever wraps ResNet's dense convs), and beside a depthwise conv it would add several
    times the conv's parameters and compute.
    """
    wrapped = skipped = 0
    for name, child in list(module.named_children()):
        if name in skip:
            continue
        if type(child) is nn.Conv2d and child.kernel_size == (3, 3) and child.in_channels % heads == 0:
            if child.groups != 1:
                skipped += 1
            elif child.in_channels // reduction >= 1:
                setattr(module, name, LocalGlobalConv(child, heads, reduction))
                wrapped += 1
        else:
            inner = convert_local_global(child, heads, reduction)
            wrapped, skipped = wrapped + inner[0], skipped + inner[1]
    return wrapped, skipped


def published_branch_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a published-layout branch state dict (reduction, agg_attn, broad_attn, v, proj, norm) onto ours.

    The gather conv's global half and bias are dropped: a softmax over positions ignores them (item 1).
    """
    mid = state["reduction.weight"].shape[0]
    out = {
        "reduce.weight": state["reduction.weight"],
        "reduce.bias": state["reduction.bias"],
        "attn.weight": torch.cat([state["agg_attn.weight"][:, :mid], state["broad_attn.weight"][:, :mid]]),
        "attn_global.weight": state["broad_attn.weight"][:, mid:, 0, 0],
        "attn_global.bias": state["broad_attn.bias"],
        "value.weight": state["v.weight"],
        "value.bias": state["v.bias"],
        "proj.weight": state["proj.weight"],
        "proj.bias": state["proj.bias"],
    }
    out.update({k: v for k, v in state.items() if k.startswith("norm.")})
    return out
