"""Label audit from model scores: which entries are probably missing or wrong positives, and how many per class.

A suggestion's score is an estimate of the probability that it is right, under the usual PU assumption that the
observed positives of a class are a random sample of its positives (selected completely at random, at a rate
c = P(observed positive | positive), the *label frequency*):
- g(s) = P(observed positive | score s) is fitted per class, and P(positive | s) = g(s)/c, so an entry not observed
  positive is a hidden positive with probability (1 − c)·f / (1 − c·f), f = P(positive | s) (Elkan & Noto).
- f is the smaller of two fits of the class's labels on its scores, each of which alone was overconfident where the
  class has few entries: a logistic fit of g = c·σ(a + b·logit s) (Platt's, with the asymptote c, so f ≤ 1),
  moderated by its parameter uncertainty (MacKay's approximation: a steep slope resting on a few dozen positives
  does not reach 1), and an isotonic fit whose steps are smoothed towards the class's rate, which sees where the
  model's highest scores are *not* labelled (extrapolating a logistic cannot).
- c is not identifiable from scores alone unless some share of a class's positives scores above all its negatives.
  For each class the mixture-proportion estimator (Scott/Blanchard: the smallest ratio of upper-tail shares)
  bounds c from below; a weak model makes that bound loose (it then takes negatives for hidden positives). The
  label frequency is therefore taken as common to the classes — what a uniform annotation or corruption gives — and
  set by the tightest bound among the classes with enough positives; each class keeps its own bound where that is
  tighter, shrunk towards the common value by its number of positives. `--label-frequency` sets c when it is known
  (e.g. from a checked sample).
- A score is g/(1 − g)·(1 − c)/c, decreasing in c, so a c that is too low makes every score too high: with c
  estimated, the scores are upper bounds (up to the bound's sampling noise), and the audit and its CSV/JSON say
  so (`relabel` warns). Nothing in the scores can tell a loose bound from a tight one: negatives that the model
  confuses with the class (another class of the same colour, say) score like its positives, so above any
  threshold they look exactly like hidden positives — on a tuning setting a class's tail ratio stayed flat over
  thresholds at 0.14 while the truth was 0.09. Estimators that read the same scores share the limit: a likelihood
  fit of g = c·σ(a + b·logit s) with c free, pooled over classes, came out at 0.24–0.54 where the truth was
  0.41–0.61 (no better than the bound), and Elkan & Noto's e1 (the labelled entries' mean score) assumes a model
  of the labelled entries that separates the positives (the `bce-an` models gave 0.13–0.32). What does work is a
  model that separates some of a class's positives from its negatives (the `large` setting of `bench/audit.py`),
  or a c from a checked sample (`--label-frequency`).
- Scores are clipped to (n+1)/(n+2) for a class with n observed positives: nothing is certain on a few dozen labels.
- Wrong positives mirror this: observed positives that score like the candidates, the candidates standing in for
  the negatives. In PU data the candidates also hold hidden positives, so these scores are rough.

Everything rests on the scores ranking held-out images: scores of images the model trained on (no `--folds`)
make hidden positives look like negatives and the labelled ones look certain, so the estimates there are low.
Suggestions rank by score (ties: the model's score); the per-class estimates are sums of the scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_TAIL = 0.2  # thresholds keep at least this share of the reference scores above them (noise of the ratio)
SE_WEIGHT = 1.0  # binomial standard errors added to each tail share (see mixture_share)
MIN_SUPPORT = 20  # classes with fewer observed positives do not set the common label frequency
SHRINK = 50.0  # positives at which a class's own label-frequency bound weighs as much as the common one
BLOCK_PRIOR = 2.0  # pseudo-entries at the class's labelled rate added to each isotonic step
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
    # zero (the estimate is then at least 1/(n+1)), and one binomial standard error on each tail offsets the
    # downward bias of taking a minimum of noisy ratios (then the largest bound over classes). With half of one, the
    # strong models of the tuning settings (bench/audit.py --scale large) overshot c by 0.04-0.10 (scores too low).
    tail_mix = (mix.size - np.searchsorted(mix, thresholds, side="left") + tail_ref) / (mix.size + 1)
    num = tail_mix + SE_WEIGHT * np.sqrt(tail_mix * (1 - tail_mix) / mix.size)
    den = tail_ref - SE_WEIGHT * np.sqrt(tail_ref * (1 - tail_ref) / ref.size)
    return float(min(1.0, (num / den).min()))


def frequency_bound(n_labelled: int, n_other: int, share: float) -> float:
    """Label frequency c implied by a share of hidden positives among the other entries (a lower bound on c)."""
    if n_labelled == 0 or not np.isfinite(share):
        return float("nan")
    return n_labelled / (n_labelled + share * n_other)


def label_frequencies(bounds: np.ndarray, sizes: np.ndarray, known: float | None = None) -> np.ndarray:
    """Per-class label frequency: a common value (`known`, or the tightest bound among well-supported classes),
    raised towards a class's own bound where that is tighter, by (n·max(bound, common) + κ·common) / (n + κ)."""
    bounds = np.asarray(bounds, dtype=float)
    sizes = np.asarray(sizes, dtype=float)
    ok = np.isfinite(bounds) & (sizes > 0)
    if known is not None:
        return np.where(sizes > 0, known, np.nan)
    if not ok.any():
        return np.full(bounds.shape, np.nan)
    supported = ok & (sizes >= MIN_SUPPORT)
    common = float(bounds[supported if supported.any() else ok].max())
    own = np.where(ok, np.maximum(bounds, common), common)
    return np.where(sizes > 0, (sizes * own + SHRINK * common) / (sizes + SHRINK), np.nan)


def positive_log_odds(scores: np.ndarray, labelled: np.ndarray, frequency: float, iterations: int = 100) -> np.ndarray:
    """log-odds of f = P(positive | score) for every entry of one class, from P(labelled | s) = c·σ(a + b·logit s).

    Fitted by Fisher scoring with step halving on Platt's smoothed targets (finite on a separable class), then
    moderated by the parameters' uncertainty (Laplace approximation, MacKay's σ(μ / √(1 + πv/8)), kept non-decreasing
    in the score). A slope ≤ 0 (the model orders the class backwards) gives the constant fit: the model's order is
    never reversed.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labelled, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    c = float(frequency)
    if n_pos == 0 or n_neg == 0 or not 0 < c <= 1:
        return np.full(s.shape, np.nan)
    p = np.clip(s, 1e-6, 1 - 1e-6)
    x = np.stack([np.ones_like(p), np.log(p / (1 - p))], axis=1)
    target = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    base = min(target.mean() / c, 0.99)
    constant = np.array([np.log(base / (1 - base)), 0.0])

    def parts(w: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        f = 1 / (1 + np.exp(-np.clip(x @ w, -50, 50)))
        q = np.clip(c * f, 1e-12, 1 - 1e-12)
        loglik = float((target * np.log(q) + (1 - target) * np.log(1 - q)).sum())
        slope = c * f * (1 - f)  # dq/dz
        return loglik, (target - q) / (q * (1 - q)) * slope, slope**2 / (q * (1 - q))

    w = constant
    loglik, grad, weight = parts(w)
    for _ in range(iterations):
        info = (x * weight[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(info, x.T @ grad)
        scale = 1.0
        while True:
            new = w + scale * step
            new_loglik, new_grad, new_weight = parts(new)
            if new_loglik >= loglik - 1e-12 or scale < 1e-4:
                break
            scale /= 2
        w, done = new, abs(new_loglik - loglik) < 1e-10
        loglik, grad, weight = new_loglik, new_grad, new_weight
        if done:
            break
    if w[1] <= 0:
        w = constant
        loglik, grad, weight = parts(w)
    cov = np.linalg.inv((x * weight[:, None]).T @ x + 1e-6 * np.eye(2))
    variance = np.einsum("ij,jk,ik->i", x, cov, x)
    moderated = (x @ w) / np.sqrt(1 + np.pi * variance / 8)
    # far out the variance grows faster than the mean: keep the result non-decreasing in the score
    order = np.argsort(s, kind="stable")
    moderated[order] = np.maximum.accumulate(moderated[order])
    return moderated


def isotonic(x: np.ndarray, y: np.ndarray, prior: float) -> np.ndarray:
    """Non-decreasing fit of y on x (pool adjacent violators), each step's mean smoothed towards `prior` by
    `BLOCK_PRIOR` pseudo-entries (then kept non-decreasing), evaluated at every x: a step resting on a few entries
    stays near the prior or the step below it."""
    uniq, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=y, minlength=uniq.size)
    counts = np.bincount(inverse, minlength=uniq.size).astype(float)
    steps: list[list[float]] = []  # [sum, count, distinct values]
    for total, count in zip(sums.tolist(), counts.tolist(), strict=True):
        step = [total, count, 1]
        while steps and steps[-1][0] / steps[-1][1] > step[0] / step[1]:
            last = steps.pop()
            step = [last[0] + step[0], last[1] + step[1], last[2] + step[2]]
        steps.append(step)
    # smoothing pulls a short step further than a long one, so it can undo the order: the running maximum restores it
    means = np.maximum.accumulate([(t + BLOCK_PRIOR * prior) / (n + BLOCK_PRIOR) for t, n, _ in steps])
    return np.repeat(means, [int(k) for _, _, k in steps])[inverse]


def hidden_posterior(scores: np.ndarray, labelled: np.ndarray, frequency: float) -> np.ndarray:
    """P(positive | not labelled, score) for every entry of one class (labelled entries get a value too).

    f = min(moderated logistic, smoothed isotonic / c), then Elkan & Noto's (1 − c)·f / (1 − c·f), clipped to
    (n+1)/(n+2) for n labelled entries.
    """
    y = np.asarray(labelled, dtype=bool)
    n = int(y.sum())
    if n == 0 or n == y.size or not np.isfinite(frequency):
        return np.full(y.shape, np.nan)
    c = float(frequency)
    logistic = 1 / (1 + np.exp(-np.clip(positive_log_odds(scores, y, c), -50, 50)))
    stepwise = np.minimum(1.0, isotonic(np.asarray(scores, dtype=float), y.astype(float), n / y.size) / c)
    f = np.minimum(logistic, stepwise)
    return np.minimum((1 - c) * f / (1 - c * f + 1e-12), (n + 1) / (n + 2))


@dataclass
class ClassEstimate:
    """Per-class label-noise statistics estimated from scores alone."""

    observed_positives: int
    candidates: int  # entries not observed positive
    label_frequency: float  # c: share of the class's positives that are observed positive
    est_missing: float  # the candidates' scores summed: expected missing positives
    est_wrong: float  # the observed positives' wrong-scores summed: expected wrong positives

    @property
    def est_true_positives(self) -> float:
        return self.observed_positives - _zero_nan(self.est_wrong) + _zero_nan(self.est_missing)

    @property
    def est_missing_rate(self) -> float:
        """Missing positives / estimated true positives."""
        total = self.est_true_positives
        return _zero_nan(self.est_missing) / total if total > 0 and np.isfinite(self.est_missing) else float("nan")

    @property
    def est_wrong_rate(self) -> float:
        """Wrong positives / observed positives."""
        n = self.observed_positives
        return self.est_wrong / n if n and np.isfinite(self.est_wrong) else float("nan")


@dataclass
class Audit:
    """Scores, the estimated probability that each entry's suggestion is right, and per-class estimates."""

    probs: np.ndarray  # [N, C] model outputs
    observed: np.ndarray  # [N, C] int8 observed labels
    suspicion: np.ndarray  # [N, C] P(missing positive) for non-positives, P(wrong positive) for positives
    classes: list[ClassEstimate]
    label_frequency: str = "given"  # how c was set: "given" or "estimated" (a lower bound)

    @property
    def upper_bounds(self) -> bool:
        """Whether the missing-positive scores are upper bounds: c estimated, i.e. bounded from below."""
        return self.label_frequency == "estimated"

    def ranking(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of the suspected entries of `kind`, most probable first (ties: the model's score)."""
        mask = self.observed == 1 if kind == "wrong" else self.observed != 1
        rows, cols = np.nonzero(mask)
        sus = np.nan_to_num(self.suspicion[rows, cols], nan=-np.inf)
        prob = self.probs[rows, cols]
        tie = -prob if kind == "wrong" else prob
        order = np.lexsort((cols, rows, -tie, -sus))
        return rows[order], cols[order]

    def ranked(self, kind: str) -> tuple[np.ndarray, ...]:
        """(rows, cols, suspicion, probs, observed) of the suspected entries of `kind`, in rank order (what the
        report lists; `pumlc_cli.audit.entries.EntryAudit` answers the same for entry data)."""
        rows, cols = self.ranking(kind)
        return rows, cols, self.suspicion[rows, cols], self.probs[rows, cols], self.observed[rows, cols]


def audit_scores(
    probs: np.ndarray, observed: np.ndarray, label_frequency: float | None = None, min_tail: float = MIN_TAIL
) -> Audit:
    """Score every entry with the probability that its suggestion is right; estimate the rates per class.

    `label_frequency`: the share of positives observed positive, when known; estimated from the scores otherwise.
    """
    probs = np.asarray(probs, dtype=float)
    observed = np.asarray(observed, dtype=np.int8)
    if probs.shape != observed.shape:
        raise ValueError(f"scores {probs.shape} and labels {observed.shape} differ in shape")
    positive = observed == 1
    n_pos, n_cand = positive.sum(axis=0), (~positive).sum(axis=0)
    bounds, wrong_bounds = [], []
    for j in range(probs.shape[1]):
        s_pos, s_cand = probs[positive[:, j], j], probs[~positive[:, j], j]
        bounds.append(frequency_bound(int(n_pos[j]), int(n_cand[j]), mixture_share(s_pos, s_cand, min_tail)))
        wrong = mixture_share(-s_cand, -s_pos, min_tail)
        wrong_bounds.append(frequency_bound(int(n_cand[j]), int(n_pos[j]), wrong) if n_pos[j] else float("nan"))
    freq = label_frequencies(np.array(bounds), n_pos, label_frequency)
    # the candidates' share among the class's negatives, with the observed positives as the hidden ones
    freq_wrong = label_frequencies(np.array(wrong_bounds), np.where(n_pos > 0, n_cand, 0))
    suspicion = np.full(probs.shape, np.nan)
    estimates = []
    for j in range(probs.shape[1]):
        pos = positive[:, j]
        suspicion[~pos, j] = hidden_posterior(probs[:, j], pos, freq[j])[~pos]
        suspicion[pos, j] = hidden_posterior(-probs[:, j], ~pos, freq_wrong[j])[pos]
        est_missing = float(suspicion[~pos, j].sum()) if n_pos[j] else float("nan")
        est_wrong = float(suspicion[pos, j].sum()) if n_pos[j] and n_cand[j] else float("nan")
        estimates.append(ClassEstimate(int(n_pos[j]), int(n_cand[j]), float(freq[j]), est_missing, est_wrong))
    return Audit(probs, observed, suspicion, estimates, "given" if label_frequency is not None else "estimated")


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


def reliability(scores: np.ndarray, right: np.ndarray, bins: int = 10) -> dict:
    """How far scores are from the observed frequency of being right: the expected calibration error over `bins`
    equal-width bins (|mean score − share right| weighted by the bin's entries), and the share right among the
    entries scored ≥ 0.8 and ≥ 0.9 (None where there are none)."""
    scores = np.asarray(scores, dtype=float)
    right = np.asarray(right, dtype=bool)
    keep = np.isfinite(scores)
    scores, right = scores[keep], right[keep]
    out: dict = {"entries": int(scores.size), "ece": None, "above": {}}
    if scores.size:
        which = np.minimum((scores * bins).astype(int), bins - 1)
        gap = sum(
            abs(scores[which == b].mean() - right[which == b].mean()) * (which == b).sum()
            for b in range(bins)
            if (which == b).any()
        )
        out["ece"] = float(gap / scores.size)
    for cut in (0.8, 0.9):
        sel = scores >= cut
        out["above"][f"{cut:g}"] = {
            "n": int(sel.sum()),
            "expected_precision": float(scores[sel].mean()) if sel.any() else None,
            "precision": float(right[sel].mean()) if sel.any() else None,
        }
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
        report[kind]["reliability"] = reliability(audit.suspicion[rows[keep], cols[keep]], flags)
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
