"""The optimised local-global branch computes the published function (values and gradients)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from pumlc_cli.models import local_global
from pumlc_cli.models.local_global import LocalGlobalConv, published_branch_state
from tests.reference import load_reference

reference = load_reference()


pytestmark = pytest.mark.usefixtures("one_thread")


def make_pair(
    c_in: int, c_out: int, stride: int, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[nn.Module, LocalGlobalConv]:
    """Reference and optimised wrappers around one conv, with the same (randomised) branch weights."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
    ref = reference.ReferenceLocalGlobalConv(copy.deepcopy(conv))
    for p in ref.global_branch.parameters():  # O(1) weights so every term matters
        nn.init.normal_(p)
    norm = ref.global_branch.norm
    norm.running_mean.normal_()
    norm.running_var.uniform_(0.5, 2.0)
    opt = LocalGlobalConv(copy.deepcopy(conv))
    opt.branch.load_state_dict(published_branch_state(ref.global_branch.state_dict()))
    return ref.to(dtype), opt.to(dtype)


def _grads(module: nn.Module, names: dict[str, str]) -> dict[str, torch.Tensor]:
    params = dict(module.named_parameters())
    return {key: params[name].grad for key, name in names.items()}


SHAPES = [(16, 16, 1, 7, 5), (32, 48, 2, 9, 8), (64, 64, 2, 8, 8), (24, 16, 1, 1, 1)]
SHARED = {  # same tensors in both layouts: key -> (reference name, optimised name)
    "conv": ("conv.weight", "conv.weight"),
    "reduce": ("global_branch.reduction.weight", "branch.reduce.weight"),
    "value": ("global_branch.v.weight", "branch.value.weight"),
    "value_bias": ("global_branch.v.bias", "branch.value.bias"),
    "proj": ("global_branch.proj.weight", "branch.proj.weight"),
    "proj_bias": ("global_branch.proj.bias", "branch.proj.bias"),
    "norm": ("global_branch.norm.weight", "branch.norm.weight"),
}


@pytest.fixture(params=["merged", "separate"])
def merge_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run both eval-mode paths: 1x1 projection merged into the 3x3 kernel, or run beside it."""
    monkeypatch.setattr(local_global, "MERGE_MIN_POSITIONS", 0 if request.param == "merged" else 10**9)
    return request.param


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bn_train", [True, False])
@pytest.mark.parametrize("conv_trainable", [True, False])
def test_matches_reference_float64(shape, bn_train: bool, conv_trainable: bool, merge_mode: str) -> None:
    c_in, c_out, stride, h, w = shape
    ref, opt = make_pair(c_in, c_out, stride)
    ref.train(bn_train)
    opt.train(bn_train)
    ref.conv.weight.requires_grad_(conv_trainable)
    opt.conv.weight.requires_grad_(conv_trainable)
    x = torch.randn(3, c_in, h, w, dtype=torch.float64)
    x_ref, x_opt = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref, y_opt = ref(x_ref), opt(x_opt)
    torch.testing.assert_close(y_opt, y_ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(y_ref)
    (y_ref * g).sum().backward()
    (y_opt * g).sum().backward()
    torch.testing.assert_close(x_opt.grad, x_ref.grad, rtol=1e-9, atol=1e-9)
    grads_ref = _grads(ref, {k: v[0] for k, v in SHARED.items()})
    grads_opt = _grads(opt, {k: v[1] for k, v in SHARED.items()})
    for key in SHARED:
        if key == "conv" and not conv_trainable:
            assert grads_opt[key] is None
            continue
        torch.testing.assert_close(grads_opt[key], grads_ref[key], rtol=1e-9, atol=1e-9, msg=key)
    if bn_train:  # running statistics move the same way
        torch.testing.assert_close(opt.branch.norm.running_var, ref.global_branch.norm.running_var)


def test_no_grad_and_channels_last_match(merge_mode: str) -> None:
    ref, opt = make_pair(32, 32, 2)
    ref.eval()
    opt.eval()
    x = torch.randn(2, 32, 10, 10, dtype=torch.float64)
    expected = ref(x)
    torch.testing.assert_close(opt.branch(x), ref.global_branch(x))  # the branch on its own
    with torch.no_grad():
        torch.testing.assert_close(opt(x), expected)
    x_cl = x.to(memory_format=torch.channels_last)
    opt_cl = opt.to(memory_format=torch.channels_last)
    y = opt_cl(x_cl)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, expected)
    y.sum().backward()


def test_bf16_autocast_close_to_float32(merge_mode: str) -> None:
    _, opt = make_pair(32, 32, 1, dtype=torch.float32)
    opt.eval()
    x = torch.randn(2, 32, 12, 12).to(memory_format=torch.channels_last)
    expected = opt(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = opt(x)
    assert y.dtype == torch.bfloat16
    assert torch.isfinite(y).all()
    rel = (y.float() - expected).norm() / expected.norm()
    assert rel < 3e-2
    y.float().sum().backward()
    assert torch.isfinite(opt.branch.reduce.weight.grad).all()


def test_init_keeps_conv_output() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(32, 32, 3, 1, 1, bias=False)
    wrapped = LocalGlobalConv(copy.deepcopy(conv)).eval()
    x = torch.randn(2, 32, 8, 8)
    y0, y1 = conv(x), wrapped(x)
    assert (y1 - y0).norm() / y0.norm() < 1e-3


def _optimised_state(ref_model: nn.Module) -> dict[str, torch.Tensor]:
    """The reference model's weights in the optimised model's layout."""
    state = ref_model.state_dict()
    out = {k: v for k, v in state.items() if ".global_branch." not in k}
    prefixes = {k.split(".global_branch.")[0] for k in state if ".global_branch." in k}
    for prefix in prefixes:
        head = f"{prefix}.global_branch."
        branch = {k[len(head) :]: v for k, v in state.items() if k.startswith(head)}
        out.update({f"{prefix}.branch.{k}": v for k, v in published_branch_state(branch).items()})
    return out


def test_training_curve_matches_reference() -> None:
    """A few fixed-seed steps (paper policy, frozen BN) give the same losses with either branch."""
    from pumlc_cli.models import build_model, set_trainable

    torch.manual_seed(0)
    ref_model = build_model("test_resnet", 5, local_global=False)
    reference.convert_reference(ref_model.backbone, skip=("conv1",))
    for m in ref_model.modules():  # branches that matter from the first step
        if isinstance(m, reference.ReferenceGlobalBranch):
            nn.init.normal_(m.norm.weight, 0.0, 0.3)
    opt_model = build_model("test_resnet", 5)
    opt_model.load_state_dict(_optimised_state(ref_model))
    images = torch.randn(6, 3, 32, 32)
    targets = (torch.rand(6, 5) < 0.3).float()
    curves = []
    for model in (ref_model, opt_model):
        params = set_trainable(model, "last")
        for m in model.modules():
            if isinstance(m, reference.ReferenceGlobalBranch):
                params += [p.requires_grad_() for p in m.parameters() if not p.requires_grad]
        model.train()
        optimizer = torch.optim.SGD(params, lr=0.2)
        losses = []
        for _ in range(4):
            optimizer.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(model(images), targets)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        curves.append(losses)
    np.testing.assert_allclose(curves[1], curves[0], rtol=1e-5)
    assert curves[0][-1] < curves[0][0]
