"""Label audit from model scores: which entries are probably missing or wrong positives, and how many per class.

Why rank-based estimates: PU scores under the variational loss are not probabilities, and a `bce-an` model's are
probabilities of being *labelled*, not of being positive. Everything here uses only how a class's scores order its
entries, so it means the same for any model:
- Observed positives are taken as a sample of the class's positives (selected completely at random, the usual PU
  assumption), so their scores show how positives score.
- The candidates (entries observed unknown or negative) are a mixture: a share π of hidden positives, the rest
  negatives. For any threshold t, the candidates above t hold at least π·(positives above t) — so π is at most the
  ratio of the two upper-tail shares, with equality where negatives no longer reach. π̂ is the smallest ratio over
  thresholds that keep a fair share (`MIN_TAIL`) of the positives above them (the mixture-proportion estimator of
  Scott/Blanchard; Elkan–Noto's idea of learning the labelling rate from the labelled positives).
- An entry's calibrated score is its estimated probability of being a hidden positive: P(observed positive | score)
  is fitted per class by isotonic regression, and Elkan–Noto's correction with the label frequency that π̂ implies
  turns it into the posterior of an unlabelled entry. It keeps the model's order within a class, compares across
  classes, and accepting every suggestion with score ≥ S gives an estimated precision of at least S.
- Wrong positives mirror this: observed positives scoring like the candidates (low), with the candidates standing
  in for the negatives.

Why missing positives are *ranked* by another quantity than that score: across classes, the calibrated score is
only as good as each class's π̂ and isotonic staircase, and with a few dozen observed positives per class both are
noisy (the low steps rest on a handful of entries and tie whole score ranges), which lost to the model's raw order
deep in the list (bench/audit.py). Under a labelling rate common to the classes — what a fixed share of hidden
positives means — Elkan & Noto's posterior of an unlabelled entry is a monotone function of P(labelled | score), the
same for every class, so ranking by P(labelled | score) needs no π̂. That is estimated per class by Platt's
two-parameter logistic fit on the logit of the score (`labelled_log_odds`): it keeps the model's strict order within
a class, moves a class as a whole only as far as its labels support (a PU model's classes score on different
scales), and has no staircase. Where classes' labelling rates truly differ, the ranking ignores that (the score
does not). The calibrated score stays what `--min-score` and the tables report, so listed scores need not fall
monotonically down the ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_TAIL = 0.2  # thresholds keep at least this share of the reference scores above them (noise of the ratio)
SE_WEIGHT = 0.5
KINDS = ("missing", "wrong")


def mixture_share(reference: np.ndarray, mixture: np.ndarray, min_tail: float = MIN_TAIL) -> float:
    """Estimated share of `mixture` drawn from the distribution of `reference` (high scores = reference-like).

    NaN when either side is empty. Consistent when some threshold keeps ≥ `min_tail` of the reference above it and
    (almost) none of the other component.
    """
    ref = np.sort(np.asarray(reference, dtype=float))[::-1]
    mix = np.sort(np.asarray(mixture, dtype=float))
    if ref.size == 0 or mix.size == 0:
        return float("nan")
    first = max(1, int(np.ceil(min_tail * ref.size)))
    counts = np.arange(first, ref.size + 1)
    thresholds = ref[counts - 1]
    tail_ref = counts / ref.size
    # One pseudo-entry of the mixture that scores like the reference keeps an empty tail from declaring the share
    # zero (the estimate is then at least 1/(n+1)), and half a binomial standard error on each tail offsets the
    # downward bias of taking a minimum of noisy ratios.
    tail_mix = (mix.size - np.searchsorted(mix, thresholds, side="left") + tail_ref) / (mix.size + 1)
    num = tail_mix + SE_WEIGHT * np.sqrt(tail_mix * (1 - tail_mix) / mix.size)
    den = tail_ref - SE_WEIGHT * np.sqrt(tail_ref * (1 - tail_ref) / ref.size)
    return float(min(1.0, (num / den).min()))


def isotonic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares non-decreasing fit of y on x (pool adjacent violators), evaluated at every x."""
    uniq, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=y, minlength=uniq.size)
    counts = np.bincount(inverse, minlength=uniq.size).astype(float)
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for total, count in zip(sums.tolist(), counts.tolist(), strict=True):
        mean, weight, size = total / count, count, 1
        while means and means[-1] > mean:
            m, w, n = means.pop(), weights.pop(), sizes.pop()
            mean, weight, size = (m * w + mean * weight) / (w + weight), w + weight, n + size
        means.append(mean)
        weights.append(weight)
        sizes.append(size)
    return np.repeat(means, sizes)[inverse]


def labelled_log_odds(scores: np.ndarray, labelled: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Platt's fit of one class: log-odds of being *observed* positive as a + b·logit(score), for every entry.

    Two parameters per class are well determined by a few dozen positives, where an isotonic fit is a staircase
    whose low steps rest on a handful of entries. Platt's smoothed targets (n₊+1)/(n₊+2) and 1/(n₋+2) keep the
    fit finite when the class is separable; a slope ≤ 0 (the model orders the class backwards) is set to 0, so
    the fit never reverses the model's order within a class.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labelled, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return np.full(s.shape, np.nan)
    p = np.clip(s, 1e-6, 1 - 1e-6)
    x = np.stack([np.ones_like(p), np.log(p / (1 - p))], axis=1)
    target = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    w = np.array([np.log(target.mean() / (1 - target.mean())), 0.0])
    for _ in range(iterations):  # Newton's method on the convex cross-entropy
        fit = 1 / (1 + np.exp(-(x @ w)))
        hessian = (x * (fit * (1 - fit))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, x.T @ (target - fit))
        w = w + step
        if np.abs(step).max() < 1e-10:
            break
    if w[1] <= 0:
        w = np.array([np.log(target.mean() / (1 - target.mean())), 0.0])
    return x @ w


def local_posterior(reference: np.ndarray, mixture: np.ndarray, share: float) -> np.ndarray:
    """For each mixture score: the estimated probability that it comes from the reference distribution.

    g(s) = P(reference | s) is fitted isotonically over both samples; with the label frequency
    c = n_ref / (n_ref + share·n_mix) that `share` implies, Elkan & Noto's weight g(1−c) / (c(1−g)) is the
    posterior of a mixture entry (clipped to 1). It is non-decreasing in s, so a class keeps the model's order.
    """
    ref = np.asarray(reference, dtype=float)
    mix = np.asarray(mixture, dtype=float)
    if mix.size == 0 or ref.size == 0 or not np.isfinite(share):
        return np.full(mix.shape, np.nan)
    g = isotonic(np.concatenate([ref, mix]), np.concatenate([np.ones(ref.size), np.zeros(mix.size)]))[ref.size :]
    c = ref.size / (ref.size + share * mix.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = np.where(g < 1, g / (1 - g), np.inf)
    return np.minimum(1.0, odds * (1 - c) / c)


@dataclass
class ClassEstimate:
    """Per-class label-noise statistics estimated from scores alone."""

    observed_positives: int
    candidates: int
    missing_share: float  # π̂: share of candidates that are hidden positives
    wrong_share: float  # ρ̂: share of observed positives that are wrong

    @property
    def est_missing(self) -> float:
        return self.missing_share * self.candidates

    @property
    def est_true_positives(self) -> float:
        return self.observed_positives * (1 - _zero_nan(self.wrong_share)) + _zero_nan(self.est_missing)

    @property
    def est_missing_rate(self) -> float:
        """Hidden positives / estimated true positives (the `missed+` share of `pumlc stats`)."""
        total = self.est_true_positives
        return _zero_nan(self.est_missing) / total if total > 0 and np.isfinite(self.missing_share) else float("nan")


@dataclass
class Audit:
    """Scores, calibrated suspicion per entry and per-class estimates for one labelled matrix."""

    probs: np.ndarray  # [N, C] model outputs
    observed: np.ndarray  # [N, C] int8 observed labels
    suspicion: np.ndarray  # [N, C] calibrated score: missing-positive for non-positives, wrong for positives
    classes: list[ClassEstimate]
    labelled_odds: np.ndarray  # [N, C] Platt log-odds of being observed positive: what missing positives rank by

    def ranking(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of the suspected entries of `kind`, most suspect first (ties: the model's score).

        Missing positives rank by `labelled_odds`, wrong positives by `suspicion` (see the module docstring).
        """
        mask = self.observed == 1 if kind == "wrong" else self.observed != 1
        rows, cols = np.nonzero(mask)
        key = self.suspicion if kind == "wrong" else self.labelled_odds
        sus = np.nan_to_num(key[rows, cols], nan=-np.inf)
        prob = self.probs[rows, cols]
        tie = -prob if kind == "wrong" else prob
        order = np.lexsort((cols, rows, -tie, -sus))
        return rows[order], cols[order]


def audit_scores(probs: np.ndarray, observed: np.ndarray, min_tail: float = MIN_TAIL) -> Audit:
    """Estimate each class's hidden/wrong positive shares and calibrate every entry's suspicion."""
    probs = np.asarray(probs, dtype=float)
    observed = np.asarray(observed, dtype=np.int8)
    if probs.shape != observed.shape:
        raise ValueError(f"scores {probs.shape} and labels {observed.shape} differ in shape")
    suspicion = np.full(probs.shape, np.nan)
    odds = np.full(probs.shape, np.nan)
    estimates = []
    for j in range(probs.shape[1]):
        pos = observed[:, j] == 1
        s_pos, s_cand = probs[pos, j], probs[~pos, j]
        missing = mixture_share(s_pos, s_cand, min_tail)
        wrong = mixture_share(-s_cand, -s_pos, min_tail)
        suspicion[~pos, j] = local_posterior(s_pos, s_cand, missing)
        suspicion[pos, j] = local_posterior(-s_cand, -s_pos, wrong)
        odds[:, j] = labelled_log_odds(probs[:, j], pos)
        estimates.append(ClassEstimate(int(pos.sum()), int((~pos).sum()), missing, wrong))
    return Audit(probs, observed, suspicion, estimates, odds)


# ------------------------------------------------------------------------------------ against a known truth


def ranking_quality(hits: np.ndarray, ks: list[int], total: int | None = None) -> dict:
    """precision@k, recall@k and the non-interpolated AP of a ranking given as hit flags, best first.

    `total` is the number of relevant entries (default: the hits in the ranking). A k beyond the ranking's length
    counts the missing places as misses, so precision@k is always hits / k.
    """
    hits = np.asarray(hits, dtype=bool)
    total = int(hits.sum()) if total is None else int(total)
    cum = np.cumsum(hits)
    out: dict = {"relevant": total, "ranked": int(hits.size), "at": {}}
    for k in ks:
        found = int(cum[min(k, hits.size) - 1]) if hits.size and k > 0 else 0
        out["at"][str(k)] = {
            "k": int(k),
            "precision": found / k if k else float("nan"),
            "recall": found / total if total else float("nan"),
        }
    ranks = np.flatnonzero(hits) + 1
    out["ap"] = float((cum[ranks - 1] / ranks).sum() / total) if total else float("nan")
    return out


def default_ks(relevant: int) -> list[int]:
    """k ∈ {100, 1000, 10% of the relevant entries} (deduplicated, at least 1)."""
    return sorted({100, 1000, max(1, round(0.1 * relevant))})


def truth_report(audit: Audit, truth: np.ndarray, class_names: list[str]) -> dict | None:
    """How good the audit is against a truth that differs from the observed labels (None when they agree)."""
    truth = np.asarray(truth, dtype=np.int8)
    observed = audit.observed
    known = truth != 0
    hidden = (truth == 1) & (observed != 1)
    wrong = (truth == -1) & (observed == 1)
    if not hidden.any() and not wrong.any():
        return None
    report: dict = {}
    for kind, target in (("missing", hidden), ("wrong", wrong)):
        if not target.any():
            continue
        rows, cols = audit.ranking(kind)
        keep = known[rows, cols]
        flags = target[rows[keep], cols[keep]]
        report[kind] = ranking_quality(flags, default_ks(int(target.sum())), int(target.sum()))
    per_class = []
    errors = []
    for j, est in enumerate(audit.classes):
        n_true = int((truth[:, j] == 1).sum())
        true_rate = float(hidden[:, j].sum() / n_true) if n_true else float("nan")
        row = {
            "class": class_names[j],
            "true_positives": n_true,
            "true_missing_rate": true_rate,
            "est_missing_rate": est.est_missing_rate,
        }
        if np.isfinite(true_rate) and np.isfinite(est.est_missing_rate):
            errors.append(abs(true_rate - est.est_missing_rate))
        per_class.append(row)
    report["missing_rate_mae"] = float(np.mean(errors)) if errors else float("nan")
    report["per_class"] = per_class
    return report


def _zero_nan(value: float) -> float:
    return 0.0 if not np.isfinite(value) else float(value)
