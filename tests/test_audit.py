"""The audit's statistics (numpy only): calibrated scores, ranking, per-class rates, ranking quality."""

from __future__ import annotations

import numpy as np
import pytest

from pumlc_cli.audit.scores import (
    audit_scores,
    default_ks,
    hidden_posterior,
    mixture_share,
    ranking_quality,
    reliability,
    truth_report,
)


def _pu_matrix(n: int, classes: int, label_rate: float, seed: int, separable: int = 1):
    """A PU score matrix with known truth: each class has its own prior and score scale; positives are labelled
    completely at random. The first `separable` classes have a share of positives scoring above every negative
    (what makes the label frequency identifiable); the others overlap throughout."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, classes), dtype=np.int8)
    probs = np.zeros((n, classes))
    for j in range(classes):
        y = rng.random(n) < rng.uniform(0.1, 0.3)
        top = 5.0 if j < separable else 2.0
        logit = np.where(y, rng.normal(1.0, 1.2, n), rng.normal(-1.5, 1.0, n))
        logit = np.where(y & (rng.random(n) < 0.3), top + rng.random(n), np.minimum(logit, 4.0))
        scale = rng.uniform(0.6, 1.6)  # a PU model's classes score on different scales
        probs[:, j] = 1 / (1 + np.exp(-(scale * logit + rng.uniform(-0.5, 0.5))))
        truth[:, j] = np.where(y, 1, -1)
    observed = np.where((truth == 1) & (rng.random((n, classes)) < label_rate), 1, 0).astype(np.int8)
    return probs, observed, truth


def test_scores_are_calibrated_against_a_known_truth() -> None:
    probs, observed, truth = _pu_matrix(6_000, 6, label_rate=0.5, seed=1, separable=2)
    audit = audit_scores(probs, observed)
    cand = observed != 1
    score, hidden = audit.suspicion[cand], truth[cand] == 1
    rel = reliability(score, hidden)
    assert rel["ece"] < 0.05
    assert score.max() < 1.0  # never certain
    above = rel["above"]["0.8"]
    assert above["n"] > 50 and above["precision"] >= 0.8 - 0.1
    # the per-class missing-rate estimates (sums of the scores) are near the truth
    true_rate = (hidden_per_class := ((truth == 1) & cand).sum(0)) / (truth == 1).sum(0)
    est = np.array([c.est_missing_rate for c in audit.classes])
    assert np.abs(est - true_rate).mean() < 0.05, (est, true_rate, hidden_per_class)
    # and the label frequency the scores assume is near the one that made the labels
    assert abs(np.mean([c.label_frequency for c in audit.classes]) - 0.5) < 0.1


def test_moderate_model_scores_give_moderate_audit_scores() -> None:
    # The case: labelled positives score 0.9+, and the candidates 0.55–0.77 are a mix (a third hidden
    # positives). A raw isotonic ratio called them 1.000; here no candidate may come near certainty.
    rng = np.random.default_rng(2)
    n = 3_000
    y = rng.random(n) < 0.3
    s = np.where(y, rng.uniform(0.55, 0.99, n), rng.uniform(0.0, 0.77, n))
    observed = (y & (rng.random(n) < 0.4)).astype(np.int8)
    audit = audit_scores(s[:, None], observed[:, None])
    cand = observed == 0
    moderate = cand & (s >= 0.55) & (s <= 0.77)
    assert moderate.sum() > 100
    assert audit.suspicion[moderate, 0].max() < 0.9
    # on average they are right about as often as they say
    assert abs(audit.suspicion[moderate, 0].mean() - y[moderate].mean()) < 0.1


def test_a_known_label_frequency_is_used() -> None:
    probs, observed, truth = _pu_matrix(4_000, 3, label_rate=0.3, seed=3, separable=0)
    cand = observed != 1
    hidden = truth[cand] == 1
    estimated = audit_scores(probs, observed)
    known = audit_scores(probs, observed, label_frequency=0.3)
    assert all(c.label_frequency == 0.3 for c in known.classes)
    assert all(c.label_frequency != 0.3 for c in estimated.classes)  # no class separates: c is only bounded
    assert reliability(known.suspicion[cand], hidden)["ece"] < 0.03


@pytest.mark.parametrize("label_rate", [0.3, 0.6])
def test_the_label_frequency_is_estimated_where_classes_separate(label_rate: float) -> None:
    probs, observed, truth = _pu_matrix(8_000, 5, label_rate=label_rate, seed=7, separable=3)
    audit = audit_scores(probs, observed)
    assert audit.label_frequency == "estimated"
    est = np.array([c.label_frequency for c in audit.classes])
    assert np.abs(est - label_rate).max() < 0.08, est


def _confused_matrix(n: int, classes: int, label_rate: float, seed: int):
    """Scores of a weak model: each class has a confusable share of its negatives (10–60%) that scores like its
    positives, so no positive scores above all its negatives."""
    rng = np.random.default_rng(seed)
    truth = np.where(rng.random((n, classes)) < 0.2, 1, -1).astype(np.int8)
    confused = rng.random((n, classes)) < np.linspace(0.1, 0.6, classes)
    like_positive = (truth == 1) | confused
    logit = np.where(like_positive, rng.normal(1.0, 1.0, (n, classes)), rng.normal(-2.0, 1.0, (n, classes)))
    observed = np.where((truth == 1) & (rng.random((n, classes)) < label_rate), 1, 0).astype(np.int8)
    return 1 / (1 + np.exp(-logit)), observed, truth


def test_a_weak_model_gives_too_high_scores_marked_as_upper_bounds() -> None:
    # Confusable negatives score like the positives: every class's bound is loose, the c it gives too low and every
    # score too high. The audit cannot tell (they look like hidden positives), so it marks estimated-c scores.
    probs, observed, truth = _confused_matrix(6_000, 6, label_rate=0.5, seed=5)
    audit = audit_scores(probs, observed)
    assert audit.label_frequency == "estimated" and audit.upper_bounds
    assert all(c.label_frequency < 0.45 for c in audit.classes)
    cand = observed != 1
    known = audit_scores(probs, observed, label_frequency=0.5)
    assert known.label_frequency == "given" and not known.upper_bounds
    # above the scores the right c gives, class by class, and above the truth
    assert all(e.est_missing > k.est_missing for e, k in zip(audit.classes, known.classes, strict=True))
    hidden = truth[cand] == 1
    assert audit.suspicion[cand].mean() > hidden.mean() + 0.02
    assert reliability(known.suspicion[cand], hidden)["ece"] < reliability(audit.suspicion[cand], hidden)["ece"]


def test_a_class_without_wrong_labels_is_not_called_wrong() -> None:
    # Five observed positives, all right, scoring low (a weak class): the mirror estimator alone said "100% wrong".
    rng = np.random.default_rng(4)
    probs = rng.uniform(0, 1, (400, 3))
    observed = np.zeros(probs.shape, np.int8)
    observed[rng.choice(400, 80, replace=False), 0] = 1
    observed[rng.choice(400, 80, replace=False), 1] = 1
    probs[observed[:, 0] == 1, 0] = rng.uniform(0.6, 1.0, 80)
    probs[observed[:, 1] == 1, 1] = rng.uniform(0.6, 1.0, 80)
    weak = rng.choice(400, 5, replace=False)
    observed[weak, 2] = 1
    probs[weak, 2] = rng.uniform(0.0, 0.3, 5)
    audit = audit_scores(probs, observed)
    assert audit.classes[2].est_wrong_rate < 0.9
    assert np.nanmax(audit.suspicion[observed == 1]) < 1.0


def test_ranking_follows_the_score_and_the_model_within_a_class() -> None:
    probs, observed, _ = _pu_matrix(800, 3, label_rate=0.5, seed=5)
    audit = audit_scores(probs, observed)
    rows, cols = audit.ranking("missing")
    assert not (observed[rows, cols] == 1).any()  # observed positives are never suggested as missing
    assert len(rows) == int((observed != 1).sum())
    assert np.all(np.diff(audit.suspicion[rows, cols]) <= 0)
    for j in range(3):  # the calibration is monotone in the model's score within a class
        in_class = rows[cols == j]
        assert np.all(np.diff(probs[in_class, j]) <= 1e-12)
    wrong_rows, wrong_cols = audit.ranking("wrong")
    assert (observed[wrong_rows, wrong_cols] == 1).all()


def test_hidden_posterior_is_nan_without_labels_and_below_one() -> None:
    s = np.linspace(0, 1, 50)
    assert np.isnan(hidden_posterior(s, np.zeros(50, bool), 0.5)).all()
    labelled = s > 0.5
    post = hidden_posterior(s, labelled, 0.99)  # a separable class, almost every positive labelled
    assert post.max() < 1.0 and post.max() <= 26 / 27


def test_reliability_of_hand_made_scores() -> None:
    rel = reliability(np.array([0.95, 0.95, 0.85, 0.15, 0.15]), np.array([1, 0, 1, 0, 0], bool))
    # bins: 0.9–1.0 mean 0.95 vs 0.5; 0.8–0.9 mean 0.85 vs 1; 0.1–0.2 mean 0.15 vs 0
    assert rel["ece"] == pytest.approx((2 * 0.45 + 0.15 + 2 * 0.15) / 5)
    assert rel["above"]["0.9"] == {"n": 2, "expected_precision": 0.95, "precision": 0.5}
    assert rel["above"]["0.8"]["precision"] == pytest.approx(2 / 3)
    assert reliability(np.array([0.1]), np.array([False]))["above"]["0.8"]["precision"] is None


def test_precision_and_recall_at_k_against_hand_computed_values() -> None:
    hits = np.array([1, 0, 1, 1, 0, 0, 1, 0], dtype=bool)  # 4 relevant entries ranked, 1 more never ranked
    q = ranking_quality(hits, [1, 2, 4, 10], total=5)
    assert q["at"]["1"]["precision"] == 1.0
    assert q["at"]["2"]["precision"] == 0.5
    assert q["at"]["4"]["precision"] == 0.75 and q["at"]["4"]["recall"] == pytest.approx(3 / 5)
    assert q["at"]["10"]["precision"] == pytest.approx(4 / 10)  # beyond the ranking: the rest are misses
    assert q["ap"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 4 + 4 / 7) / 5)
    assert default_ks(53) == [5, 100, 1000]


def test_mixture_share_is_nan_without_positives_and_bounded_by_one() -> None:
    assert np.isnan(mixture_share(np.array([]), np.array([0.1, 0.2])))
    assert mixture_share(np.array([0.1]), np.array([0.5, 0.9])) == 1.0


def test_truth_report_scores_a_perfect_ranking_as_perfect() -> None:
    rng = np.random.default_rng(3)
    s = rng.uniform(0, 1, 5_000)
    truth = np.where(s > 0.7, 1, -1).astype(np.int8)  # a truth the scores separate perfectly
    observed = np.where((truth == 1) & (rng.random(5_000) < 0.5), 1, 0).astype(np.int8)
    report = truth_report(audit_scores(s[:, None], observed[:, None]), truth[:, None], ["c"])
    assert report["missing"]["ap"] == pytest.approx(1.0)
    hidden = int(((truth == 1) & (observed != 1)).sum())
    assert report["missing"]["at"]["100"]["precision"] == 1.0
    assert report["missing"]["at"]["1000"]["recall"] == pytest.approx(min(1000, hidden) / hidden)
    assert "wrong" not in report  # no observed positive is truly negative
    assert report["missing_rate_mae"] < 0.1  # the sampling error of a few hundred positives
    assert report["missing"]["reliability"]["ece"] < 0.05
