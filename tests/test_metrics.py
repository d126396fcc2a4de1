"""Metrics against scikit-learn and against small cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from pumlc_cli.errors import PumlcError
from pumlc_cli.evaluate.metrics import (
    average_precision,
    multilabel_metrics,
    threshold_metrics,
    top_k_metrics,
    voc11_average_precision,
)


def _random(n: int, c: int, seed: int, *, unknown: float = 0.0, ties: bool = False):
    rng = np.random.default_rng(seed)
    scores = rng.random((n, c))
    if ties:
        scores = np.round(scores, 1)
    targets = np.where(rng.random((n, c)) < 0.2, 1, -1).astype(np.int8)
    targets[rng.random((n, c)) < unknown] = 0
    return scores, targets


def _sklearn_ap(scores, targets):
    out = []
    for c in range(scores.shape[1]):
        known = targets[:, c] != 0
        y = targets[known, c] == 1
        out.append(average_precision_score(y, scores[known, c]) if y.any() else np.nan)
    return np.array(out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ap_equals_sklearn_without_ties(dtype):
    scores, targets = _random(2000, 12, 0)
    scores = scores.astype(dtype)
    np.testing.assert_allclose(average_precision(scores, targets), _sklearn_ap(scores, targets), atol=1e-12)


def test_ap_masks_unknown_entries():
    scores, targets = _random(1500, 9, 1, unknown=0.3)
    np.testing.assert_allclose(average_precision(scores, targets), _sklearn_ap(scores, targets), atol=1e-12)
    # Unknown entries must not matter at all: changing their scores leaves AP unchanged.
    moved = scores.copy()
    moved[targets == 0] = np.random.default_rng(2).random(int((targets == 0).sum()))
    np.testing.assert_array_equal(average_precision(moved, targets), average_precision(scores, targets))


def test_ap_with_ties_equals_sklearn():
    scores, targets = _random(800, 6, 3, unknown=0.2, ties=True)
    np.testing.assert_allclose(average_precision(scores, targets), _sklearn_ap(scores, targets), atol=1e-12)


def test_ap_hand_example_and_asl_definition():
    # Ranked: + - + -  -> precision at positives 1/1 and 2/3 -> AP = 5/6
    scores = np.array([[0.9], [0.8], [0.7], [0.1]])
    targets = np.array([[1], [-1], [1], [-1]])
    np.testing.assert_allclose(average_precision(scores, targets), [5 / 6])
    # An unknown entry ranked between them is skipped: + + -  -> AP = 1
    targets_unknown = np.array([[1], [0], [1], [-1]])
    np.testing.assert_allclose(average_precision(scores, targets_unknown), [1.0])
    # Tie of a positive with a negative: precision measured after both -> 1/2
    np.testing.assert_allclose(average_precision(np.array([[0.5], [0.5]]), np.array([[1], [-1]])), [0.5])


def test_classes_without_positives_are_nan_and_reported():
    scores = np.array([[0.9, 0.2, 0.4], [0.1, 0.3, 0.6]])
    targets = np.array([[1, -1, 0], [-1, -1, 0]])
    ap = average_precision(scores, targets)
    assert ap[0] == 1.0 and np.isnan(ap[1]) and np.isnan(ap[2])
    m = multilabel_metrics(scores, targets)
    assert m["classes_without_positives"] == [1, 2]
    assert m["mAP"] == 100.0
    assert m["n_images"] == 2


def test_threshold_metrics_hand_example():
    scores = np.array(
        [
            [0.9, 0.6, 0.1],
            [0.2, 0.7, 0.8],
            [0.6, 0.1, 0.3],
            [0.4, 0.9, 0.2],
        ]
    )
    targets = np.array(
        [
            [1, -1, -1],
            [-1, 1, 1],
            [1, -1, -1],
            [1, 1, -1],
        ]
    )
    # Predictions at 0.5: class 0 rows {0,2}; class 1 rows {0,1,3}; class 2 row {1}.
    # Nc = [2, 2, 1], Np = [2, 3, 1], Ng = [3, 2, 1]
    cp = (2 / 2 + 2 / 3 + 1 / 1) / 3
    cr = (2 / 3 + 2 / 2 + 1 / 1) / 3
    op, orr = 5 / 6, 5 / 6
    m = threshold_metrics(scores, targets, 0.5)
    assert m["CP"] == pytest.approx(100 * cp)
    assert m["CR"] == pytest.approx(100 * cr)
    assert m["CF1"] == pytest.approx(100 * 2 * cp * cr / (cp + cr))
    assert m["OP"] == pytest.approx(100 * op)
    assert m["OR"] == pytest.approx(100 * orr)
    assert m["OF1"] == pytest.approx(100 * 2 * op * orr / (op + orr))
    y, pred = targets == 1, scores >= 0.5
    assert m["CP"] == pytest.approx(100 * precision_score(y, pred, average="macro"))
    assert m["CR"] == pytest.approx(100 * recall_score(y, pred, average="macro"))
    assert m["OP"] == pytest.approx(100 * precision_score(y, pred, average="micro"))
    assert m["OR"] == pytest.approx(100 * recall_score(y, pred, average="micro"))
    assert m["OF1"] == pytest.approx(100 * f1_score(y, pred, average="micro"))


def test_threshold_metrics_match_sklearn_on_random_data():
    scores, targets = _random(500, 8, 4)
    y, pred = targets == 1, scores >= 0.3
    m = threshold_metrics(scores, targets, 0.3)
    for key, average, fn in [
        ("CP", "macro", precision_score),
        ("CR", "macro", recall_score),
        ("OP", "micro", precision_score),
        ("OR", "micro", recall_score),
        ("OF1", "micro", f1_score),
    ]:
        assert m[key] == pytest.approx(100 * fn(y, pred, average=average, zero_division=0))


def test_never_predicted_class_counts_as_zero_precision():
    scores = np.array([[0.9, 0.1], [0.8, 0.2]])
    targets = np.array([[1, 1], [-1, -1]])
    m = threshold_metrics(scores, targets, 0.5)
    assert m["CP"] == pytest.approx(100 * (0.5 + 0.0) / 2)
    assert m["CR"] == pytest.approx(100 * (1.0 + 0.0) / 2)


def test_unknown_entries_do_not_count_in_threshold_metrics():
    scores = np.array([[0.9, 0.9], [0.9, 0.1]])
    targets = np.array([[1, 0], [0, 1]])
    m = threshold_metrics(scores, targets, 0.5)
    # Only known entries: class 0 one TP; class 1 one FN.
    assert m["OP"] == 100.0 and m["OR"] == 50.0


def test_top_k_hand_example():
    scores = np.array([[0.9, 0.8, 0.1, 0.3], [0.2, 0.1, 0.7, 0.6]])
    targets = np.array([[1, -1, -1, 1], [-1, 1, 1, -1]])
    m = top_k_metrics(scores, targets, k=2)
    # Predicted: row0 {0,1}, row1 {2,3}. Nc=[1,0,1,0], Np=[1,1,1,1], Ng=[1,1,1,1]
    assert m["CP"] == pytest.approx(50.0)
    assert m["CR"] == pytest.approx(50.0)
    assert m["OP"] == pytest.approx(50.0)
    assert m["OR"] == pytest.approx(50.0)
    # Ties with the k-th score are all predicted.
    tied = top_k_metrics(np.array([[0.5, 0.5, 0.5, 0.1]]), np.array([[1, 1, -1, -1]]), k=1)
    assert tied["OP"] == pytest.approx(100 * 2 / 3) and tied["OR"] == 100.0


def _ml_gcn_top_k(scores: np.ndarray, targets: np.ndarray, k: int) -> dict[str, float]:
    """ML-GCN `util.py` `overall_topk` + `evaluation`, rewritten plainly: the k best classes of each image
    count as predicted only when their score clears 0.5; rates over classes (all have positives here)."""
    pred = np.zeros(scores.shape, dtype=bool)
    for i, row in enumerate(scores):
        for j in np.argsort(-row)[:k]:
            pred[i, j] = row[j] >= 0.5
    pos = targets == 1
    nc, npred, ng = (pred & pos).sum(0), np.maximum(pred.sum(0), 1), pos.sum(0)
    op, orr = nc.sum() / npred.sum(), nc.sum() / ng.sum()
    cp, cr = np.mean(nc / npred), np.mean(nc / ng)
    return {"CP": 100 * cp, "CR": 100 * cr, "OP": 100 * op, "OR": 100 * orr, "CF1": 200 * cp * cr / (cp + cr)}


def test_top_k_follows_the_ml_gcn_convention():
    # Row 0: classes 0, 1, 2 are its top 3 but only class 0 clears 0.5, so only class 0 is predicted.
    one = top_k_metrics(np.array([[0.9, 0.4, 0.3, 0.1]]), np.array([[1, 1, -1, -1]]), k=3)
    assert one["OP"] == 100.0 and one["OR"] == 50.0
    rng = np.random.default_rng(3)
    scores = rng.random((200, 8))
    targets = np.where(rng.random((200, 8)) < 0.3, 1, -1)
    ours = top_k_metrics(scores, targets, k=3)
    for key, value in _ml_gcn_top_k(scores, targets, 3).items():
        assert ours[key] == pytest.approx(value), key


def test_multilabel_metrics_keys_and_consistency():
    scores, targets = _random(300, 5, 5, unknown=0.1)
    m = multilabel_metrics(scores, targets, threshold=0.4, top_k=3, voc11=True)
    assert set(m) >= {"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "top3", "per_class_ap", "n_images"}
    assert m["mAP"] == pytest.approx(100 * np.nanmean(average_precision(scores, targets)))
    assert m["top3"] == top_k_metrics(scores, targets, 3, threshold=0.4)
    assert m["mAP_voc11"] == pytest.approx(100 * np.nanmean(voc11_average_precision(scores, targets)))


def _voc11_reference(scores: np.ndarray, targets: np.ndarray) -> float:
    order = np.argsort(-scores)
    y = targets[order] == 1
    tp = np.cumsum(y)
    precision = tp / np.arange(1, len(y) + 1)
    recall = tp / y.sum()
    return float(np.mean([precision[recall >= level].max(initial=0.0) for level in [i / 10 for i in range(11)]]))


def test_voc11_matches_plain_reference():
    scores, targets = _random(400, 4, 6)
    ours = voc11_average_precision(scores, targets)
    ref = [_voc11_reference(scores[:, c], targets[:, c]) for c in range(4)]
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    # Hand case: + - + : precision 1 at recall .5, 2/3 at recall 1 -> (6 * 1 + 5 * 2/3) / 11
    hand = voc11_average_precision(np.array([[0.9], [0.5], [0.2]]), np.array([[1], [-1], [1]]))
    np.testing.assert_allclose(hand, [(6 + 5 * 2 / 3) / 11])


def test_rejects_bad_input():
    with pytest.raises(PumlcError, match="same shape"):
        average_precision(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(PumlcError, match="NaN"):
        average_precision(np.array([[np.nan]]), np.array([[1]]))
    with pytest.raises(PumlcError, match="encoding"):
        average_precision(np.array([[0.5]]), np.array([[2]]))
    with pytest.raises(PumlcError, match="top-k"):
        top_k_metrics(np.array([[0.5]]), np.array([[1]]), k=0)


def test_inputs_are_not_modified():
    scores, targets = _random(50, 1, 7)  # one column: its transpose is contiguous, the risky case
    before = scores.copy()
    multilabel_metrics(scores, targets, voc11=True)
    np.testing.assert_array_equal(scores, before)
