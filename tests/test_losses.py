"""Loss registry: PU-MLC against a plain float64 reference, baselines against hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pumlc_cli.errors import PumlcError
from pumlc_cli.losses import (
    LOSS_NAMES,
    MixupPlan,
    build_loss,
    draw_mixup,
    loss_options,
    mixup_penalty,
    mixup_regulariser,
    pu_defaults,
)


def _batch(n: int = 16, c: int = 6, seed: int = 0, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g) * scale
    observed = torch.randint(-1, 2, (n, c), generator=g)
    observed[:, -1] = 0  # last class: no positive in the batch
    return logits, observed


def pu_reference(logits: torch.Tensor, observed: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """The PU-MLC formula written out class by class in float64, without any numerical tricks."""
    s = logits.double()
    total = s.new_zeros(())
    for c in range(s.shape[1]):
        col = s[:, c]
        std = ((col - col.mean()) ** 2).mean().sqrt().detach()
        tau = min(max(alpha * float(std), 1e-2), 1.0)
        phi = torch.sigmoid(col / tau)
        weight = float(phi.mean().detach()) ** gamma
        term = weight * torch.log(phi.mean())
        positives = [i for i in range(len(col)) if observed[i, c] == 1]
        if positives:
            term = term - sum(torch.log(phi[i]) for i in positives) / len(positives)
        total = total + term
    return total


@pytest.mark.parametrize(("alpha", "gamma", "scale"), [(1.0, 0.55, 2.0), (2.0, 0.85, 0.3), (0.5, 0.0, 5.0)])
def test_pu_matches_float64_reference_value_and_gradient(alpha, gamma, scale):
    logits, observed = _batch(scale=scale)
    x = logits.clone().requires_grad_(True)
    loss = build_loss("pu", 6, alpha=alpha, gamma=gamma)(x, observed)
    loss.backward()
    x_ref = logits.double().requires_grad_(True)
    ref = pu_reference(x_ref, observed, alpha, gamma)
    ref.backward()
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-5)
    torch.testing.assert_close(x.grad.double(), x_ref.grad, rtol=1e-4, atol=1e-6)


def test_pu_is_finite_for_constant_logits_and_classes_without_positives():
    loss_fn = build_loss("pu", 4)
    for value in (-8.0, 0.0, 3.0):
        x = torch.full((8, 4), value, requires_grad=True)
        observed = torch.zeros(8, 4, dtype=torch.long)
        observed[:3, 0] = 1
        loss = loss_fn(x, observed)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    # A class with no positive contributes only w_c * log mean Phi_c.
    logits, observed = _batch()
    only_first = pu_reference(logits, observed, 1.0, 0.55) - pu_reference(logits[:, :-1], observed[:, :-1], 1.0, 0.55)
    col = logits[:, -1].double()
    tau = min(max(float(col.std(unbiased=False)), 1e-2), 1.0)
    mean_phi = torch.sigmoid(col / tau).mean()
    assert only_first.item() == pytest.approx((mean_phi**0.55 * mean_phi.log()).item(), rel=1e-9)


def test_pu_survives_extreme_logits():
    x = torch.tensor([[80.0, -80.0], [-80.0, 80.0], [79.0, -79.0]], requires_grad=True)
    observed = torch.tensor([[1, 0], [0, 1], [0, 0]])
    loss = build_loss("pu", 2)(x, observed)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits_give_the_float32_result(name, dtype):
    logits, observed = _batch()
    half = logits.to(dtype)
    loss_fn = build_loss(name, 6)
    loss_fn.set_epoch(100)
    out = loss_fn(half, observed)
    assert out.dtype == torch.float32
    assert out.item() == loss_fn(half.float(), observed).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert loss_fn(half, observed).dtype == torch.float32


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_has_finite_gradients_and_set_epoch(name):
    logits, observed = _batch(scale=30.0)
    x = logits.clone().requires_grad_(True)
    loss_fn = build_loss(name, 6)
    loss_fn.set_epoch(3)
    loss = loss_fn(x, observed)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def _bce(x: float, y: int) -> float:
    p = 1 / (1 + math.exp(-x))
    return -math.log(p) if y == 1 else -math.log(1 - p)


X = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.8, -1.2]])
OBS = torch.tensor([[1, 0, -1], [0, 1, 0]])


def test_bce_an_treats_unknown_as_negative():
    expected = sum(_bce(float(X[i, c]), 1 if OBS[i, c] == 1 else 0) for i in range(2) for c in range(3)) / 2
    assert build_loss("bce-an", 3)(X, OBS).item() == pytest.approx(expected, rel=1e-6)


def test_bce_known_ignores_unknowns():
    known = [(0, 0), (0, 2), (1, 1)]
    expected = 3 * sum(_bce(float(X[i, c]), int(OBS[i, c] == 1)) for i, c in known) / len(known)
    loss_fn = build_loss("bce-known", 3)
    assert loss_fn(X, OBS).item() == pytest.approx(expected, rel=1e-6)
    moved = X.clone()
    moved[OBS == 0] += 5.0
    assert loss_fn(moved, OBS).item() == pytest.approx(loss_fn(X, OBS).item(), rel=1e-7)
    x = X.clone().requires_grad_(True)
    loss_fn(x, OBS).backward()
    assert (x.grad[OBS == 0] == 0).all()


def test_asl_reduces_to_bce_and_matches_hand_value():
    plain = build_loss("asl", 3, gamma_pos=0.0, gamma_neg=0.0, clip=0.0)(X, OBS)
    assert plain.item() == pytest.approx(build_loss("bce-an", 3)(X, OBS).item(), rel=1e-6)
    # Default ASL on one negative entry with logit 1: p = sigmoid(1), p_m = p - 0.05.
    p_m = 1 / (1 + math.exp(-1.0)) - 0.05
    expected = -(p_m**4) * math.log(1 - p_m)
    value = build_loss("asl", 1)(torch.tensor([[1.0]]), torch.tensor([[-1]]))
    assert value.item() == pytest.approx(expected, rel=1e-5)
    # Below the margin a negative costs nothing.
    assert build_loss("asl", 1)(torch.tensor([[-5.0]]), torch.tensor([[0]])).item() == 0.0


def test_wan_weights_unknowns_by_one_over_c_minus_one():
    w = 1 / (3 - 1)
    expected = 0.0
    for i in range(2):
        for c in range(3):
            y = int(OBS[i, c] == 1)
            expected += (w if OBS[i, c] == 0 else 1.0) * _bce(float(X[i, c]), y)
    assert build_loss("wan", 3)(X, OBS).item() == pytest.approx(expected / 2, rel=1e-6)
    assert build_loss("wan", 3, negative_weight=1.0)(X, OBS).item() == pytest.approx(
        build_loss("bce-an", 3)(X, OBS).item(), rel=1e-6
    )


def test_epr_is_positive_bce_plus_expected_count_penalty():
    main = (_bce(1.0, 1) + _bce(0.8, 1)) / 2
    k_hat = torch.sigmoid(X).sum(1).mean().item()
    expected = main + (k_hat - 1.5) ** 2 / 3
    value = build_loss("epr", 3, expected_positives=1.5)(X, OBS)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_ll_r_rejects_the_largest_unknown_losses_as_epochs_pass():
    loss_fn = build_loss("ll-r", 3, delta_rel=25.0)  # 25 % more rejected per epoch
    bce_an = build_loss("bce-an", 3)(X, OBS).item()
    assert loss_fn(X, OBS).item() == pytest.approx(bce_an, rel=1e-7)  # epoch 0: nothing rejected
    unknown_losses = sorted(
        (_bce(float(X[i, c]), 0) for i in range(2) for c in range(3) if OBS[i, c] == 0), reverse=True
    )
    loss_fn.set_epoch(2)  # rate 0.5 of 3 unknowns -> round(1.5) = 2 rejected
    expected = bce_an - sum(unknown_losses[:2]) / 2
    assert loss_fn(X, OBS).item() == pytest.approx(expected, rel=1e-6)
    loss_fn.set_epoch(10)  # rate capped at 1: all unknown losses gone
    assert loss_fn(X, OBS).item() == pytest.approx(bce_an - sum(unknown_losses) / 2, rel=1e-6)


def test_registry_errors_name_the_valid_choices():
    with pytest.raises(PumlcError, match="choose one of: pu, bce-an"):
        build_loss("focal", 3)
    with pytest.raises(PumlcError, match="no option beta; its options: alpha, gamma"):
        build_loss("pu", 3, beta=1.0)
    with pytest.raises(PumlcError, match="alpha must be > 0"):
        build_loss("pu", 3, alpha=0.0)
    assert loss_options("asl") == {"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05}
    assert pu_defaults("coco2014") == {"alpha": 1.0, "gamma": 0.55}
    assert pu_defaults("VOC2007") == {"alpha": 2.0, "gamma": 0.85}
    with pytest.raises(PumlcError, match="no published"):
        pu_defaults("nuswide")


class _LinearProbability(nn.Module):
    """A model whose *probability* is affine in the input: p(x) = 0.1 + 0.8 * mean(x) for x in [0, 1]."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = (0.1 + 0.8 * x.flatten(1).mean(1, keepdim=True)).expand(-1, self.classes)
        return torch.log(p) - torch.log1p(-p)


def test_mixup_penalty_vanishes_for_a_model_linear_in_probability():
    images = torch.rand(8, 3, 4, 4, dtype=torch.float64)
    model = _LinearProbability(5)
    logits = model(images)
    unknown = torch.zeros(8, 5, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    assert mixup_regulariser(model, images, logits, unknown, generator=gen).item() < 1e-10  # float32 rounding only
    # Pinning observed positives to probability 1 breaks the consistency: the penalty becomes positive.
    observed = unknown.clone()
    observed[:, 0] = 1
    gen = torch.Generator().manual_seed(0)
    assert mixup_regulariser(model, images, logits, observed, generator=gen).item() > 1e-3


def test_mixup_is_deterministic_and_detaches_targets():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    images = torch.randn(6, 3, 2, 2)
    observed = torch.randint(-1, 2, (6, 4))

    def run(generator):
        logits = model(images)
        return mixup_regulariser(model, images, logits, observed, weight=0.5, generator=generator)

    a = run(torch.Generator().manual_seed(1))
    assert a.item() == run(torch.Generator().manual_seed(1)).item()
    assert a.item() != run(torch.Generator().manual_seed(2)).item()
    assert run(np.random.default_rng(3)).item() == run(np.random.default_rng(3)).item()
    torch.manual_seed(4)
    b = run(None)
    torch.manual_seed(4)
    assert b.item() == run(None).item()
    # Weight scales linearly; weight 0 skips the second forward pass.
    full = mixup_regulariser(
        model, images, model(images), observed, weight=1.0, generator=torch.Generator().manual_seed(1)
    )
    assert a.item() == pytest.approx(0.5 * full.item(), rel=1e-6)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    logits = model(images)
    assert mixup_regulariser(model, images, logits, observed, weight=0.0).item() == 0.0
    assert len(calls) == 1
    # Soft targets are detached: the first forward's logits receive no gradient from the penalty.
    logits = model(images).detach().requires_grad_(True)
    mixed, plan = draw_mixup(images, generator=torch.Generator().manual_seed(1))
    mixup_penalty(model(mixed), logits, observed, plan).backward()
    assert logits.grad is None


def test_mixup_pairs_follow_the_official_halves():
    images = torch.arange(7, dtype=torch.float32).view(7, 1)
    mixed, plan = draw_mixup(images, generator=torch.Generator().manual_seed(0))
    assert 0.0 <= plan.lam <= 1.0
    assert sorted(plan.first.tolist()) == [0, 1, 2]  # first half, shuffled
    assert plan.second.tolist() == [4, 5, 6]  # second half; the middle image 3 is left out
    torch.testing.assert_close(mixed, plan.lam * images[plan.first] + (1 - plan.lam) * images[plan.second])
    single, _ = draw_mixup(images[:1], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(single, images[:1])  # one image is mixed with itself


def test_mixup_penalty_matches_hand_computation():
    logits = torch.tensor([[0.3, -1.0], [2.0, 0.5]])
    observed = torch.tensor([[1, 0], [0, 0]])
    mixed_logits = torch.tensor([[0.1, 0.2]])
    plan = MixupPlan(lam=0.25, first=torch.tensor([0]), second=torch.tensor([1]))
    # Soft targets: image 0 class 0 is an observed positive (1); all else the model's probability.
    targets = [
        0.25 * 1.0 + 0.75 * torch.sigmoid(logits[1, 0]),
        0.25 * torch.sigmoid(logits[0, 1]) + 0.75 * torch.sigmoid(logits[1, 1]),
    ]
    expected = sum((math.log(float(t)) - float(F.logsigmoid(mixed_logits[0, k]))) ** 2 for k, t in enumerate(targets))
    assert mixup_penalty(mixed_logits, logits, observed, plan).item() == pytest.approx(expected, rel=1e-5)
    # lambda at the ends of [0, 1] keeps the penalty finite (log 0 handled in log space).
    for lam in (0.0, 1.0):
        edge = MixupPlan(lam=lam, first=torch.tensor([0]), second=torch.tensor([1]))
        assert torch.isfinite(mixup_penalty(mixed_logits, logits, observed, edge))


def test_mixup_keeps_channels_last_layout():
    images = torch.randn(4, 3, 5, 5).contiguous(memory_format=torch.channels_last)
    mixed, _ = draw_mixup(images, generator=torch.Generator().manual_seed(0))
    assert mixed.is_contiguous(memory_format=torch.channels_last)
