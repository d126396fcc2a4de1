"""Multi-label evaluation metrics: AP per class, mAP, CP/CR/CF1/OP/OR/OF1 at a threshold and at top-k.

Numpy only (no torch), so `pumlc eval` can score saved predictions without loading a model.

Targets use the project's label encoding: 1 = positive, -1 = negative, 0 = unknown. Unknown entries are
ignored everywhere: they count neither as positives nor as negatives, in AP and in the thresholded
metrics. A score predicts positive when score >= threshold (scores are probabilities in practice, but
any monotone score works for AP). Pass the clean truth matrix for standard evaluation, or the
observed matrix to evaluate with unknowns masked.

Average precision is the non-interpolated AP of ASL (mean over the positives of a class of the precision
at that positive's rank). Tied scores are resolved as scikit-learn does: a positive's precision is
measured after all entries with a score >= its own, so the result does not depend on the order of equal
scores, equals ASL's value whenever there are no ties, and equals `sklearn.metrics.average_precision_score`
always.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pumlc_cli.errors import PumlcError

_METRIC_KEYS = ("CP", "CR", "CF1", "OP", "OR", "OF1")


@dataclass(frozen=True)
class _PositiveRanks:
    """Where each positive sits in its class's ranking; the shared input of exact and 11-point AP.

    Positives are grouped by class (classes in increasing order) and, within a class, sorted by
    increasing score.
    """

    cls: np.ndarray  # class index of each positive
    bounds: np.ndarray  # [C+1] positives of class k are [bounds[k], bounds[k+1])
    precision: np.ndarray  # positives with score >= s / known entries with score >= s
    recall: np.ndarray  # positives with score >= s / positives of the class
    n_pos: np.ndarray  # [C] positives per class


def _validate(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes, finiteness and label values once, so the fast paths below can trust the input."""
    s = np.asarray(scores)
    t = np.asarray(targets)
    if s.ndim != 2 or s.shape != t.shape:
        raise PumlcError(
            f"metrics: scores and targets must be N x C matrices of the same shape, got {s.shape} and {t.shape}"
        )
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)
    if not np.isfinite(s).all():
        raise PumlcError("metrics: scores contain NaN or infinity (did training diverge?)")
    t8 = t.astype(np.int8, copy=False)
    if t.size and (t8.min() < -1 or t8.max() > 1 or (t8 is not t and not np.array_equal(t8, t))):
        raise PumlcError("metrics: targets must use the label encoding 1 / -1 / 0 (unknown)")
    return s, t8


def _positive_ranks(s: np.ndarray, t: np.ndarray) -> _PositiveRanks:
    """Precision and recall at every positive, from one row-wise sort of the score matrix.

    A full argsort is several times slower than a value sort, so we sort values only (unknown entries set to
    -inf, which ranks them below every finite score and so removes them from the counts) and locate
    each positive with a binary search. numpy has no batched searchsorted, so the search loops over
    classes; each iteration is a few vectorised calls on that class's positives.
    """
    n, c = s.shape
    unknown = t == 0
    # A fresh [C, N] copy (each class contiguous), sorted in place; never a view of the caller's scores.
    ranked = np.array((np.where(unknown, -np.inf, s) if unknown.any() else s).T, order="C")
    ranked.sort(axis=1)
    flat = np.flatnonzero(t == 1)  # image-major; regroup by class with a stable radix sort
    img, cls = np.divmod(flat, c)
    order = np.argsort(cls.astype(np.int16 if c < 2**15 else np.int64), kind="stable")
    img, cls = img[order], cls[order]
    pos_scores = s[img, cls]
    bounds = np.zeros(c + 1, dtype=np.int64)
    np.cumsum(np.bincount(cls, minlength=c), out=bounds[1:])
    n_pos = np.diff(bounds)
    n_ge = np.empty(len(cls), dtype=np.int64)  # known entries with score >= s
    pos_ge = np.empty(len(cls), dtype=np.int64)  # positives with score >= s
    for k in np.flatnonzero(n_pos):
        a, b = bounds[k], bounds[k + 1]
        q = np.sort(pos_scores[a:b])
        n_ge[a:b] = n - np.searchsorted(ranked[k], q, side="left")
        pos_ge[a:b] = (b - a) - np.searchsorted(q, q, side="left")
    return _PositiveRanks(
        cls=cls,
        bounds=bounds,
        precision=pos_ge / n_ge,
        recall=pos_ge / n_pos[cls] if len(cls) else np.zeros(0),
        n_pos=n_pos,
    )


def _ap_from_ranks(r: _PositiveRanks) -> np.ndarray:
    """Mean precision over each class's positives; NaN where a class has none."""
    sums = np.bincount(r.cls, weights=r.precision, minlength=len(r.n_pos))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(r.n_pos > 0, sums / r.n_pos, np.nan)


def average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Non-interpolated AP per class ([C] float64); unknown (0) targets ignored, NaN without positives."""
    s, t = _validate(scores, targets)
    return _ap_from_ranks(_positive_ranks(s, t))


def voc11_average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """PASCAL VOC 2007 11-point interpolated AP per class ([C]); NaN for classes without positives.

    For each recall level r in {0, 0.1, ..., 1} take the best precision reached at any recall >= r
    (0 if none) and average the 11 values. The best precision at a given recall is always attained right
    after a positive, so the precision/recall pairs at the positives are all that is needed.
    """
    s, t = _validate(scores, targets)
    return _voc11_from_ranks(_positive_ranks(s, t))


def _voc11_from_ranks(r: _PositiveRanks) -> np.ndarray:
    has_pos = r.n_pos > 0
    starts = r.bounds[:-1][has_pos]  # non-empty classes tile the positives contiguously
    total = np.zeros(int(has_pos.sum()))
    if len(starts):
        # k / 10 is the correctly rounded float of each level, as is any recall a / b equal to it, so
        # recall 3/10 meets level 0.3 exactly (np.arange(0, 1.1, 0.1) would give 0.30000000000000004).
        for level in np.arange(11) / 10:
            total += np.maximum.reduceat(np.where(r.recall >= level, r.precision, 0.0), starts)
    ap = np.full(len(r.n_pos), np.nan)
    ap[has_pos] = total / 11.0
    return ap


def _rates(nc: np.ndarray, npred: np.ndarray, ng: np.ndarray) -> dict[str, float]:
    """CP/CR/CF1 (macro, over classes with positives) and OP/OR/OF1 (micro, over all classes), percent.

    A class that is never predicted has precision 0 (the convention of the common ML-GCN/ASL code, which
    sets its prediction count to 1). Classes without positives have no recall, so they are left out of
    the per-class averages, as they are left out of mAP; their false positives still count in OP.
    CF1 is the harmonic mean of CP and CR (not the mean of per-class F1), again as commonly reported.
    """
    has_pos = ng > 0
    if not has_pos.any():
        return dict.fromkeys(_METRIC_KEYS, float("nan"))
    cp = float(np.mean(nc[has_pos] / np.maximum(npred[has_pos], 1)))
    cr = float(np.mean(nc[has_pos] / ng[has_pos]))
    op = float(nc.sum() / max(npred.sum(), 1))
    orr = float(nc.sum() / ng.sum())
    return {
        "CP": 100.0 * cp,
        "CR": 100.0 * cr,
        "CF1": 100.0 * _harmonic(cp, cr),
        "OP": 100.0 * op,
        "OR": 100.0 * orr,
        "OF1": 100.0 * _harmonic(op, orr),
    }


def _harmonic(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2.0 * p * r / (p + r)


def _counts(pred: np.ndarray, pos: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-class true positives, predictions and positives, counting known entries only."""
    return (
        np.count_nonzero(pred & pos, axis=0),
        np.count_nonzero(pred & known, axis=0),
        np.count_nonzero(pos, axis=0),
    )


def threshold_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray = 0.5) -> dict[str, float]:
    """CP/CR/CF1/OP/OR/OF1 (percent) predicting positive where score >= threshold (one value, or one per class)."""
    s, t = _validate(scores, targets)
    return _rates(*_counts(s >= _per_class(threshold, s.shape[1]), t == 1, t != 0))


def per_class_rates(scores: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray) -> dict[str, np.ndarray]:
    """Per class at `score >= threshold`: `support` (positives), `predicted` (known entries predicted), and
    `precision`, `recall`, `F1` in percent (precision 0 for a class never predicted, as in `_rates`; recall and F1
    NaN for a class without positives)."""
    s, t = _validate(scores, targets)
    return _class_rates(*_counts(s >= _per_class(threshold, s.shape[1]), t == 1, t != 0))


def _class_rates(tp: np.ndarray, npred: np.ndarray, ng: np.ndarray) -> dict[str, np.ndarray]:
    precision = tp / np.maximum(npred, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(ng > 0, tp / ng, np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        "support": ng,
        "predicted": npred,
        "precision": 100.0 * precision,
        "recall": 100.0 * recall,
        "F1": np.where(ng > 0, 100.0 * f1, np.nan),
    }


def _per_class(threshold: float | np.ndarray, c: int) -> float | np.ndarray:
    """A threshold vector must hold one value per class (it broadcasts over the images)."""
    if np.ndim(threshold) == 0:
        return float(threshold)
    vec = np.asarray(threshold, dtype=np.float64)
    if vec.shape != (c,):
        raise PumlcError(f"metrics: {vec.shape[0] if vec.ndim == 1 else vec.shape} thresholds for {c} classes")
    return vec


def _top_k_pred(s: np.ndarray, k: int, threshold: float) -> np.ndarray:
    """In the image's k highest scores AND at or above the threshold (ML-GCN's `overall_topk`)."""
    c = s.shape[1]
    above = s >= threshold
    if k >= c:
        return above
    kth = np.partition(s, c - k, axis=1)[:, c - k]
    return (s >= kth[:, None]) & above


def top_k_metrics(scores: np.ndarray, targets: np.ndarray, k: int = 3, threshold: float = 0.5) -> dict[str, float]:
    """CP/CR/CF1/OP/OR/OF1 (percent) at top-k, the convention of ML-GCN/SSGRL's published tables.

    A class is predicted for an image when it is among the image's k highest scores and its score is
    at or above `threshold` (ML-GCN's `overall_topk` keeps a top-k class only when its logit is >= 0,
    i.e. probability >= 0.5), so an image may get fewer than k predictions. The k are chosen among
    all classes (the model does not know which labels are unknown); unknown entries are then ignored in
    the counts. Scores tied with the k-th highest are all candidates (ML-GCN's `topk` breaks such ties
    by position), so the result does not depend on the order of equal scores.
    """
    if k < 1:
        raise PumlcError(f"metrics: top-k needs k >= 1, got {k}")
    s, t = _validate(scores, targets)
    return _rates(*_counts(_top_k_pred(s, k, threshold), t == 1, t != 0))


def multilabel_metrics(
    scores: np.ndarray,
    targets: np.ndarray,
    threshold: float = 0.5,
    top_k: int = 3,
    *,
    voc11: bool = False,
) -> dict:
    """All evaluation numbers for one score matrix (see the module docstring for conventions).

    Returns `mAP` (mean AP over classes with at least one positive, percent), `CP`, `CR`, `CF1`, `OP`,
    `OR`, `OF1` at `threshold` (percent), the same six under `f"top{top_k}"` (top-k and above `threshold`,
    see `top_k_metrics`), `per_class_ap` ([C] array in percent, NaN for classes without positives),
    `classes_without_positives` (list of indices),
    `n_images`, `threshold`, `top_k`; with `voc11=True` also `mAP_voc11` and `per_class_ap_voc11`.
    """
    if top_k < 1:
        raise PumlcError(f"metrics: top-k needs k >= 1, got {top_k}")
    s, t = _validate(scores, targets)
    ranks = _positive_ranks(s, t)
    ap = 100.0 * _ap_from_ranks(ranks)
    pos, known = t == 1, t != 0
    without = np.flatnonzero(ranks.n_pos == 0)
    result: dict = {
        "mAP": float(np.nanmean(ap)) if len(without) < len(ap) else float("nan"),
        **_rates(*_counts(s >= threshold, pos, known)),
        f"top{top_k}": _rates(*_counts(_top_k_pred(s, top_k, threshold), pos, known)),
        "per_class_ap": ap,
        "classes_without_positives": [int(i) for i in without],
        "n_images": int(s.shape[0]),
        "threshold": float(threshold),
        "top_k": int(top_k),
    }
    if voc11:
        ap11 = 100.0 * _voc11_from_ranks(ranks)
        result["per_class_ap_voc11"] = ap11
        result["mAP_voc11"] = float(np.nanmean(ap11)) if len(without) < len(ap11) else float("nan")
    return result


def masked_average_precision(
    classes: np.ndarray, targets: np.ndarray, scores: np.ndarray, num_classes: int
) -> np.ndarray:
    """AP per class ([C] float64, NaN without positives) over label entries: entry k is (class `classes[k]`,
    target 1 / -1 / 0 = ignored, score). Equal to `average_precision` of the dense matrices with 0 at every
    entry not listed: each class is ranked over the images where it is known (Open Images: verified), and its
    memory is that of the entries. Ties as sklearn (see the module docstring)."""
    classes, targets, scores = _check_entries(classes, targets, scores, num_classes)
    known = targets != 0
    cls, tgt, sc = classes[known], targets[known], scores[known]
    order = np.lexsort((sc, cls))  # by class, then increasing score
    cls, pos, sc = cls[order], tgt[order] == 1, sc[order]
    bounds = np.zeros(num_classes + 1, dtype=np.int64)
    np.cumsum(np.bincount(cls, minlength=num_classes), out=bounds[1:])
    idx = np.arange(len(cls))
    new_tie = np.ones(len(cls), dtype=bool)  # first entry of a run of equal (class, score)
    new_tie[1:] = (cls[1:] != cls[:-1]) | (sc[1:] != sc[:-1])
    left = np.maximum.accumulate(np.where(new_tie, idx, 0))
    cum_pos = np.concatenate([[0], np.cumsum(pos)])  # positives before position i: cum_pos[i]
    n_pos = cum_pos[bounds[1:]] - cum_pos[bounds[:-1]]
    end = bounds[1:][cls]
    n_ge = end - left  # known entries of the class with score >= s
    pos_ge = cum_pos[end] - cum_pos[left]  # positives of the class with score >= s
    sums = np.bincount(cls[pos], weights=(pos_ge / n_ge)[pos], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos > 0, sums / n_pos, np.nan)


def _check_entries(classes, targets, scores, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    classes, targets, scores = np.asarray(classes, np.int64), np.asarray(targets), np.asarray(scores, np.float64)
    if not (len(classes) == len(targets) == len(scores)):
        raise PumlcError("metrics: classes, targets and scores of the entries differ in length")
    if len(classes) and (classes.min() < 0 or classes.max() >= num_classes):
        raise PumlcError(f"metrics: an entry's class is outside [0, {num_classes})")
    if not np.isfinite(scores).all():
        raise PumlcError("metrics: scores contain NaN or infinity (did training diverge?)")
    t8 = targets.astype(np.int8)
    if len(t8) and (t8.min() < -1 or t8.max() > 1 or not np.array_equal(t8, targets)):
        raise PumlcError("metrics: targets must use the label encoding 1 / -1 / 0 (unknown)")
    return classes, t8, scores


def masked_metrics(
    entries: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    kth: np.ndarray,
    num_classes: int,
    threshold: float = 0.5,
    top_k: int = 3,
) -> dict:
    """`multilabel_metrics` computed on label entries `(rows, classes, targets, scores)`, unknown targets ignored:
    AP per class over its known entries, and the thresholded and top-k rates over the known entries, where an entry
    is a top-k prediction when its score reaches its image's k-th highest score over all classes (`kth[row]`)."""
    rows, classes, targets, scores = entries
    classes, targets, scores = _check_entries(classes, targets, scores, num_classes)
    ap = 100.0 * masked_average_precision(classes, targets, scores, num_classes)
    known, pos = targets != 0, targets == 1

    def counts(pred: np.ndarray) -> tuple[np.ndarray, ...]:
        return (
            np.bincount(classes[pred & pos], minlength=num_classes),
            np.bincount(classes[pred & known], minlength=num_classes),
            np.bincount(classes[pos], minlength=num_classes),
        )

    above = scores >= threshold
    top = above & (scores >= np.asarray(kth)[np.asarray(rows, np.int64)])
    without = np.flatnonzero(np.isnan(ap))
    return {
        "mAP": float(np.nanmean(ap)) if len(without) < len(ap) else float("nan"),
        **_rates(*counts(above)),
        f"top{top_k}": _rates(*counts(top)),
        "per_class_ap": ap,
        "classes_without_positives": [int(i) for i in without],
        "n_images": len(kth),
        "threshold": float(threshold),
        "top_k": int(top_k),
    }


def _entry_counts(classes, targets, scores, num_classes: int, threshold: float | np.ndarray) -> tuple[np.ndarray, ...]:
    """`_counts` on label entries: per class, true positives, known entries predicted and positives."""
    classes, targets, scores = _check_entries(classes, targets, scores, num_classes)
    cut = _per_class(threshold, num_classes)
    pred = scores >= (cut[classes] if np.ndim(cut) else cut)
    known, pos = targets != 0, targets == 1
    return tuple(np.bincount(classes[m], minlength=num_classes) for m in (pred & pos, pred & known, pos))


def masked_threshold_metrics(
    classes: np.ndarray, targets: np.ndarray, scores: np.ndarray, num_classes: int, threshold: float | np.ndarray
) -> dict[str, float]:
    """`threshold_metrics` on label entries (unknown targets ignored): equal to it on the dense matrix whose
    other entries are unknown, without building that matrix."""
    return _rates(*_entry_counts(classes, targets, scores, num_classes, threshold))


def masked_per_class_rates(
    classes: np.ndarray, targets: np.ndarray, scores: np.ndarray, num_classes: int, threshold: float | np.ndarray
) -> dict[str, np.ndarray]:
    """`per_class_rates` on label entries (unknown targets ignored)."""
    return _class_rates(*_entry_counts(classes, targets, scores, num_classes, threshold))
