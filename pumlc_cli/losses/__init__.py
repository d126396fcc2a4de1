"""Loss registry: `build_loss(name, num_classes, dataset=..., train_labels=..., **options)`.

Every loss maps (logits [N, C], observed [N, C] with 1 / 0 / -1) to a scalar computed in float32 and
has `set_epoch(epoch)`. Options are the keyword arguments of the loss class (documented there); an
unknown name or option is a PumlcError that lists the valid ones. `dataset` (the prepared folder's
dataset kind: coco, voc, csv) and `train_labels` (the observed training matrix) are facts about the data,
not options: a loss receives them only when its constructor names them (EPR's per-dataset expected
positive count, ROLE's per-image label estimates).
"""

from __future__ import annotations

import inspect

import numpy as np

from pumlc_cli.errors import PumlcError
from pumlc_cli.losses.base import MultiLabelLoss
from pumlc_cli.losses.baselines import (
    EPR_DATASET_DEFAULTS,
    AsymmetricLoss,
    BCEAssumeNegative,
    BCEKnown,
    ExpectedPositiveRegularisation,
    LargeLossRejection,
    RegularisedOnlineLabelEstimation,
    WeakAssumeNegative,
)
from pumlc_cli.losses.pu import (
    PU_DATASET_DEFAULTS,
    MixupPlan,
    PULoss,
    draw_mixup,
    mixup_penalty,
    mixup_regulariser,
    pu_defaults,
)

_LOSSES: dict[str, type[MultiLabelLoss]] = {
    "pu": PULoss,
    "bce-an": BCEAssumeNegative,
    "bce-known": BCEKnown,
    "asl": AsymmetricLoss,
    "wan": WeakAssumeNegative,
    "epr": ExpectedPositiveRegularisation,
    "ll-r": LargeLossRejection,
    "role": RegularisedOnlineLabelEstimation,
}
LOSS_NAMES: tuple[str, ...] = tuple(_LOSSES)
# Keyword arguments that describe the data, passed by the trainer, never set by the user.
_DATA_FACTS = ("dataset", "train_labels")


def loss_options(name: str) -> dict[str, object]:
    """The options a loss accepts, with their defaults (for CLI help and config validation)."""
    cls = _loss_class(name)
    params = list(inspect.signature(cls.__init__).parameters.values())
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _DATA_FACTS}


def build_loss(
    name: str,
    num_classes: int,
    *,
    dataset: str | None = None,
    train_labels: np.ndarray | None = None,
    **options: object,
) -> MultiLabelLoss:
    """Instantiate a registered loss; unknown names or options raise PumlcError naming the valid ones.

    `dataset` picks per-dataset published defaults (VOC for "voc", COCO's otherwise); `train_labels` sizes
    per-image state. Both are handed only to losses whose constructor takes them.
    """
    cls = _loss_class(name)
    valid = loss_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        accepted = ", ".join(valid) if valid else "none"
        raise PumlcError(f"loss {name!r} has no option {', '.join(unknown)}; its options: {accepted}")
    accepted_facts = inspect.signature(cls.__init__).parameters
    facts = {"dataset": dataset, "train_labels": train_labels}
    return cls(num_classes, **{k: v for k, v in facts.items() if k in accepted_facts}, **options)


def needs_train_labels(name: str) -> bool:
    """Whether the loss keeps per-image state sized by the observed training matrix (e.g. ROLE's estimates)."""
    return "train_labels" in inspect.signature(_loss_class(name).__init__).parameters


def _loss_class(name: str) -> type[MultiLabelLoss]:
    try:
        return _LOSSES[name]
    except KeyError:
        raise PumlcError(f"unknown loss {name!r}; choose one of: {', '.join(LOSS_NAMES)}") from None


__all__ = [
    "EPR_DATASET_DEFAULTS",
    "LOSS_NAMES",
    "PU_DATASET_DEFAULTS",
    "MixupPlan",
    "MultiLabelLoss",
    "build_loss",
    "draw_mixup",
    "loss_options",
    "needs_train_labels",
    "mixup_penalty",
    "mixup_regulariser",
    "pu_defaults",
]
