"""Label audit on data whose unstated labels are unknown (Open Images): from scores at label entries, never N x C.

What is scored: every stated (verified or machine) label of the audited images, and each image's K highest-scoring
classes among its unknown ones (`--top-unknown`): memory E + N·K, not N x C (at 9M images x 9,605 classes the score
matrix alone would be 345 GB).

What a score means:
- missing (an unknown entry): P(positive | the model's score), fitted per class on the class's *stated* labels —
  the share of observed positives among the observed positives and negatives with that score — with the same pair of
  fits as `pumlc_cli.audit.scores.hidden_posterior` (the moderated logistic and the smoothed isotonic fit, the smaller
  wins, clipped to (n+1)/(n+2) for n observed positives), evaluated at the unknown entry's score. No label frequency
  is needed: among stated labels nothing is hidden. It is the probability that a verifier would confirm the label,
  assuming that which (image, class) pairs were verified does not depend on the label beyond the model's score.
  Open Images verified the candidates of another classifier, so its verified labels are richer in positives than
  the unknowns at the same score: read the scores as an upper bound. A class without both an observed positive and
  an observed negative cannot be calibrated and gets no suggestion.
- wrong (an observed positive): as in `audit_scores`, the observed positives mirrored against the class's observed
  negatives (its known reference of negatives: the negatives are taken as a random sample, and the positives as
  a mixture of true positives and wrong ones), over the class's stated entries only.
Per class, the estimated missing positives are the missing scores summed over the entries scored — the top K of
each image — so a lower bound on the class's missing positives where more than K unknown classes of an image are
positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pumlc_cli.audit.scores import (
    MIN_TAIL,
    ClassEstimate,
    default_ks,
    frequency_bound,
    hidden_posterior,
    isotonic,
    label_frequencies,
    mixture_share,
    positive_log_odds,
    ranking_quality,
    reliability,
)


@dataclass
class EntryAudit:
    """The scored entries as parallel arrays (stated ±1 labels, then the top-K unknown candidates), the estimated
    probability that each one's suggestion is right, and per-class estimates."""

    rows: np.ndarray  # int64 [M] image (position among the audited images)
    cols: np.ndarray  # int64 [M] class
    probs: np.ndarray  # [M] model scores
    observed: np.ndarray  # int8 [M]: 1 / -1 stated, 0 an unknown candidate
    suspicion: np.ndarray  # [M] P(missing positive) for candidates, P(wrong positive) for positives, NaN otherwise
    classes: list[ClassEstimate]

    def order(self, kind: str) -> np.ndarray:
        """Positions of the suspected entries of `kind`, most probable first (ties: the model's score), as
        `Audit.ranking` orders them."""
        at = np.flatnonzero(self.observed == 1 if kind == "wrong" else self.observed == 0)
        sus = np.nan_to_num(self.suspicion[at], nan=-np.inf)
        tie = -self.probs[at] if kind == "wrong" else self.probs[at]
        return at[np.lexsort((self.cols[at], self.rows[at], -tie, -sus))]

    def ranked(self, kind: str) -> tuple[np.ndarray, ...]:
        """(rows, cols, suspicion, probs, observed) of the suspected entries of `kind`, in rank order."""
        at = self.order(kind)
        return self.rows[at], self.cols[at], self.suspicion[at], self.probs[at], self.observed[at]


def stated_posterior(scores: np.ndarray, positive: np.ndarray, query: np.ndarray) -> np.ndarray:
    """P(positive | score) at the `query` scores, fitted on one class's stated labels (`positive`: observed +1, else
    observed −1): min(moderated logistic, smoothed isotonic), interpolated between the stated scores (both fits are
    non-decreasing in the score) and clipped to (n+1)/(n+2) for n positives. NaN without both kinds of label."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(positive, dtype=bool)
    n = int(y.sum())
    if n == 0 or n == y.size:
        return np.full(np.shape(query), np.nan)
    logistic = 1 / (1 + np.exp(-np.clip(positive_log_odds(s, y, 1.0), -50, 50)))
    f = np.minimum(logistic, isotonic(s, y.astype(float), n / y.size))
    xs, first = np.unique(s, return_index=True)
    return np.minimum(np.interp(np.asarray(query, dtype=float), xs, f[first]), (n + 1) / (n + 2))


def entry_audit(
    stated: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    top: tuple[np.ndarray, np.ndarray],
    n_classes: int,
    min_tail: float = MIN_TAIL,
) -> EntryAudit:
    """Score the stated labels `(rows, cols, observed, probs)` (observed ±1; others are ignored) and the unknown
    candidates `top` = (classes [n, K], scores [n, K]; a negative score marks no candidate) of n images."""
    rows, cols, observed, probs = (np.asarray(a) for a in stated)
    keep = observed != 0
    top_classes, top_scores = top
    n, k = np.shape(top_scores)
    valid = np.asarray(top_scores).ravel() >= 0
    rows = np.concatenate([rows[keep], np.repeat(np.arange(n, dtype=np.int64), k)[valid]]).astype(np.int64)
    cols = np.concatenate([cols[keep], np.asarray(top_classes).ravel()[valid]]).astype(np.int64)
    probs = np.concatenate([probs[keep], np.asarray(top_scores).ravel()[valid]]).astype(float)
    observed = np.concatenate([observed[keep], np.zeros(int(valid.sum()), np.int8)]).astype(np.int8)
    suspicion = np.full(len(probs), np.nan)

    order = np.argsort(cols, kind="stable")
    bounds = np.searchsorted(cols[order], np.arange(n_classes + 1))
    groups = [order[bounds[j] : bounds[j + 1]] for j in range(n_classes)]
    n_pos = np.bincount(cols[observed == 1], minlength=n_classes)
    n_neg = np.bincount(cols[observed == -1], minlength=n_classes)
    n_cand = np.bincount(cols[observed == 0], minlength=n_classes)
    wrong_bounds = []
    for j, at in enumerate(groups):
        s, o = probs[at], observed[at]
        share = mixture_share(-s[o == -1], -s[o == 1], min_tail)
        wrong_bounds.append(frequency_bound(int(n_neg[j]), int(n_pos[j]), share) if n_pos[j] else float("nan"))
    freq_wrong = label_frequencies(np.array(wrong_bounds), np.where(n_pos > 0, n_neg, 0))
    estimates = []
    for j, at in enumerate(groups):
        o = observed[at]
        stated_at, cand_at, pos_at = at[o != 0], at[o == 0], at[o == 1]
        suspicion[cand_at] = stated_posterior(probs[stated_at], observed[stated_at] == 1, probs[cand_at])
        negative = observed[stated_at] == -1
        suspicion[pos_at] = hidden_posterior(-probs[stated_at], negative, freq_wrong[j])[~negative]
        calibrated = n_pos[j] > 0 and n_neg[j] > 0
        est_missing = float(suspicion[cand_at].sum()) if calibrated else float("nan")
        est_wrong = float(suspicion[pos_at].sum()) if calibrated else float("nan")
        estimates.append(ClassEstimate(int(n_pos[j]), int(n_cand[j]), float("nan"), est_missing, est_wrong))
    return EntryAudit(rows, cols, probs, observed, suspicion, estimates)


def entry_truth_report(
    audit: EntryAudit, truth_at: np.ndarray, stored: tuple[np.ndarray, np.ndarray, np.ndarray], class_names: list[str]
) -> dict | None:
    """`truth_report` on entries: `truth_at` is the truth of every scored entry (0 where unknown), `stored` the
    (classes, truth, observed) of every stored entry of the audited images (every known truth is stored). Rankings
    are judged on the entries whose truth is known; recall counts every hidden (or wrong) positive, scored or not."""
    cls, truth, observed = (np.asarray(a) for a in stored)
    targets = {"missing": (truth == 1) & (observed != 1), "wrong": (truth == -1) & (observed == 1)}
    if not any(t.any() for t in targets.values()):
        return None
    report: dict = {}
    for kind, target in targets.items():
        total = int(target.sum())
        if not total:
            continue
        at = audit.order(kind)
        known = truth_at[at] != 0
        flags = truth_at[at][known] == (1 if kind == "missing" else -1)
        report[kind] = ranking_quality(flags, default_ks(total), total)
        report[kind]["reliability"] = reliability(audit.suspicion[at][known], flags)
    c = len(class_names)
    n_true = np.bincount(cls[truth == 1], minlength=c)
    hidden = np.bincount(cls[targets["missing"]], minlength=c)
    per_class, errors = [], []
    for j, est in enumerate(audit.classes):
        true_rate = float(hidden[j] / n_true[j]) if n_true[j] else float("nan")
        per_class.append(
            {
                "class": class_names[j],
                "true_positives": int(n_true[j]),
                "true_missing_rate": true_rate,
                "est_missing_rate": est.est_missing_rate,
            }
        )
        if np.isfinite(true_rate) and np.isfinite(est.est_missing_rate):
            errors.append(abs(true_rate - est.est_missing_rate))
    report["missing_rate_mae"] = float(np.mean(errors)) if errors else float("nan")
    report["per_class"] = per_class
    return report
