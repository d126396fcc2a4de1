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


def _on_batch(name: str, observed: torch.Tensor):
    """A loss whose training set is this batch (image i = row i), and the batch's indices."""
    loss_fn = build_loss(name, observed.shape[1], train_labels=observed.numpy())
    return loss_fn, torch.arange(observed.shape[0])


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits_give_the_float32_result(name, dtype):
    logits, observed = _batch()
    half = logits.to(dtype)
    loss_fn, idx = _on_batch(name, observed)
    loss_fn.set_epoch(100)
    out = loss_fn(half, observed, idx)
    assert out.dtype == torch.float32
    assert out.item() == loss_fn(half.float(), observed, idx).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert loss_fn(half, observed, idx).dtype == torch.float32


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_has_finite_gradients_and_set_epoch(name):
    logits, observed = _batch(scale=30.0)
    x = logits.clone().requires_grad_(True)
    loss_fn, idx = _on_batch(name, observed)
    loss_fn.set_epoch(3)
    loss = loss_fn(x, observed, idx)
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


def test_asl_focusing_weights_carry_no_gradient():
    """ASL trains with `disable_torch_grad_focal_loss=True`: the weights are constants to backward."""
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    # One negative at logit 1: L = -w log(1 - p_m), w = p_m^4 fixed, so dL/dx = w p (1 - p) / (1 - p_m).
    p = sig(1.0)
    p_m = p - 0.05
    x = torch.tensor([[1.0]], requires_grad=True)
    build_loss("asl", 1)(x, torch.tensor([[-1]])).backward()
    assert x.grad.item() == pytest.approx(p_m**4 * p * (1 - p) / (1 - p_m), rel=1e-5)
    # One positive with gamma_pos = 1: L = -(1 - p) log p with (1 - p) fixed, so dL/dx = -(1 - p)^2.
    p = sig(0.3)
    x = torch.tensor([[0.3]], requires_grad=True)
    build_loss("asl", 1, gamma_pos=1.0)(x, torch.tensor([[1]])).backward()
    assert x.grad.item() == pytest.approx(-((1 - p) ** 2), rel=1e-5)
    # A whole batch against the detached formula written out.
    logits, observed = _batch(seed=4)
    x = logits.clone().requires_grad_(True)
    build_loss("asl", 6, gamma_pos=1.0)(x, observed).backward()
    ref_x = logits.clone().double().requires_grad_(True)
    prob = torch.sigmoid(ref_x)
    shifted = (prob - 0.05).clamp_min(0)
    pos = (1 - prob).detach() * torch.log(prob)
    neg = shifted.detach() ** 4 * torch.log(1 - shifted)
    (-torch.where(observed == 1, pos, neg).sum() / logits.shape[0]).backward()
    torch.testing.assert_close(x.grad.double(), ref_x.grad, rtol=1e-5, atol=1e-7)


def test_epr_is_positive_bce_plus_expected_count_penalty():
    main = (_bce(1.0, 1) + _bce(0.8, 1)) / 2
    k_hat = torch.sigmoid(X).sum(1).mean().item()
    expected = main + (k_hat - 1.5) ** 2 / 3
    value = build_loss("epr", 3, expected_positives=1.5)(X, OBS)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_epr_takes_the_published_count_of_the_dataset_kind():
    # Cole et al.'s expected_num_pos: pascal 1.5, coco 2.9; CSV data falls back to COCO's, as alpha/gamma do.
    assert build_loss("epr", 3, dataset="voc").expected_positives == 1.5
    assert build_loss("epr", 3, dataset="coco").expected_positives == 2.9
    assert build_loss("epr", 3, dataset="csv").expected_positives == 2.9
    assert build_loss("epr", 3, dataset="voc", expected_positives=2.0).expected_positives == 2.0  # the option wins
    main = (_bce(1.0, 1) + _bce(0.8, 1)) / 2
    k_hat = torch.sigmoid(X).sum(1).mean().item()
    assert build_loss("epr", 3, dataset="voc")(X, OBS).item() == pytest.approx(main + (k_hat - 1.5) ** 2 / 3)
    assert "dataset" not in loss_options("epr")


def _large_loss_matters(logits: torch.Tensor, observed: torch.Tensor, epoch: int, delta_rel: float) -> float:
    """LargeLossMatters `compute_batch_loss` (LL-R) rewritten plainly, times C for our normaliser."""
    n, c = logits.shape
    loss = F.binary_cross_entropy_with_logits(logits, (observed == 1).float(), reduction="none")
    clean_rate = 1 - epoch * delta_rel / 100
    if epoch > 0:
        k = math.ceil(round(n * c * (1 - clean_rate), 6))
        unobserved = (observed == 0) * loss
        cutoff = torch.topk(unobserved.flatten(), k).values[-1]
        loss = torch.where(unobserved < cutoff, loss, torch.zeros_like(loss))
    return float(loss.mean()) * c


def test_ll_r_rejects_the_reference_count_over_all_entries():
    loss_fn = build_loss("ll-r", 3, delta_rel=25.0)  # 25 % more rejected per epoch
    bce_an = build_loss("bce-an", 3)(X, OBS).item()
    assert loss_fn(X, OBS).item() == pytest.approx(bce_an, rel=1e-7)  # epoch 0: nothing rejected
    unknown_losses = sorted(
        (_bce(float(X[i, c]), 0) for i in range(2) for c in range(3) if OBS[i, c] == 0), reverse=True
    )
    loss_fn.set_epoch(1)  # quota ceil(2 * 3 * 0.25) = 2 of the batch's 6 entries, not 0.25 of the 3 unknowns
    assert loss_fn.rejection_count(6) == 2
    assert loss_fn(X, OBS).item() == pytest.approx(bce_an - sum(unknown_losses[:2]) / 2, rel=1e-6)
    loss_fn.set_epoch(10)  # rate capped at 1: all unknown losses gone, observed ones kept
    assert loss_fn(X, OBS).item() == pytest.approx(bce_an - sum(unknown_losses) / 2, rel=1e-6)
    logits, observed = _batch(n=32, c=10, seed=2)
    observed[observed == -1] = 0  # the reference's single-positive setting: no observed negatives
    loss_fn = build_loss("ll-r", 10, delta_rel=2.0)
    for epoch in (0, 1, 3, 7):
        loss_fn.set_epoch(epoch)
        assert loss_fn(logits, observed).item() == pytest.approx(_large_loss_matters(logits, observed, epoch, 2.0))


def test_llr_takes_the_authors_rate_of_the_dataset_kind():
    # snucml/LargeLossMatters#4: LL-R delta_rel 0.2 on PASCAL VOC, 0.4 on MS-COCO; CSV data falls back to COCO's.
    assert build_loss("ll-r", 3, dataset="voc").delta_rel == 0.2
    assert build_loss("ll-r", 3, dataset="coco").delta_rel == 0.4
    assert build_loss("ll-r", 3, dataset="csv").delta_rel == 0.4
    assert build_loss("ll-r", 3, dataset="voc", delta_rel=0.3).delta_rel == 0.3  # the option wins
    assert "dataset" not in loss_options("ll-r")


def _role_by_hand(x, a, obs, k):
    """ROLE's loss for one batch in plain floats: p = sigmoid(x), e = sigmoid(a), Cole et al.'s terms."""
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    n, c = len(x), len(x[0])
    main = 0.0
    for i in range(n):
        for j in range(c):
            p, e = sig(x[i][j]), sig(a[i][j])
            pos = obs[i][j] == 1
            classifier = (-math.log(p) if pos else 0.0) - (e * math.log(p) + (1 - e) * math.log(1 - p))
            estimator = (-math.log(e) if pos else 0.0) - (p * math.log(e) + (1 - p) * math.log(1 - e))
            main += classifier + estimator
    k_p = sum(sig(v) for row in x for v in row) / n
    k_e = sum(sig(v) for row in a for v in row) / n
    return 0.5 * main / n + 0.5 * ((k_p - k) ** 2 + (k_e - k) ** 2) / c


def test_role_matches_a_hand_computed_case():
    train = np.array([[1, 0, 0], [0, 1, -1], [0, 0, 1]], dtype=np.int8)
    loss_fn = build_loss("role", 3, dataset="voc", train_labels=train)
    est = loss_fn.estimates.detach()
    assert est.shape == (3, 3)
    torch.testing.assert_close(torch.sigmoid(est[train == 1]), torch.full((3,), 0.995))
    torch.testing.assert_close(torch.sigmoid(est[train == -1]), torch.full((1,), 0.005))
    assert ((torch.sigmoid(est[train == 0]) - 0.5).abs() <= 0.1 + 1e-6).all()
    table = [[0.4, -1.0, 2.0], [1.5, 0.2, -0.7], [-0.3, 0.9, 0.1]]
    with torch.no_grad():
        loss_fn.estimates.copy_(torch.tensor(table))
    # A batch of training images 2 and 0 (in that order), with their observed rows.
    idx = torch.tensor([2, 0])
    obs = torch.from_numpy(train[[2, 0]])
    x = torch.tensor([[0.5, -0.2, 1.1], [2.0, -1.5, 0.3]], requires_grad=True)
    loss = loss_fn(x, obs, idx)
    rows = [table[2], table[0]]
    assert loss.item() == pytest.approx(_role_by_hand(x.tolist(), rows, obs.tolist(), 1.5), rel=1e-6)
    loss.backward()
    # Estimates get gradient only on the batch's rows; the classifier's targets are detached estimates.
    grad = loss_fn.estimates.grad
    assert (grad[1] == 0).all() and (grad[[0, 2]] != 0).all()
    e = torch.sigmoid(torch.tensor(rows))
    p = torch.sigmoid(x.detach())
    k_p, k_e = p.sum(1).mean(), e.sum(1).mean()
    # Each side sees the other as a constant target: dL/dx = 0.5/N [-(1 - p) on positives + (p - e)]
    # + 0.5 * 2 (k_p - k) / C * p (1 - p) / N, and the same with p and e exchanged for dL/da.
    hand_x = 0.5 / 2 * (torch.where(obs == 1, -(1 - p), 0.0) + (p - e)) + (k_p - 1.5) / 3 * p * (1 - p) / 2
    hand_a = 0.5 / 2 * (torch.where(obs == 1, -(1 - e), 0.0) + (e - p)) + (k_e - 1.5) / 3 * e * (1 - e) / 2
    torch.testing.assert_close(x.grad, hand_x, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad[[2, 0]], hand_a, rtol=1e-5, atol=1e-6)
    groups = loss_fn.param_groups(1e-4)
    assert groups[0]["params"] == [loss_fn.estimates] and groups[0]["lr"] == pytest.approx(1e-3)
    assert groups[0]["weight_decay"] == 0.0
    assert "estimates" in loss_fn.state_dict()
    with pytest.raises(ValueError, match="indices"):
        loss_fn(x, obs)


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


def test_mixup_is_deterministic():
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


def test_mixup_targets_carry_gradient_as_released():
    """vpu_loss.py's `mixup` builds its soft targets from the undetached output: compare gradients with it."""
    torch.manual_seed(0)
    logits = (3 * torch.randn(6, 4)).requires_grad_(True)
    mixed_logits = (3 * torch.randn(3, 4)).requires_grad_(True)
    observed = torch.randint(-1, 2, (6, 4))
    images = torch.randn(6, 3, 2, 2)
    _, plan = draw_mixup(images, generator=torch.Generator().manual_seed(1))
    mixup_penalty(mixed_logits, logits, observed, plan).backward()
    ours = logits.grad.clone(), mixed_logits.grad.clone()
    logits.grad = mixed_logits.grad = None
    soft = (observed == 1).float() + torch.sigmoid(logits) * (observed != 1).float()  # released formula
    mix = plan.lam * soft[plan.first] + (1 - plan.lam) * soft[plan.second]
    gap = torch.log(mix + 1e-10) - torch.log(torch.sigmoid(mixed_logits) + 1e-10)
    (gap.pow(2).sum(0) / len(plan.first)).sum().backward()
    assert ours[0].abs().sum() > 0
    torch.testing.assert_close(ours[0], logits.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours[1], mixed_logits.grad, rtol=1e-4, atol=1e-6)


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
