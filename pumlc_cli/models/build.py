"""Model construction: timm backbone, local-global branches, a head, and the trainable-parameter policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pumlc_cli.errors import PumlcError
from pumlc_cli.models.hub import download_error, offline_reason
from pumlc_cli.models.local_global import GlobalBranch, convert_local_global
from pumlc_cli.models.semantic_head import SemanticHead
from pumlc_cli.models.weights import load_backbone_file

TRAIN_POLICIES = ("all", "last", "branches")
HEADS = ("linear", "semantic")


class LinearHead(nn.Module):
    """Global average pool, dropout, linear: the default multi-label classifier."""

    def __init__(self, num_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(num_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(features.mean((2, 3))))


class MultiLabelNet(nn.Module):
    """Backbone feature map -> head -> logits [N, C].

    `frozen_bn` (set by `set_trainable`/`freeze_batchnorm`) keeps every BatchNorm in eval mode through later
    `.train()` calls, so trainers, DDP and torch.compile wrappers can call `.train()` every epoch as usual.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        *,
        last_stage: str,
        branches: int,
        branches_skipped: int = 0,
        previous_stage: str | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.last_stage = last_stage  # the module of the last feature point (timm's feature_info[-1])
        self.previous_stage = previous_stage  # the one before it: `--train last` trains what runs after it
        self.branches = branches
        self.branches_skipped = branches_skipped  # grouped/depthwise 3x3 convs left without a branch
        self.frozen_bn = False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(images))

    def train(self, mode: bool = True) -> MultiLabelNet:
        super().train(mode)
        if mode and self.frozen_bn:
            _batchnorm_eval(self)
        return self


def _batchnorm_eval(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def freeze_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm in eval mode (running statistics fixed), and keep it so across `.train()` calls.

    The paper fine-tunes with frozen statistics (its `fix_bn`: batches of 35-45 images per GPU give poorer
    statistics than ImageNet's). Affine parameters stay trainable wherever `set_trainable` makes their module
    trainable (layer4 and the head in the paper). A plain nn.Module (not built here) keeps its `.train()`: call
    this again after each `.train()`.
    """
    target = getattr(model, "module", model)  # DDP
    target = getattr(target, "_orig_mod", target)  # torch.compile
    if isinstance(target, MultiLabelNet):
        target.frozen_bn = True
    _batchnorm_eval(model)


def _branch_parameter_ids(model: nn.Module) -> set[int]:
    return {id(p) for m in model.modules() if isinstance(m, GlobalBranch) for p in m.parameters()}


def modules_after(backbone: nn.Module, path: str) -> list[nn.Module]:
    """Every module registered after the one at dotted `path`, at each level on the way up to `backbone`.

    timm registers a CNN's modules in execution order, so these are what runs after that point.
    """
    modules: list[nn.Module] = []
    parent = backbone
    for name in path.split("."):
        children = list(parent.named_children())
        position = [n for n, _ in children].index(name)
        modules += [m for _, m in children[position + 1 :]]
        parent = children[position][1]
    return modules


def last_stage_onwards(model: MultiLabelNet) -> list[nn.Module]:
    """The backbone's last stage and everything after it: all that runs after the second-to-last feature
    point timm's `feature_info` reports (the previous stride).

    ResNet: layer4; EfficientNet/MobileNetV2: the stride-32 blocks, then `conv_head` and `bn2`; ConvNeXt:
    the last stage, `norm_pre`, `head`; RegNet: `s4`, `final_conv`; DenseNet: the last transition, dense
    block and `norm5`. No per-family name lists.
    """
    if model.previous_stage is None:  # a single feature point: the module that produces it, and what follows
        return [model.backbone.get_submodule(model.last_stage), *modules_after(model.backbone, model.last_stage)]
    return modules_after(model.backbone, model.previous_stage)


def set_trainable(model: MultiLabelNet, policy: str, *, freeze_bn: bool = True) -> list[nn.Parameter]:
    """Set requires_grad by policy and return the trainable parameters (model order).

    all: every weight; last: the paper's (branches + last stage and everything after it in the backbone,
    e.g. a final 1x1 conv and its norm, + head; earlier stages frozen);
    branches: branches + head. With `freeze_bn` (the paper's setting) every BatchNorm runs on its running
    statistics; its affine parameters train when the policy covers them, as in the released train.py, which
    trains all of layer4 (BatchNorm weight and bias included) while `fix_bn` keeps every BatchNorm in eval mode.
    """
    if policy not in TRAIN_POLICIES:
        raise PumlcError(f"training policy must be one of {', '.join(TRAIN_POLICIES)}, not {policy!r}")
    branch_ids = _branch_parameter_ids(model)
    last_ids = {id(p) for m in last_stage_onwards(model) for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad_(policy == "all")
    for p in model.head.parameters():
        p.requires_grad_(True)
    for p in model.backbone.parameters():
        pid = id(p)
        if pid in branch_ids or (policy == "last" and pid in last_ids):
            p.requires_grad_(True)
    if freeze_bn:
        freeze_batchnorm(model)
    else:
        model.frozen_bn = False
    return [p for p in model.parameters() if p.requires_grad]


def _class_matrix(value: Any, num_classes: int, what: str, *, square: bool = False) -> torch.Tensor | None:
    if value is None:
        return None
    matrix = torch.as_tensor(np.asarray(value, dtype=np.float32))
    if matrix.ndim != 2 or matrix.shape[0] != num_classes or (square and matrix.shape[1] != num_classes):
        raise PumlcError(f"{what} has shape {tuple(matrix.shape)}; expected one row per class ({num_classes})")
    return matrix


def _embeddings_file(path: str | Path | None, num_classes: int) -> torch.Tensor | None:
    if path is None:
        return None
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise PumlcError(f"{path}: cannot read class embeddings ({type(err).__name__})") from err
    return _class_matrix(array, num_classes, f"{path}: class embeddings")


# torchvision spellings whose timm name is not the closest string (difflib finds the rest, e.g. resnet-50).
_TORCHVISION_NAMES = {
    "mobilenet_v2": "mobilenetv2_100",
    "mobilenet_v3_large": "mobilenetv3_large_100",
    "mobilenet_v3_small": "mobilenetv3_small_100",
    "mnasnet1_0": "mnasnet_100",
    "mnasnet0_5": "mnasnet_050",
    "regnet_y_400mf": "regnety_004",
    "regnet_x_400mf": "regnetx_004",
    "efficientnet_v2_s": "efficientnetv2_s",
}


def model_suggestions(name: str, known: list[str]) -> list[str]:
    """Up to four timm names a user who typed `name` probably meant, best first."""
    import difflib

    key = name.strip().lower()
    alias = _TORCHVISION_NAMES.get(key.replace("-", "_"))
    close = difflib.get_close_matches(key, known, n=4, cutoff=0.7)
    return list(dict.fromkeys([alias, *close] if alias else close))[:4]


def check_model_name(name: str) -> None:
    """A name timm knows, checked from its registry without building anything (so `--dry-run` catches typos)."""
    import timm

    if not timm.is_model(name):
        close = model_suggestions(name, timm.list_models())
        hint = f"; did you mean {', '.join(close)}?" if close else " (timm.list_models() lists the names)"
        raise PumlcError(f"unknown model {name!r}{hint}")


def _create_backbone(name: str, pretrained: bool) -> nn.Module:
    import timm

    check_model_name(name)
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, global_pool="")
    except Exception as err:
        if not pretrained:
            raise
        raise download_error(name, None) from err


def fetch_pretrained(name: str) -> None:
    """Download (or find in timm's cache) the hub weights of `name` now, so a run without network fails before
    it writes anything; the trainer's own build then reads the cached file. Offline (HF_HUB_OFFLINE, or the
    host does not answer) it fails at once instead of after the hub client's retries."""
    check_model_name(name)
    reason = offline_reason(name)
    if reason is not None:
        raise download_error(name, reason)
    _create_backbone(name, pretrained=True)


def build_model(
    name: str,
    num_classes: int,
    *,
    local_global: bool = True,
    pretrained: bool = False,
    pretrained_path: str | Path | None = None,
    head: str = "linear",
    lg_heads: int = 8,
    lg_reduction: int = 4,
    drop_rate: float = 0.0,
    label_cooccurrence: np.ndarray | None = None,
    class_embeddings: str | Path | None = None,
) -> MultiLabelNet:
    """timm backbone `name` (weights from a local file, else timm's hub when `pretrained`) + branches beside its
    3x3 convs + head.

    Weights are loaded before the branches are added, so a plain backbone state dict fits; the stem is
    left unconverted (its RGB input does not split into heads and it runs at the largest resolution).
    head="semantic" takes `label_cooccurrence` ([C, C], `label_cooccurrence(observed train labels)`;
    when rebuilding from a checkpoint it may be omitted, the state dict restores it) and optionally
    `class_embeddings`, a .npy file of [C, E] fixed class vectors (else they are learned).
    """
    if head not in HEADS:
        raise PumlcError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
    if num_classes < 1:
        raise PumlcError(f"number of classes must be positive, not {num_classes}")
    backbone = _create_backbone(name, pretrained and pretrained_path is None)
    cfg = getattr(backbone, "pretrained_cfg", {}) or {}
    if pretrained_path is not None:
        load_backbone_file(backbone, Path(pretrained_path), name, cfg.get("classifier"))
    feature_info = getattr(backbone, "feature_info", None)
    if not feature_info:
        raise PumlcError(f"model {name!r} does not report its stages; pick a CNN such as resnet101")
    branches = skipped = 0
    if local_global:
        first_conv = cfg.get("first_conv")
        stem = (first_conv.split(".")[0],) if isinstance(first_conv, str) else ()
        branches, skipped = convert_local_global(backbone, lg_heads, lg_reduction, skip=stem)
        if branches == 0:
            grouped = f" (its {skipped} 3x3 convolutions are grouped or depthwise)" if skipped else ""
            raise PumlcError(
                f"model {name!r} has no dense 3x3 convolutions to add local-global branches to{grouped}; "
                "pass --no-local-global"
            )
    num_features = backbone.num_features
    if head == "semantic":
        classifier: nn.Module = SemanticHead(
            num_features,
            num_classes,
            cooccurrence=_class_matrix(label_cooccurrence, num_classes, "label co-occurrence", square=True),
            embeddings=_embeddings_file(class_embeddings, num_classes),
        )
    else:
        classifier = LinearHead(num_features, num_classes, drop_rate)
    return MultiLabelNet(
        backbone,
        classifier,
        last_stage=feature_info[-1]["module"],
        branches=branches,
        branches_skipped=skipped,
        previous_stage=feature_info[-2]["module"] if len(feature_info) > 1 else None,
    )
