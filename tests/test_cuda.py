"""CUDA checks of the model (run by bench/gpu_check.sh on a lent GPU; skipped elsewhere).

Imports nothing that needs pycocotools: the GPU machine does not have it.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pumlc_cli.models import build_model, published_branch_state, set_trainable
from pumlc_cli.models.local_global import LocalGlobalConv
from tests.reference import load_reference

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _tiny_name() -> str:
    import timm

    return "test_resnet" if timm.is_model("test_resnet") else "resnet10t"  # older timm on the GPU box


TINY = _tiny_name()


def _model(policy: str = "last") -> nn.Module:
    torch.manual_seed(0)
    model = build_model(TINY, 5)
    set_trainable(model, policy)
    return model.cuda().to(memory_format=torch.channels_last).train()


def _batch(n: int = 8, size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(n, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    targets = (torch.rand(n, 5, device="cuda") < 0.3).float()
    return images, targets


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_amp_step_is_finite(dtype: torch.dtype) -> None:
    model = _model()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, fused=True)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    images, targets = _batch()
    before = [p.detach().clone() for p in params]
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype):
            logits = model(images)
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), targets)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in params)
    assert any(not torch.equal(a, b) for a, b in zip(before, params, strict=True))


def test_channels_last_matches_nchw() -> None:
    model = _model().eval()
    images, _ = _batch()
    with torch.no_grad():
        y_cl = model(images)
        model_nchw = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
        y = model_nchw(images.contiguous())
    torch.testing.assert_close(y_cl, y, rtol=1e-3, atol=1e-3)


def test_compiled_model_matches_eager() -> None:
    model = _model()
    images, targets = _batch()
    compiled = torch.compile(model)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager = model(images)
        fast = compiled(images)
    torch.testing.assert_close(fast.float(), eager.float(), rtol=5e-2, atol=5e-2)
    loss = nn.functional.binary_cross_entropy_with_logits(fast.float(), targets)
    loss.backward()
    branch = next(m for m in model.modules() if isinstance(m, LocalGlobalConv)).branch
    assert branch.reduce.weight.grad is not None
    assert torch.isfinite(branch.reduce.weight.grad).all()


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("norm_train", [False, True])
def test_branch_matches_reference_fp32(stride: int, norm_train: bool) -> None:
    reference = load_reference()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 64, 3, stride, 1, bias=False)
    ref = reference.ReferenceLocalGlobalConv(copy.deepcopy(conv))
    for p in ref.global_branch.parameters():
        nn.init.normal_(p, std=0.1)
    opt = LocalGlobalConv(copy.deepcopy(conv))
    opt.branch.load_state_dict(published_branch_state(ref.global_branch.state_dict()))
    ref, opt = ref.cuda().train(norm_train), opt.cuda().train(norm_train)
    x = torch.randn(16, 64, 28, 28, device="cuda")
    x_ref, x_opt = x.clone().requires_grad_(), x.to(memory_format=torch.channels_last).requires_grad_()
    y_ref, y_opt = ref(x_ref), opt(x_opt)
    torch.testing.assert_close(y_opt, y_ref, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(y_ref)
    (y_ref * g).sum().backward()
    (y_opt * g).sum().backward()
    torch.testing.assert_close(x_opt.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(opt.conv.weight.grad, ref.conv.weight.grad, rtol=1e-3, atol=1e-3)
