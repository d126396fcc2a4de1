"""Baseline losses for partial / positive-only labels, trained on the same splits as PU-MLC.

Normaliser, shared by every baseline: the per-image loss summed over classes, averaged over the
images of the batch (sum / N). It is the PU loss's normaliser, so all methods see comparable loss
scales under the same optimiser settings. Reference implementations of the Cole et al. losses (`wan`,
`epr`) and of `ll-r` average over the N * C entries instead, i.e. they are C times smaller; `epr`'s
regulariser is rescaled below so that its ratio to the main term is the published one.

Label encoding: 1 positive, -1 observed negative, 0 unknown.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pumlc_cli.losses.base import MultiLabelLoss, positive_float

# Expected positives per image used by EPR in Cole et al. (2021) for each dataset.
EPR_DATASET_DEFAULTS: dict[str, float] = {"coco": 2.9, "voc": 1.5}


def _per_image(loss_matrix: torch.Tensor) -> torch.Tensor:
    """Sum over classes, mean over images."""
    return loss_matrix.sum() / loss_matrix.shape[0]


class BCEAssumeNegative(MultiLabelLoss):
    """`bce-an`: binary cross-entropy with every non-positive (unknown or negative) taken as negative."""

    def compute(self, logits: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        target = (observed == 1).float()
        return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / logits.shape[0]


class BCEKnown(MultiLabelLoss):
    """`bce-known`: partial BCE over the known entries (1 and -1) only; unknowns give no signal.

    Normaliser: C * (sum over known entries) / (number of known entries in the batch), which equals the
    shared sum-over-classes / N when every label is known, and stays on that scale as labels go missing
    (Durand et al.'s partial-BCE normalisation by the known proportion, at batch level). With positive-
    only labels it sees no negatives at all and collapses to predicting everything positive; that is
    expected of this baseline.
    """

    def compute(self, logits: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        known = observed != 0
        bce = F.binary_cross_entropy_with_logits(logits, (observed == 1).float(), reduction="none")
        total = torch.where(known, bce, 0.0).sum()
        return self.num_classes * total / known.sum().clamp_min(1)


class AsymmetricLoss(MultiLabelLoss):
    """`asl`: Ridnik et al. (2021), unknowns treated as negatives.

    Positive term (1 - p)^gamma_pos * log p; negative term p_m^gamma_neg * log(1 - p_m) with the
    probability shifted by the margin, p_m = max(p - clip, 0). Defaults gamma_pos=0, gamma_neg=4,
    clip=0.05 are the paper's. The focusing weights keep their gradient (the formula's exact
    derivative); ASL's training script detaches them by default. With gamma_pos = gamma_neg = clip = 0
    this is exactly `bce-an`.
    """

    def __init__(self, num_classes: int, *, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05) -> None:
        super().__init__(num_classes)
        self.gamma_pos = positive_float("gamma_pos", gamma_pos, allow_zero=True)
        self.gamma_neg = positive_float("gamma_neg", gamma_neg, allow_zero=True)
        self.clip = positive_float("clip", clip, allow_zero=True)

    def compute(self, logits: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        positive = observed == 1
        pos_term = F.logsigmoid(logits)
        if self.gamma_pos > 0:
            pos_term = pos_term * torch.sigmoid(-logits).pow(self.gamma_pos)
        if self.clip > 0:
            shifted = (torch.sigmoid(logits) - self.clip).clamp_min(0)
            neg_term = torch.log1p(-shifted)  # 1 - shifted >= clip, so this stays finite
        else:
            shifted = torch.sigmoid(logits)
            neg_term = F.logsigmoid(-logits)
        if self.gamma_neg > 0:
            neg_term = neg_term * shifted.pow(self.gamma_neg)
        return -_per_image(torch.where(positive, pos_term, neg_term))


class WeakAssumeNegative(MultiLabelLoss):
    """`wan`: Cole et al. (2021) weak assume-negative BCE.

    Unknown entries are negatives with weight `negative_weight` (default 1/(C-1), the paper's choice:
    about one expected positive among C-1 unobserved labels); observed positives and observed negatives
    keep weight 1 (the paper has no observed negatives; a known negative deserves full weight).
    """

    def __init__(self, num_classes: int, *, negative_weight: float | None = None) -> None:
        super().__init__(num_classes)
        if negative_weight is None:
            negative_weight = 1.0 / (num_classes - 1) if num_classes > 1 else 1.0
        self.negative_weight = positive_float("negative_weight", negative_weight, allow_zero=True)

    def compute(self, logits: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, (observed == 1).float(), reduction="none")
        weight = torch.where(observed == 0, self.negative_weight, 1.0)
        return _per_image(weight * bce)


class ExpectedPositiveRegularisation(MultiLabelLoss):
    """`epr`: Cole et al. (2021) expected positive regularisation.

    BCE on observed positives only, plus `reg_weight * (k_hat - expected_positives)^2 / C`, where k_hat
    is the batch mean of the predicted positives per image (sum of probabilities). Cole et al. add
    (k_hat - k)^2 / C^2 to a loss averaged over N * C entries; ours is summed over classes, hence / C
    here for the same balance. Observed negatives are ignored, as in the paper's positive-only setting.
    `expected_positives` defaults to 2.9 (COCO; 1.5 for VOC, see EPR_DATASET_DEFAULTS). k_hat is taken
    over the local batch (not all-reduced under DDP).
    """

    def __init__(self, num_classes: int, *, expected_positives: float = 2.9, reg_weight: float = 1.0) -> None:
        super().__init__(num_classes)
        self.expected_positives = positive_float("expected_positives", expected_positives)
        self.reg_weight = positive_float("reg_weight", reg_weight, allow_zero=True)

    def compute(self, logits: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        main = -_per_image(torch.where(observed == 1, F.logsigmoid(logits), 0.0))
        k_hat = torch.sigmoid(logits).sum(1).mean()
        return main + self.reg_weight * (k_hat - self.expected_positives).square() / self.num_classes


class LargeLossRejection(MultiLabelLoss):
    """`ll-r`: Kim et al. (CVPR 2022) large-loss rejection on top of assume-negative BCE.

    Unknowns are negatives, but in each batch the largest losses among the unknown entries are dropped
    (set to zero): the fraction rejected is min(epoch * delta_rel / 100, 1), so epoch 0 rejects nothing
    and the rate grows by `delta_rel` percent per epoch (default 0.2, the paper's COCO value). Call
    `set_epoch` at the start of every epoch. Losses tied with the cut-off are all rejected. Observed
    positives and negatives are never rejected. The selection is per local batch under DDP.
    """

    def __init__(self, num_classes: int, *, delta_rel: float = 0.2) -> None:
        super().__init__(num_classes)
        self.delta_rel = positive_float("delta_rel", delta_rel, allow_zero=True)

    def rejection_rate(self) -> float:
        return min(self.epoch * self.delta_rel / 100.0, 1.0)

    def compute(self, logits: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, (observed == 1).float(), reduction="none")
        rate = self.rejection_rate()
        if rate > 0:
            with torch.no_grad():
                unknown = observed == 0
                candidates = torch.where(unknown, bce, -torch.inf).flatten()
                ordered = torch.sort(candidates, descending=True).values
                k = torch.round(unknown.sum() * rate).long()  # stays on the device: no host sync
                cutoff = ordered[(k - 1).clamp_min(0)]
                cutoff = torch.where(k > 0, cutoff, torch.inf)
                reject = unknown & (bce >= cutoff)
            bce = torch.where(reject, 0.0, bce)
        return _per_image(bce)
