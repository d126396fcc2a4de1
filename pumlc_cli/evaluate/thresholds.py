"""Decision thresholds chosen on the val split: one global and one per class, each maximising F1.

Why: PU scores are not calibrated to 0.5 (a PU model on VOC scores most classes above it), so a fixed 0.5 predicts
far too many labels. Training picks thresholds on the val split's known labels at the val-selected checkpoint
(unknowns ignored, as val mAP does) and stores them in best.pt (`payload["thresholds"]`) and RUN/thresholds.json;
`eval` reports F1 at them beside 0.5 and `predict` uses them by default.

A class with fewer than `min_positives` known val positives has too few points for its own F1 curve and uses the
global threshold, which maximises the F1 of all known (image, class) entries pooled (the OF1 of `eval`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pumlc_cli.errors import PumlcError

FALLBACK = 0.5  # what a checkpoint without val thresholds predicts at
NO_VAL_THRESHOLDS = "no val thresholds in this checkpoint"


def _best_cuts(group: np.ndarray, scores: np.ndarray, positive: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group, the threshold maximising F1 of `score >= t` over the group's entries ([E] inputs, [n_groups] out).

    One sort by (group, descending score); a cut after a group's i-th entry predicts its i highest scores, and only
    cuts between distinct scores are possible (equal scores are predicted together). F1 = 2·TP / (predicted +
    positives). The best cut with the fewest predictions wins ties; its threshold is the midpoint between the last
    score it keeps and the group's next lower score, so a test score a little under the val one still counts. A
    group without positives gets NaN. Memory grows with the entries: the val labels of Open Images never become an
    images x classes matrix.
    """
    group = np.asarray(group, dtype=np.int64)
    order = np.lexsort((-np.asarray(scores, dtype=np.float64), group))  # ties keep the entries' order
    g, s, y = group[order], np.asarray(scores, dtype=np.float64)[order], np.asarray(positive, dtype=bool)[order]
    out = np.full(n_groups, np.nan)
    if not len(g):
        return out
    size = np.bincount(g, minlength=n_groups)
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    n_pos = np.bincount(g, weights=y, minlength=n_groups).astype(np.int64)
    cum = np.cumsum(y, dtype=np.int64)
    tp = cum - np.concatenate([[0], cum])[start][g]
    predicted = np.arange(len(g)) - start[g] + 1
    last = predicted == size[g]
    nxt = np.where(last, -np.inf, np.concatenate([s[1:], [-np.inf]]))
    f1 = np.where(s > nxt, 2.0 * tp / (predicted + n_pos[g]), -1.0)  # a cut between distinct scores
    present = np.flatnonzero(size)
    best = np.maximum.reduceat(f1, start[present])
    top = np.full(n_groups, np.inf)
    top[present] = best
    hits = np.flatnonzero(f1 == top[g])
    groups, first = np.unique(g[hits], return_index=True)  # first maximum: the fewest predictions
    cut = hits[first]
    kept, below = s[cut], nxt[cut]
    with np.errstate(invalid="ignore"):
        mid = np.where(np.isfinite(below), (kept + below) / 2.0, kept)
    # the midpoint of two adjacent floats may round onto the lower one, which would then be predicted too
    out[groups] = np.where(n_pos[groups] > 0, np.where(mid > below, mid, kept), np.nan)
    return out


def choose_thresholds(scores: np.ndarray, targets: np.ndarray, min_positives: int) -> dict[str, Any] | None:
    """The thresholds record stored in best.pt, or None when the val labels hold no known positive.

    `targets` use the label encoding (1 / -1 / 0 unknown), e.g. the trainer's val targets.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets)
    if s.shape != t.shape or s.ndim != 2:
        raise PumlcError(f"thresholds: scores {s.shape} and targets {t.shape} must be N x C of one shape")
    rows, cols = np.nonzero(t != 0)
    return choose_entry_thresholds(cols, t[rows, cols], s[rows, cols], s.shape[1], s.shape[0], min_positives)


def choose_entry_thresholds(
    classes: np.ndarray, targets: np.ndarray, scores: np.ndarray, n_classes: int, n_images: int, min_positives: int
) -> dict[str, Any] | None:
    """`choose_thresholds` on label entries (class, target, score of each stated (image, class); unknown targets
    ignored): the same record as on the dense matrix whose other entries are unknown, from memory that grows with
    the entries (Open Images' val split, whose unstated labels are unknown)."""
    if min_positives < 0:
        raise PumlcError(f"--threshold-min-positives must be >= 0, got {min_positives}")
    t = np.asarray(targets)
    known = t != 0
    cls, s, positive = np.asarray(classes, dtype=np.int64)[known], np.asarray(scores)[known], t[known] == 1
    if not positive.any():
        return None
    glob = float(_best_cuts(np.zeros(len(s), np.int64), s, positive, 1)[0])
    per = _best_cuts(cls, s, positive, n_classes)
    use_global = np.bincount(cls[positive], minlength=n_classes) < max(1, min_positives)
    per = np.where(use_global | np.isnan(per), glob, per)
    return {
        "global": glob,
        "per_class": [float(v) for v in per],
        "min_positives": int(min_positives),
        "chosen_on": "val",
        "val_images": int(n_images),
    }


def check_thresholds(record: Any, n_classes: int, where: str) -> dict[str, Any]:
    """A stored thresholds record as trusted data: the keys, C per-class values, every value in [0, 1]."""
    ok = (
        isinstance(record, dict)
        and isinstance(record.get("per_class"), list)
        and len(record["per_class"]) == n_classes
        and all(_probability(v) for v in (record.get("global"), *record["per_class"]))
    )
    if not ok:
        raise PumlcError(f"{where}: damaged checkpoint ('thresholds' is not a global and {n_classes} values in [0, 1])")
    return record


def _probability(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def val_thresholds(payload: dict[str, Any], where: str) -> dict[str, Any] | None:
    """The checkpoint's val thresholds (checked), or None for a checkpoint trained before they existed."""
    record = payload.get("thresholds")
    return None if record is None else check_thresholds(record, len(payload["classes"]), where)


def decision_rule(
    record: dict[str, Any] | None, n_classes: int, override: float | None, missing: str = NO_VAL_THRESHOLDS
) -> tuple[np.ndarray, str]:
    """The per-class thresholds `predict` applies and a line saying which rule they follow: `--threshold` if
    given, else the val record, else 0.5 (`missing` says why there is no record)."""
    if override is not None:
        return np.full(n_classes, float(override)), f"threshold {override:g} (--threshold)"
    if record is None:
        return np.full(n_classes, FALLBACK), f"threshold {FALLBACK:g} ({missing})"
    return np.asarray(record["per_class"], dtype=np.float64), describe(record)


def describe(record: dict[str, Any]) -> str:
    """The rule in words, for tables and JSON."""
    return (
        f"val thresholds: per class where val had >= {record['min_positives']} positives, "
        f"else global {record['global']:.3g}"
    )


def write_thresholds_file(run_dir: Path, record: dict[str, Any]) -> None:
    """RUN/thresholds.json, atomically: the same record as best.pt's, readable without torch."""
    from pumlc_cli.atomic import write_text_atomic

    write_text_atomic(Path(run_dir) / "thresholds.json", json.dumps(record, indent=2) + "\n")
