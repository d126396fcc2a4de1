"""Loss registry: `build_loss(name, num_classes, **options)` for PU-MLC and the baselines.

Every loss maps (logits [N, C], observed [N, C] with 1 / 0 / -1) to a scalar computed in float32 and
has `set_epoch(epoch)`. Options are the keyword arguments of the loss class (documented there); an
unknown name or option is a PumlcError that lists the valid ones.
"""

from __future__ import annotations

import inspect

from pumlc_cli.errors import PumlcError
from pumlc_cli.losses.base import MultiLabelLoss
from pumlc_cli.losses.baselines import (
    EPR_DATASET_DEFAULTS,
    AsymmetricLoss,
    BCEAssumeNegative,
    BCEKnown,
    ExpectedPositiveRegularisation,
    LargeLossRejection,
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
}
LOSS_NAMES: tuple[str, ...] = tuple(_LOSSES)


def loss_options(name: str) -> dict[str, object]:
    """The options a loss accepts, with their defaults (for CLI help and config validation)."""
    cls = _loss_class(name)
    params = list(inspect.signature(cls.__init__).parameters.values())
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_loss(name: str, num_classes: int, **options: object) -> MultiLabelLoss:
    """Instantiate a registered loss; unknown names or options raise PumlcError naming the valid ones."""
    cls = _loss_class(name)
    valid = loss_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        accepted = ", ".join(valid) if valid else "none"
        raise PumlcError(f"loss {name!r} has no option {', '.join(unknown)}; its options: {accepted}")
    return cls(num_classes, **options)


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
    "mixup_penalty",
    "mixup_regulariser",
    "pu_defaults",
]
