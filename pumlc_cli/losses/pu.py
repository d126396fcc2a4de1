"""The variational PU loss of PU-MLC and its mixup regulariser.

Per class c, with logits s_ic over a batch of N images and P_c the images observed positive for c:

    tau_c = clamp(alpha * std_i(s_ic), min_temperature, max_temperature)        (detached)
    Phi_ic = sigmoid(s_ic / tau_c)
    w_c = (mean_i Phi_ic) ** gamma                                                (detached)
    L = sum_c [ w_c * log mean_i Phi_ic  -  mean_{i in P_c} log Phi_ic ]

Only observed positives are used: the "unlabeled" set is the whole batch, so observed negatives and
unknowns are treated alike. A class with no positive in the batch contributes only its first term.

Normaliser: the sum over classes of per-class batch means, as in the official code (it sums
`u_loss - p_loss` over classes). Keeping the sum keeps the published learning rates and the 1:1 ratio
with the mixup term meaningful. std is the population std (divide by N), as in the official code.

Differences from the official implementation, all deliberate:
- tau has a lower clamp (`min_temperature`, default 1e-2); the official code divides by alpha * std
  directly, which is infinite for a constant logit column.
- log-sigmoid and log-sum-exp replace log(sigmoid(x) + 1e-10), so small probabilities keep exact
  gradients instead of being flattened by the epsilon.
- Under torch.distributed the batch statistics (std, mean Phi, positive counts and means) span all
  ranks, so the loss equals the loss of one process on the concatenated batch; the official code
  computes them per GPU, so its results change with the GPU count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pumlc_cli.errors import PumlcError
from pumlc_cli.losses.base import MultiLabelLoss, positive_float
from pumlc_cli.losses.dist import all_reduce_sum, reduce_max_, reduce_sum_

# From the paper's published training commands (README of the official code).
PU_DATASET_DEFAULTS: dict[str, dict[str, float]] = {
    "coco": {"alpha": 1.0, "gamma": 0.55},
    "voc": {"alpha": 2.0, "gamma": 0.85},
}


def pu_defaults(dataset: str) -> dict[str, float]:
    """The paper's alpha/gamma for a dataset name such as `coco2014` or `voc2007` (matched by prefix)."""
    key = dataset.lower()
    for prefix, values in PU_DATASET_DEFAULTS.items():
        if key.startswith(prefix):
            return dict(values)
    raise PumlcError(f"no published PU-MLC defaults for dataset {dataset!r}; known: {', '.join(PU_DATASET_DEFAULTS)}")


class PULoss(MultiLabelLoss):
    """Variational PU loss with adaptive temperature and re-balance weights (see the module docstring).

    Options: `alpha` (temperature scale, default 1.0 = COCO), `gamma` (re-balance exponent, default 0.55
    = COCO), `min_temperature` (1e-2: keeps 1/tau bounded for near-constant logits), `max_temperature`
    (1.0, the paper's cap).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        alpha: float = 1.0,
        gamma: float = 0.55,
        min_temperature: float = 1e-2,
        max_temperature: float = 1.0,
    ) -> None:
        super().__init__(num_classes)
        self.alpha = positive_float("alpha", alpha)
        self.gamma = positive_float("gamma", gamma, allow_zero=True)
        self.min_temperature = positive_float("min_temperature", min_temperature)
        self.max_temperature = positive_float("max_temperature", max_temperature)
        if self.min_temperature > self.max_temperature:
            raise PumlcError(
                f"loss option min_temperature ({min_temperature}) exceeds max_temperature ({max_temperature})"
            )

    def compute(self, logits: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        c = self.num_classes
        positive = observed == 1
        with torch.no_grad():
            # Moments in float64: var = E[s^2] - E[s]^2 from summed pieces is what can be all-reduced.
            s64 = logits.detach().double()
            stats = torch.cat([s64.sum(0), s64.square().sum(0), positive.sum(0).double(), s64.new_full((1,), len(s64))])
            reduce_sum_(stats)
            n_pos, n = stats[2 * c : 3 * c].float(), stats[3 * c]
            mean = stats[:c] / n
            std = (stats[c : 2 * c] / n - mean.square()).clamp_min(0).sqrt()
            tau = (self.alpha * std).clamp(self.min_temperature, self.max_temperature).float()
        log_phi = F.logsigmoid(logits / tau)
        with torch.no_grad():
            shift = reduce_max_(log_phi.amax(0))  # log-sum-exp shift, common to all ranks
        sums = all_reduce_sum(
            torch.cat([torch.exp(log_phi - shift).sum(0), torch.where(positive, log_phi, 0.0).sum(0)])
        )
        log_mean_phi = sums[:c].log() + shift - n.log().float()
        positive_mean = sums[c:] / n_pos.clamp_min(1.0)  # 0 for classes without positives
        weight = torch.exp(self.gamma * log_mean_phi.detach())
        return (weight * log_mean_phi - positive_mean).sum()


@dataclass(frozen=True)
class MixupPlan:
    """How a mixed batch was formed: mixed[j] = lam * x[first[j]] + (1 - lam) * x[second[j]]."""

    lam: float
    first: torch.Tensor
    second: torch.Tensor


Generator = torch.Generator | np.random.Generator | None


def _draw(half: int, beta: float, generator: Generator) -> tuple[float, torch.Tensor]:
    """lambda ~ Beta(beta, beta) and a permutation of the first half, on the CPU (no device sync)."""
    if isinstance(generator, np.random.Generator):
        return float(generator.beta(beta, beta)), torch.from_numpy(generator.permutation(half))
    # torch has no seeded Beta sampler, so a seed drawn from the torch generator (or torch's global
    # CPU generator when None, which torch.manual_seed controls) seeds numpy's.
    perm = torch.randperm(half, generator=generator)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(beta, beta)), perm


def draw_mixup(
    images: torch.Tensor, *, beta: float = 0.3, generator: Generator = None
) -> tuple[torch.Tensor, MixupPlan]:
    """Mix a shuffled first half of the batch with the second half using one lambda ~ Beta(beta, beta).

    As in the official code, the halves are images[:N//2] and images[ceil(N/2):] (the middle image of
    an odd batch is not mixed) and a single image is mixed with itself. Separate from the penalty so a
    trainer can run the mixed images in the same forward pass as the batch.
    """
    n = images.shape[0]
    half = n // 2
    lam, perm = _draw(max(half, 1), positive_float("mixup beta", beta), generator)
    first = perm
    second = torch.arange(n - half, n) if half else torch.zeros(1, dtype=torch.long)
    if images.is_cuda:
        first, second = first.pin_memory(), second.pin_memory()
    first = first.to(images.device, non_blocking=True)
    second = second.to(images.device, non_blocking=True)
    mixed = lam * images[first] + (1.0 - lam) * images[second]
    if images.ndim == 4 and images.is_contiguous(memory_format=torch.channels_last):
        mixed = mixed.contiguous(memory_format=torch.channels_last)  # indexing may drop the layout
    return mixed, MixupPlan(lam=lam, first=first, second=second)


def mixup_penalty(
    mixed_logits: torch.Tensor, logits: torch.Tensor, observed: torch.Tensor, plan: MixupPlan
) -> torch.Tensor:
    """Squared gap between the log-probabilities predicted on mixed images and the mixed soft targets.

    Soft target per entry: 1 for an observed positive, else the model's own probability on the original
    image; targets are mixed with the same lambda as the images and compared in log space,
    log(lam * t1 + (1 - lam) * t2) computed with logaddexp. Normaliser: sum over classes, mean over the
    mixed images, as in the official code. As there (vpu_loss.py's `mixup`), the soft targets are not
    detached: the penalty's gradient also flows into the logits of the original images.
    """
    with torch.autocast(device_type=mixed_logits.device.type, enabled=False):
        log_target = torch.where(observed == 1, 0.0, F.logsigmoid(logits.float()))
        log_lam = math.log(plan.lam) if plan.lam > 0 else -math.inf
        log_rest = math.log1p(-plan.lam) if plan.lam < 1 else -math.inf
        log_mixed = torch.logaddexp(log_target[plan.first] + log_lam, log_target[plan.second] + log_rest)
        gap = log_mixed - F.logsigmoid(mixed_logits.float())
        return gap.square().sum(1).mean()


def mixup_regulariser(
    model: nn.Module,
    images: torch.Tensor,
    logits: torch.Tensor,
    observed: torch.Tensor,
    *,
    weight: float = 1.0,
    beta: float = 0.3,
    generator: Generator = None,
) -> torch.Tensor:
    """`weight * mixup_penalty` with a second forward pass of `model` on the mixed images.

    The weight is applied here (default 1.0, the official code's implicit weight; beta 0.3 likewise);
    weight 0 skips the forward pass. The forward runs in the caller's autocast context. Under DDP the
    pairs are formed within each rank's batch and DDP's gradient averaging averages the ranks' means.
    """
    if weight == 0:
        return logits.new_zeros((), dtype=torch.float32)
    mixed, plan = draw_mixup(images, beta=beta, generator=generator)
    return weight * mixup_penalty(model(mixed), logits, observed, plan)
