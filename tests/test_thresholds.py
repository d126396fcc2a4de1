"""Thresholds chosen on val (pumlc_cli.evaluate.thresholds) against a brute-force search over every cut."""

from __future__ import annotations

import numpy as np
import pytest

from pumlc_cli.errors import PumlcError
from pumlc_cli.evaluate.metrics import per_class_rates, threshold_metrics
from pumlc_cli.evaluate.thresholds import check_thresholds, choose_thresholds, decision_rule


def _f1(scores: np.ndarray, targets: np.ndarray, t: float) -> float:
    known = targets != 0
    pred = (scores >= t) & known
    tp = np.count_nonzero(pred & (targets == 1))
    return 2 * tp / (np.count_nonzero(pred) + np.count_nonzero(targets == 1))


def _brute(scores: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
    """Best F1 over every threshold equal to a known score, and the fewest predictions reaching it."""
    known = scores[targets != 0]
    best, fewest = -1.0, 0
    for t in np.unique(known)[::-1]:  # highest threshold first: ties keep the fewest predictions
        f1 = _f1(scores, targets, t)
        if f1 > best + 1e-12:
            best, fewest = f1, int(np.count_nonzero(known >= t))
    return best, fewest


def _check_choice(scores: np.ndarray, targets: np.ndarray, t: float) -> None:
    best, fewest = _brute(scores, targets)
    assert _f1(scores, targets, t) == pytest.approx(best, abs=1e-12)
    assert np.count_nonzero(scores[targets != 0] >= t) == fewest
    assert 0.0 <= t <= 1.0


@pytest.mark.parametrize("seed", range(12))
def test_choice_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = rng.integers(5, 40), rng.integers(1, 6)
    scores = rng.random((n, c))
    if seed % 3 == 0:  # many ties
        scores = np.round(scores, 1)
    truth = np.where(rng.random((n, c)) < 0.3, 1, -1)
    targets = np.where(rng.random((n, c)) < 0.3, 0, truth).astype(np.int8)
    targets[0, 0] = 1  # at least one known positive
    record = choose_thresholds(scores, targets, min_positives=3)
    assert record is not None
    assert (record["chosen_on"], record["val_images"], record["min_positives"]) == ("val", n, 3)
    _check_choice(scores.ravel(), targets.ravel(), record["global"])
    for k in range(c):
        if np.count_nonzero(targets[:, k] == 1) >= 3:
            _check_choice(scores[:, k], targets[:, k], record["per_class"][k])
        else:
            assert record["per_class"][k] == record["global"]


def test_midpoint_between_kept_and_next_score() -> None:
    scores = np.array([[0.9], [0.8], [0.3], [0.1], [0.95]])
    targets = np.array([[1], [1], [-1], [-1], [0]])  # the unknown 0.95 plays no part
    record = choose_thresholds(scores, targets, min_positives=1)
    assert record["per_class"] == [pytest.approx(0.55)] and record["global"] == pytest.approx(0.55)


def test_floor_unknowns_and_no_positives() -> None:
    scores = np.array([[0.9, 0.2], [0.1, 0.7], [0.6, 0.6]])
    targets = np.array([[1, -1], [-1, 1], [-1, 0]])
    low = choose_thresholds(scores, targets, min_positives=2)
    assert low["per_class"] == [low["global"], low["global"]]
    own = choose_thresholds(scores, targets, min_positives=0)
    assert own["per_class"] == [pytest.approx(0.75), pytest.approx((0.7 + 0.2) / 2)]
    assert choose_thresholds(scores, np.where(targets == 1, 0, targets), 1) is None
    with pytest.raises(PumlcError, match="must be >= 0"):
        choose_thresholds(scores, targets, -1)


def test_vectorised_speed_on_coco_sized_val() -> None:
    """10k val images x 80 classes: a loop over candidate thresholds would take minutes."""
    import time

    rng = np.random.default_rng(0)
    scores = rng.random((10_000, 80)).astype(np.float32)
    targets = np.where(rng.random(scores.shape) < 0.05, 1, -1).astype(np.int8)
    t0 = time.perf_counter()
    record = choose_thresholds(scores, targets, 5)
    assert time.perf_counter() - t0 < 5 and len(record["per_class"]) == 80


def test_metrics_take_a_threshold_per_class() -> None:
    scores = np.array([[0.9, 0.2], [0.4, 0.7], [0.6, 0.3]])
    targets = np.array([[1, -1], [-1, 1], [1, 0]])
    cut = np.array([0.5, 0.25])
    rates = per_class_rates(scores, targets, cut)
    np.testing.assert_array_equal(rates["support"], [2, 1])
    np.testing.assert_array_equal(rates["predicted"], [2, 1])  # class 1: 0.7 yes, 0.2 no, 0.3 unknown
    np.testing.assert_allclose(rates["F1"], [100.0, 100.0])
    assert threshold_metrics(scores, targets, cut)["OF1"] == pytest.approx(100.0)
    assert threshold_metrics(scores, targets, 0.5)["OF1"] == pytest.approx(100 * 2 * 3 / (3 + 3))
    with pytest.raises(PumlcError, match="3 thresholds for 2 classes"):
        threshold_metrics(scores, targets, np.array([0.5, 0.5, 0.5]))


def test_stored_record_checked_and_rule() -> None:
    record = {"global": 0.3, "per_class": [0.2, 0.3], "min_positives": 5, "chosen_on": "val", "val_images": 9}
    assert check_thresholds(record, 2, "x") is record
    for bad in ({**record, "per_class": [0.2]}, {**record, "global": float("nan")}, {**record, "per_class": [2, 0]}):
        with pytest.raises(PumlcError, match="damaged checkpoint"):
            check_thresholds(bad, 2, "x")
    cut, rule = decision_rule(record, 2, None)
    assert cut.tolist() == [0.2, 0.3] and rule.startswith("val thresholds")
    cut, rule = decision_rule(record, 2, 0.7)
    assert cut.tolist() == [0.7, 0.7] and "--threshold" in rule
    cut, rule = decision_rule(None, 2, None)
    assert cut.tolist() == [0.5, 0.5] and "no val thresholds in this checkpoint" in rule
