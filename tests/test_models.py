"""build_model, pretrained files, the trainable-parameter policy and frozen BatchNorm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pumlc_cli.errors import PumlcError
from pumlc_cli.models import (
    GlobalBranch,
    LocalGlobalConv,
    SemanticHead,
    build_model,
    convert_local_global,
    freeze_batchnorm,
    label_cooccurrence,
    set_trainable,
)

TINY = "test_resnet"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random timm backbone's state dict with its ImageNet classifier, as a user would download it."""
    import timm

    torch.manual_seed(3)
    model = timm.create_model(TINY, num_classes=10)
    path = tmp_path_factory.mktemp("weights") / "backbone.pth"
    torch.save(model.state_dict(), path)
    return path


def test_unknown_name() -> None:
    with pytest.raises(PumlcError, match="unknown model"):
        build_model("no_such_net_xyz", 3)


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("mobilenet_v2", "mobilenetv2_100"), ("resnet-50", "resnet50"), ("efficientnet-b0", "efficientnet_b0")],
)
def test_unknown_name_suggests_the_timm_name(typed: str, meant: str) -> None:
    with pytest.raises(PumlcError, match=f"unknown model '{typed}'; did you mean {meant}[,?]"):
        build_model(typed, 3)


def test_branches_skip_depthwise_and_grouped_convs() -> None:
    dense = nn.Conv2d(16, 16, 3, padding=1)
    depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
    grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
    net = nn.Sequential(dense, nn.ReLU(), depthwise, nn.Sequential(grouped))
    assert convert_local_global(net) == (1, 2)
    assert isinstance(net[0], LocalGlobalConv) and net[2] is depthwise and net[3][0] is grouped
    # A timm EfficientNet: its depthwise 3x3 convs keep no branch and are counted, its dense ones get one.
    import timm

    plain = timm.create_model("test_efficientnet", num_classes=0, global_pool="")
    grouped_3x3 = sum(
        1 for n, m in plain.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.groups > 1
    )
    model = build_model("test_efficientnet", 3)
    assert model.branches_skipped == grouped_3x3 > 0 and model.branches > 0
    assert all(m.conv.groups == 1 for m in model.modules() if isinstance(m, LocalGlobalConv))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(PumlcError, match=r"are grouped or depthwise\); pass --no-local-global"):
        build_model("mobilenetv2_035", 3)  # every 3x3 conv after the stem is depthwise


@pytest.mark.parametrize("name", ["test_efficientnet", "mobilenetv2_035"])
def test_train_last_covers_everything_after_the_last_stage(name: str) -> None:
    model = build_model(name, 3, local_global=False)
    last = model.last_stage  # the last feature point timm's feature_info reports, e.g. blocks.6
    set_trainable(model, "last", freeze_bn=False)
    model.train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    for prefix in (f"backbone.{last}.", "backbone.conv_head.", "backbone.bn2.", "head."):
        params = [(n, p) for n, p in model.named_parameters() if n.startswith(prefix)]
        assert params, prefix
        assert all(p.requires_grad and p.grad is not None for _, p in params), prefix
    frozen = ("backbone.conv_stem.", "backbone.bn1.", "backbone.blocks.0.", f"backbone.{model.previous_stage}.")
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith(frozen))
    set_trainable(model, "last")  # frozen statistics: the tail's conv and BatchNorm affine still train
    assert model.backbone.conv_head.weight.requires_grad and model.backbone.bn2.weight.requires_grad
    assert not model.backbone.bn2.training


def test_branches_beside_stage_convs_only() -> None:
    model = build_model(TINY, 4)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LocalGlobalConv)]
    plain = [
        n
        for n, m in model.named_modules()
        if type(m) is nn.Conv2d and m.kernel_size == (3, 3) and not n.endswith(".conv")
    ]
    assert len(wrapped) == model.branches > 0
    assert all(n.startswith("backbone.layer") for n in wrapped)
    assert all(n.startswith("backbone.conv1") for n in plain)  # the stem is left alone
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 4)


def test_pretrained_file_and_init_output(backbone_file: Path) -> None:
    plain = build_model(TINY, 4, local_global=False, pretrained_path=backbone_file)
    converted = build_model(TINY, 4, pretrained_path=backbone_file)
    state = torch.load(backbone_file, weights_only=True)
    torch.testing.assert_close(plain.backbone.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    torch.testing.assert_close(converted.backbone.layer1[0].conv1.conv.weight, state["layer1.0.conv1.weight"])
    converted.head.load_state_dict(plain.head.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for train in (False, True):
        plain.train(train)
        converted.train(train)
        with torch.no_grad():
            y0, y1 = plain(x), converted(x)
        assert ((y1 - y0).norm() / y0.norm()).item() < 1e-3


def test_pretrained_file_wrapped_and_prefixed(backbone_file: Path, tmp_path: Path) -> None:
    state = torch.load(backbone_file, weights_only=True)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    model = build_model(TINY, 4, pretrained_path=path)
    torch.testing.assert_close(model.backbone.bn1.weight, state["bn1.weight"])


def test_pretrained_file_errors(backbone_file: Path, tmp_path: Path) -> None:
    with pytest.raises(PumlcError, match="not found"):
        build_model(TINY, 4, pretrained_path=tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(PumlcError, match="cannot read"):
        build_model(TINY, 4, pretrained_path=garbage)
    state = torch.load(backbone_file, weights_only=True)
    renamed = dict(state)
    renamed["layer9.weight"] = renamed.pop("layer1.0.conv1.weight")
    bad = tmp_path / "bad.pth"
    torch.save(renamed, bad)
    with pytest.raises(PumlcError, match=r"missing layer1\.0\.conv1\.weight.*unexpected layer9\.weight"):
        build_model(TINY, 4, pretrained_path=bad)
    other = tmp_path / "other.pth"
    import timm

    torch.save(timm.create_model("resnet10t").state_dict(), other)
    with pytest.raises(PumlcError, match="wrong shape"):
        build_model(TINY, 4, pretrained_path=other)
    # `pretrained` with a file means "start from that file": it loads without trying the hub.
    state = torch.load(backbone_file, weights_only=True)
    model = build_model(TINY, 4, pretrained=True, pretrained_path=backbone_file)
    torch.testing.assert_close(model.backbone.bn1.weight, state["bn1.weight"])


def _branch_ids(model: nn.Module) -> set[int]:
    return {id(p) for m in model.modules() if isinstance(m, GlobalBranch) for p in m.parameters()}


def _expected(name: str, param: nn.Parameter, policy: str, branch_ids: set[int]) -> bool:
    """The released train.py's rule: BatchNorm affine parameters train with their stage (all of layer4)."""
    if id(param) in branch_ids or name.startswith("head."):
        return True
    return policy == "all" or (policy == "last" and name.startswith("backbone.layer4."))


@pytest.mark.parametrize("policy", ["all", "last", "branches"])
def test_gradients_follow_policy(policy: str) -> None:
    torch.manual_seed(0)
    model = build_model(TINY, 3)
    params = set_trainable(model, policy)
    model.train()
    branch_ids = _branch_ids(model)
    running = model.backbone.bn1.running_mean.clone()
    model(torch.randn(4, 3, 64, 64)).sum().backward()
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    torch.testing.assert_close(model.backbone.bn1.running_mean, running)  # statistics frozen
    trainable = {id(p) for p in params}
    for name, p in model.named_parameters():
        want = _expected(name, p, policy, branch_ids)
        assert (id(p) in trainable) == want, name
        assert (p.grad is not None) == want, name
        if want:
            assert torch.isfinite(p.grad).all(), name
    with pytest.raises(PumlcError):
        set_trainable(model, "everything")


def test_frozen_bn_survives_train_calls_and_can_be_released() -> None:
    model = build_model(TINY, 3, local_global=False)
    freeze_batchnorm(model)
    model.eval().train()
    assert model.training
    assert not model.backbone.bn1.training
    set_trainable(model, "all", freeze_bn=False)
    model.train()
    assert model.backbone.bn1.training
    assert model.backbone.bn1.weight.requires_grad


def test_channels_last_bf16_model() -> None:
    model = build_model(TINY, 3).to(memory_format=torch.channels_last)
    set_trainable(model, "last")
    model.train()
    x = torch.randn(2, 3, 64, 64).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.shape == (2, 3)
    logits.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_label_cooccurrence_matches_counting_loop() -> None:
    observed = np.random.default_rng(0).choice([-1, 0, 1], size=(40, 6), p=[0.5, 0.2, 0.3])
    observed[:, 5] = -1  # a class never observed positive
    expected = np.zeros((6, 6))
    for row in observed:
        idx = np.flatnonzero(row == 1)
        for i in idx:
            for j in idx:
                expected[i, j] += 1
    for i in range(6):
        if expected[i, i]:
            expected[i] /= expected[i, i]
    np.testing.assert_allclose(label_cooccurrence(observed), expected)


def _semantic_reference(head: SemanticHead, features: torch.Tensor) -> torch.Tensor:
    """The published formulas written out per class and per gate (float64)."""
    f = head.project(torch.nn.functional.avg_pool2d(features, 2, ceil_mode=True))
    b, d = f.shape[:2]
    fmap = f.flatten(2).transpose(1, 2)  # [B, HW, D]
    feats = []
    for c in range(head.embeddings.shape[0]):
        joint = torch.tanh(head.feature_fc(fmap) * head.embedding_fc(head.embeddings[c]))
        coef = torch.softmax(head.score(head.score_hidden(joint))[..., 0], dim=1)  # [B, HW]
        feats.append((fmap * coef[..., None]).sum(1))
    semantic = torch.stack(feats, 1)
    w_in, b_in = head.gate_in.weight, head.gate_in.bias
    w_st, b_st = head.gate_state.weight, head.gate_state.bias
    h = semantic
    for _ in range(head.steps):
        a = torch.cat([head.adjacency @ h, head.adjacency.t() @ h], -1)
        z = torch.sigmoid(a @ w_in[:d].t() + b_in[:d] + h @ w_st[:d].t() + b_st[:d])
        r = torch.sigmoid(a @ w_in[d : 2 * d].t() + b_in[d : 2 * d] + h @ w_st[d:].t() + b_st[d:])
        cand = torch.tanh(a @ w_in[2 * d :].t() + b_in[2 * d :] + head.candidate_state(r * h))
        h = (1 - z) * h + z * cand
    out = torch.tanh(head.output(torch.cat([h, semantic], -1)))
    return (out * head.class_weight).sum(-1) + head.class_bias


def test_semantic_head_matches_formulas_and_trains(tmp_path: Path) -> None:
    torch.manual_seed(0)
    observed = np.random.default_rng(1).choice([-1, 1], size=(30, 4))
    graph = label_cooccurrence(observed)
    head = SemanticHead(16, 4, cooccurrence=torch.as_tensor(graph), feature_dim=8, hidden_dim=6, output_dim=5)
    head = head.double().eval()
    features = torch.randn(3, 16, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(head(features), _semantic_reference(head, features))

    vectors = tmp_path / "vectors.npy"
    np.save(vectors, np.random.default_rng(2).normal(size=(4, 7)))
    model = build_model(TINY, 4, head="semantic", label_cooccurrence=graph, class_embeddings=vectors)
    assert "head.embeddings" not in dict(model.named_parameters())  # file vectors stay fixed
    set_trainable(model, "last")
    model.train()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None for p in model.head.parameters())
    rebuilt = build_model(TINY, 4, head="semantic", class_embeddings=vectors)
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.head.adjacency, torch.as_tensor(graph, dtype=torch.float32))

    np.save(vectors, np.zeros((3, 7)))
    with pytest.raises(PumlcError, match="one row per class"):
        build_model(TINY, 4, head="semantic", label_cooccurrence=graph, class_embeddings=vectors)
    with pytest.raises(PumlcError, match="cannot read"):
        build_model(TINY, 4, head="semantic", class_embeddings=tmp_path / "absent.npy")


def test_semantic_head_logits_stay_float32_under_autocast() -> None:
    """The released classifier runs in float32 under autocast (type promotion); bf16 logits would tie scores."""
    torch.manual_seed(0)
    head = SemanticHead(16, 4, feature_dim=8, hidden_dim=6, output_dim=5)
    features = torch.randn(2, 16, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(features)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, head(features), atol=0.05, rtol=0.05)  # bf16 elsewhere, same function
