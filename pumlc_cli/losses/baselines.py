"""Baseline losses for partial / positive-only labels, trained on the same splits as PU-MLC.

Each follows its authors' training code (Cole et al. `single-positive-multi-label` for `wan`, `epr`, `role`;
`LargeLossMatters` for `ll-r`; Alibaba-MIIL `ASL` for `asl`); the deliberate differences are listed in the
README's "Differences from the released code" table.

Normaliser, shared by every baseline: the per-image loss summed over classes, averaged over the
images of the batch (sum / N). It is the PU loss's normaliser, so all methods see comparable loss
scales under the same optimiser settings. Reference implementations of the Cole et al. losses and of
`ll-r` average over the N * C entries instead, i.e. they are C times smaller (ASL sums over all
entries, N times larger); the regularisers of `epr` and `role` are rescaled below so that their ratio to
the main term is the published one. Log-probabilities are exact log-sigmoids where the references add
an epsilon inside the log.

Label encoding: 1 positive, -1 observed negative, 0 unknown.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pumlc_cli.errors import PumlcError
from pumlc_cli.losses.base import MultiLabelLoss, dataset_default, positive_float
from pumlc_cli.losses.dist import all_reduce_sum, is_distributed, reduce_sum_

# Expected positives per image, Cole et al. (2021) `train.py` (`expected_num_pos`), used by EPR and ROLE.
EPR_DATASET_DEFAULTS: dict[str, float] = {"coco": 2.9, "voc": 1.5}
# LL-R's delta_rel: the released code requires the flag; the authors' best values (snucml/LargeLossMatters#4):
# PASCAL VOC 0.2, MS-COCO (and NUS-WIDE, CUB) 0.4.
LLR_DATASET_DEFAULTS: dict[str, float] = {"coco": 0.4, "voc": 0.2}


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
    clip=0.05 are those of ASL's `train.py`. The focusing weights (1 - p)^gamma_pos and p_m^gamma_neg are
    constants to the gradient, as ASL trains (`disable_torch_grad_focal_loss=True`): only the log terms
    are differentiated. With gamma_pos = gamma_neg = clip = 0 this is exactly `bce-an`.
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
            pos_term = pos_term * torch.sigmoid(-logits).detach().pow(self.gamma_pos)
        if self.clip > 0:
            shifted = (torch.sigmoid(logits) - self.clip).clamp_min(0)
            neg_term = torch.log1p(-shifted)  # 1 - shifted >= clip, so this stays finite
        else:
            shifted = torch.sigmoid(logits)
            neg_term = F.logsigmoid(-logits)
        if self.gamma_neg > 0:
            neg_term = neg_term * shifted.detach().pow(self.gamma_neg)
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


def _count_penalty(probs: torch.Tensor, expected: float, num_classes: int) -> torch.Tensor:
    """(k_hat - k)^2 / C with k_hat the batch mean of sum_c p: Cole et al.'s / C^2 on our C-times-larger scale.

    k_hat spans the global batch under DDP (as on Cole et al.'s single GPU), so the penalty does not depend
    on the process count; see `losses.dist` for the gradient bookkeeping.
    """
    images = reduce_sum_(torch.tensor(float(probs.shape[0]), device=probs.device))
    return (all_reduce_sum(probs.sum()) / images - expected).square() / num_classes


class ExpectedPositiveRegularisation(MultiLabelLoss):
    """`epr`: Cole et al. (2021) expected positive regularisation.

    BCE on observed positives only, plus `reg_weight * (k_hat - expected_positives)^2 / C`, where k_hat
    is the batch mean of the predicted positives per image (sum of probabilities). Cole et al. add
    (k_hat - k)^2 / C^2 to a loss averaged over N * C entries; ours is summed over classes, hence / C
    here for the same balance. Observed negatives are ignored, as in the paper's positive-only setting.
    `expected_positives` defaults to the published value of the dataset kind the trainer passes
    (EPR_DATASET_DEFAULTS: 1.5 for VOC, 2.9 for COCO and for CSV data). k_hat is taken over the global
    batch under DDP.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        expected_positives: float | None = None,
        reg_weight: float = 1.0,
        dataset: str | None = None,
    ) -> None:
        super().__init__(num_classes)
        if expected_positives is None:
            expected_positives = dataset_default(EPR_DATASET_DEFAULTS, dataset)
        self.expected_positives = positive_float("expected_positives", expected_positives)
        self.reg_weight = positive_float("reg_weight", reg_weight, allow_zero=True)

    def compute(self, logits: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        main = -_per_image(torch.where(observed == 1, F.logsigmoid(logits), 0.0))
        penalty = _count_penalty(torch.sigmoid(logits), self.expected_positives, self.num_classes)
        return main + self.reg_weight * penalty


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def initial_estimates(train_labels: torch.Tensor) -> torch.Tensor:
    """ROLE's starting label-estimate logits, as Cole et al.'s `LabelEstimator` draws them.

    Unknown entries: uniform in logit space on [-q, q] with q = logit(0.6) (estimates 0.4 to 0.6);
    observed positives logit(0.995), observed negatives logit(0.005). Uses torch's global generator,
    which the trainer seeds.
    """
    q = _logit(0.6)
    logits = q * (2.0 * torch.rand(train_labels.shape) - 1.0)
    logits[train_labels == 1] = _logit(0.995)
    logits[train_labels == -1] = _logit(0.005)
    return logits


def _average_over_ranks(grad: torch.Tensor) -> torch.Tensor:
    """Each estimate row is touched by the one rank holding that image; sum the shards and average as
    DDP averages the network's gradients, so the step equals one process on the global batch."""
    if not is_distributed():
        return grad
    grad = grad.clone()
    torch.distributed.all_reduce(grad)
    return grad / torch.distributed.get_world_size()


class RegularisedOnlineLabelEstimation(MultiLabelLoss):
    """`role`: Cole et al. (2021) regularised online label estimation.

    A learnable matrix of label-estimate logits, one row per training image (`initial_estimates`),
    is trained jointly with the network, with its own learning rate `lr_mult` times the network's (10,
    as their `train.py`) and no weight decay. With p the network's probabilities and e the estimates
    of the batch's images (rows picked by the dataset indices the trainer passes):

        L = 0.5 * [ BCE(p | observed positives) + BCE(p ; e detached) ]
          + 0.5 * [ BCE(e | observed positives) + BCE(e ; p detached) ]
          + 0.5 * [ (k_hat(p) - k)^2 + (k_hat(e) - k)^2 ] / C

    where BCE(x | positives) is -log x on observed positives only, BCE(x ; t) is the soft-target BCE
    over all entries, k_hat is the batch mean of the row sums and k = `expected_positives` (the EPR
    value of the dataset kind). Summed over classes, averaged over images (Cole et al. average over
    N * C entries and divide the regulariser by C^2: the same balance). Observed negatives only set
    their estimates' starting value, as in the reference (which has none to train on). The estimates
    are a parameter of this module, so they are saved and resumed with the loss's state dict.
    `train_labels` (the observed training matrix) sizes and initialises them; without it (option
    checking) the matrix is empty. Under DDP k_hat spans the global batch and each rank's estimate
    gradients are combined as DDP combines the network's, so a run does not depend on the process count.
    """

    needs_indices = True

    def __init__(
        self,
        num_classes: int,
        *,
        expected_positives: float | None = None,
        lr_mult: float = 10.0,
        dataset: str | None = None,
        train_labels: np.ndarray | None = None,
    ) -> None:
        super().__init__(num_classes)
        if expected_positives is None:
            expected_positives = dataset_default(EPR_DATASET_DEFAULTS, dataset)
        self.expected_positives = positive_float("expected_positives", expected_positives)
        self.lr_mult = positive_float("lr_mult", lr_mult)
        labels = np.zeros((0, num_classes), np.int8) if train_labels is None else np.asarray(train_labels)
        if labels.ndim != 2 or labels.shape[1] != num_classes:
            raise PumlcError(f"role: training labels of shape {labels.shape} do not have {num_classes} columns")
        self.estimates = nn.Parameter(initial_estimates(torch.from_numpy(labels.astype(np.int8))))
        self.estimates.register_hook(_average_over_ranks)

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [self.estimates], "lr": lr * self.lr_mult, "weight_decay": 0.0}]

    def compute(self, logits: torch.Tensor, observed: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        est_logits = self.estimates[indices]
        positive = observed == 1

        def observed_term(x: torch.Tensor) -> torch.Tensor:
            return -torch.where(positive, F.logsigmoid(x), 0.0)

        def soft_term(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(x, target, reduction="none")

        preds, est = torch.sigmoid(logits), torch.sigmoid(est_logits)
        classifier = observed_term(logits) + soft_term(logits, est.detach())
        estimator = observed_term(est_logits) + soft_term(est_logits, preds.detach())
        k, c = self.expected_positives, self.num_classes
        penalty = _count_penalty(preds, k, c) + _count_penalty(est, k, c)
        return 0.5 * (_per_image(classifier + estimator) + penalty)


class LargeLossRejection(MultiLabelLoss):
    """`ll-r`: Kim et al. (CVPR 2022) large-loss rejection on top of assume-negative BCE.

    Unknowns are negatives, but in each batch the k = ceil(N * C * rate) largest losses among the unknown
    entries are dropped (set to zero), with rate = min(epoch * delta_rel / 100, 1): the quota is a
    fraction of ALL N * C entries of the batch, as LargeLossMatters computes it, so epoch 0 rejects
    nothing and the rate grows by `delta_rel` percent per epoch (default: the authors' best value for the
    dataset kind, LLR_DATASET_DEFAULTS: 0.2 for VOC, 0.4 for COCO and for CSV data).
    Call `set_epoch` at the start of every epoch. Losses tied with the cut-off are all rejected, as in
    the reference. Observed positives and negatives are never rejected (when the quota exceeds the
    unknown entries, all unknowns go; the reference would then zero observed entries too). The
    selection is per local batch under DDP.
    """

    def __init__(self, num_classes: int, *, delta_rel: float | None = None, dataset: str | None = None) -> None:
        super().__init__(num_classes)
        if delta_rel is None:
            delta_rel = dataset_default(LLR_DATASET_DEFAULTS, dataset)
        self.delta_rel = positive_float("delta_rel", delta_rel, allow_zero=True)

    def rejection_rate(self) -> float:
        return min(self.epoch * self.delta_rel / 100.0, 1.0)

    def rejection_count(self, entries: int) -> int:
        """ceil(entries * rate), rounded first so that e.g. 1000 * 0.006 is 6, not 7."""
        return math.ceil(round(entries * self.rejection_rate(), 6))

    def compute(self, logits: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, (observed == 1).float(), reduction="none")
        k = min(self.rejection_count(bce.numel()), bce.numel())
        if k > 0:
            with torch.no_grad():
                unknown = observed == 0
                candidates = torch.where(unknown, bce, -torch.inf).flatten()
                cutoff = torch.topk(candidates, k).values[-1]
                reject = unknown & (bce >= cutoff)
            bce = torch.where(reject, 0.0, bce)
        return _per_image(bce)
