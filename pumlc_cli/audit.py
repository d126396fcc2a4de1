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
- An entry's calibrated score is the estimated precision of its class's candidates above the observed positive
  just below it: π̂·tail_pos/tail_cand at that threshold, clipped to 1 and made non-decreasing in the score.
  Accepting every suggestion of a class with score ≥ S therefore gives an estimated precision of about S or more,
  and scores compare across classes.
- Wrong positives mirror this: observed positives scoring like the candidates (low), with the candidates standing
  in for the negatives.
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


def tail_precision(reference: np.ndarray, mixture: np.ndarray, share: float) -> np.ndarray:
    """For each mixture score s: the estimated precision share·tail_ref(t)/tail_mix(t) of the mixture entries
    above t, the highest reference score ≤ s (everything below the lowest), clipped to 1, non-decreasing in s.

    Thresholds sit on reference scores so a tail never holds zero reference entries: a candidate scoring above
    every observed positive is judged by the tail of the top positive, not declared impossible.
    """
    mix = np.asarray(mixture, dtype=float)
    if mix.size == 0 or not np.isfinite(share):
        return np.full(mix.shape, np.nan)
    ref = np.sort(np.asarray(reference, dtype=float))
    mix_sorted = np.sort(mix)
    below = np.searchsorted(ref, mix, side="right") - 1  # index of the highest reference score ≤ s, or -1
    threshold = np.where(below >= 0, ref[np.maximum(below, 0)], -np.inf)
    tail_ref = (ref.size - np.searchsorted(ref, threshold, side="left")) / ref.size
    tail_mix = (mix.size - np.searchsorted(mix_sorted, threshold, side="left")) / mix.size
    raw = np.minimum(1.0, share * tail_ref / tail_mix)
    order = np.argsort(mix, kind="stable")
    lifted = np.empty_like(raw)
    lifted[order] = np.maximum.accumulate(raw[order])
    return lifted


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

    def ranking(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of the suspected entries of `kind`, most suspect first (ties: the model's score)."""
        mask = self.observed == 1 if kind == "wrong" else self.observed != 1
        rows, cols = np.nonzero(mask)
        sus = np.nan_to_num(self.suspicion[rows, cols], nan=-1.0)
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
    estimates = []
    for j in range(probs.shape[1]):
        pos = observed[:, j] == 1
        s_pos, s_cand = probs[pos, j], probs[~pos, j]
        missing = mixture_share(s_pos, s_cand, min_tail)
        wrong = mixture_share(-s_cand, -s_pos, min_tail)
        suspicion[~pos, j] = tail_precision(s_pos, s_cand, missing)
        suspicion[pos, j] = tail_precision(-s_cand, -s_pos, wrong)
        estimates.append(ClassEstimate(int(pos.sum()), int((~pos).sum()), missing, wrong))
    return Audit(probs, observed, suspicion, estimates)


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
