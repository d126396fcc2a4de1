"""The audit's statistics (numpy only): ranking, calibration, missing-rate estimate, ranking quality."""

from __future__ import annotations

import numpy as np
import pytest

from pumlc_cli.audit.scores import (
    audit_scores,
    default_ks,
    labelled_log_odds,
    mixture_share,
    ranking_quality,
    truth_report,
)


def test_ranking_of_a_tiny_hand_made_case() -> None:
    # Class 0 scores on a high scale, class 1 on a low one (as PU scores of two classes can be). The hidden
    # positive of each class scores among its class's observed positives; every negative scores below them.
    probs = np.array(
        [
            [0.95, 0.30],  # 0: positive a, positive b
            [0.90, 0.28],  # 1: positive a, positive b
            [0.85, 0.26],  # 2: positive a, positive b
            [0.92, 0.05],  # 3: hidden a
            [0.50, 0.29],  # 4: hidden b; its a-score beats every b-score, as raw scores go
            [0.40, 0.02],  # 5
            [0.45, 0.03],  # 6
            [0.30, 0.04],  # 7
            [0.60, 0.01],  # 8: an observed positive of a that scores like a negative
        ]
    )
    observed = np.zeros(probs.shape, dtype=np.int8)
    observed[[0, 1, 2, 8], 0] = 1
    observed[[0, 1, 2], 1] = 1
    audit = audit_scores(probs, observed)
    rows, cols = audit.ranking("missing")
    assert not (observed[rows, cols] == 1).any()  # observed positives are never suggested as missing
    assert len(rows) == int((observed != 1).sum())
    # The two hidden positives lead, although a raw-score ranking would put (4, a)=0.50 and (6, a) before (4, b).
    assert {(int(r), int(c)) for r, c in zip(rows[:2], cols[:2], strict=True)} == {(3, 0), (4, 1)}
    for j in range(2):  # within a class the ranking follows the score
        in_class = rows[cols == j]
        assert np.all(np.diff(probs[in_class, j]) <= 0)
    wrong_rows, wrong_cols = audit.ranking("wrong")
    assert (observed[wrong_rows, wrong_cols] == 1).all()
    assert int(wrong_rows[wrong_cols == 0][0]) == 8  # class a's most doubtful positive is the one scoring low


def test_missing_positives_rank_by_labelled_odds_blind_to_a_class_score_scale() -> None:
    # Class b's scores are class a's on another logit scale (b = 2·logit(a) − 1), with the same labels: the same
    # evidence. Ranked by P(labelled | score) fitted per class, each image's two candidates must tie and sit side by
    # side; the raw scores would put all of a's candidates first, and an isotonic staircase ties within a class.
    a = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.65, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    b = 1 / (1 + np.exp(-(2 * np.log(a / (1 - a)) - 1)))
    labelled = np.isin(np.arange(a.size), [0, 1, 3, 5, 8])
    observed = np.repeat(labelled.astype(np.int8)[:, None], 2, axis=1)
    audit = audit_scores(np.stack([a, b], axis=1), observed)
    cand = ~labelled
    assert np.allclose(audit.labelled_odds[cand, 0], audit.labelled_odds[cand, 1])
    rows, cols = audit.ranking("missing")
    assert np.array_equal(rows[0::2], rows[1::2])  # image by image, both classes together
    assert np.all(np.diff(a[rows[0::2]]) < 0)  # strictly in the model's order within a class
    raw_rows = np.tile(np.flatnonzero(cand), 2)[np.argsort(-np.concatenate([a[cand], b[cand]]), kind="stable")]
    assert not np.array_equal(raw_rows[0::2], raw_rows[1::2])  # the raw scores do not pair them
    assert len(np.unique(audit.suspicion[cand, 0])) < cand.sum()  # the calibrated score has ties; the ranking not
    # The fit is Platt's: its log-odds grow with the score and stay finite on a separable class.
    separable = labelled_log_odds(a, a > 0.55)
    assert np.all(np.isfinite(separable)) and np.all(np.diff(separable) < 0)


def test_precision_and_recall_at_k_against_hand_computed_values() -> None:
    hits = np.array([1, 0, 1, 1, 0, 0, 1, 0], dtype=bool)  # 4 relevant entries ranked, 1 more never ranked
    q = ranking_quality(hits, [1, 2, 4, 10], total=5)
    assert q["at"]["1"]["precision"] == 1.0
    assert q["at"]["2"]["precision"] == 0.5
    assert q["at"]["4"]["precision"] == 0.75 and q["at"]["4"]["recall"] == pytest.approx(3 / 5)
    assert q["at"]["10"]["precision"] == pytest.approx(4 / 10)  # beyond the ranking: the rest are misses
    assert q["ap"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 4 + 4 / 7) / 5)
    assert default_ks(53) == [5, 100, 1000]


def _synthetic(n: int, prior: float, label_rate: float, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Scores of one class: positives ~ U(0.3, 1), negatives ~ U(0, 0.7); positives labelled at random."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < prior
    s = np.where(y, rng.uniform(0.3, 1.0, n), rng.uniform(0.0, 0.7, n))
    labelled = y & (rng.random(n) < label_rate)
    true_rate = (y & ~labelled).sum() / y.sum()
    return s, labelled, float(true_rate)


def test_missing_rate_estimate_converges_to_the_true_rate() -> None:
    errors = []
    for n in (1_000, 10_000, 200_000):
        s, labelled, true_rate = _synthetic(n, prior=0.2, label_rate=0.4, seed=n)
        audit = audit_scores(s[:, None], labelled.astype(np.int8)[:, None])
        errors.append(abs(audit.classes[0].est_missing_rate - true_rate))
    assert errors[-1] < 0.01
    assert errors[-1] < errors[0]
    # The labelling is random, so nothing looks like a wrong positive.
    assert audit.classes[0].wrong_share < 0.01


def test_mixture_share_is_nan_without_positives_and_bounded_by_one() -> None:
    assert np.isnan(mixture_share(np.array([]), np.array([0.1, 0.2])))
    assert mixture_share(np.array([0.1]), np.array([0.5, 0.9])) == 1.0


def test_truth_report_scores_a_perfect_ranking_as_perfect() -> None:
    s, labelled, true_rate = _synthetic(5_000, prior=0.3, label_rate=0.5, seed=3)
    truth = np.where(s > 0.7, 1, -1).astype(np.int8)  # a truth the scores separate perfectly
    observed = np.where((truth == 1) & labelled, 1, 0).astype(np.int8)
    report = truth_report(audit_scores(s[:, None], observed[:, None]), truth[:, None], ["c"])
    assert report["missing"]["ap"] == pytest.approx(1.0)
    hidden = int(((truth == 1) & (observed != 1)).sum())
    assert report["missing"]["at"]["100"]["precision"] == 1.0
    assert report["missing"]["at"]["1000"]["recall"] == pytest.approx(min(1000, hidden) / hidden)
    assert "wrong" not in report  # no observed positive is truly negative
    assert report["missing_rate_mae"] < 0.1  # the sampling error of a few hundred positives


def test_calibrated_scores_match_the_hidden_share_on_a_synthetic_score_model() -> None:
    rng = np.random.default_rng(5)
    n = 50_000
    y = rng.random(n) < 0.2
    s = np.where(y, rng.beta(6, 2, n), rng.beta(1, 6, n))  # overlapping classes: calibration has work to do
    labelled = y & (rng.random(n) < 0.4)
    audit = audit_scores(s[:, None], labelled.astype(np.int8)[:, None])
    score, hidden = audit.suspicion[~labelled, 0], y[~labelled]
    for lo, hi in ((0.0, 0.2), (0.2, 0.6), (0.6, 0.9), (0.9, 1.01)):
        band = (score >= lo) & (score < hi)
        assert band.sum() > 100
        assert abs(score[band].mean() - hidden[band].mean()) < 0.1
    assert score.sum() == pytest.approx(hidden.sum(), rel=0.1)  # expected count = the hidden positives
