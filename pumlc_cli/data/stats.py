"""Statistics of a prepared folder: how many labels, how noisy, how much is unknown.

Definitions (per split or over all splits; unknown truth entries, e.g. VOC difficult-only, are left out of
both rates). The four kinds of label noise, named as in the README:
- hidden positive: a true positive observed unknown (hidden by --partial/--drop-positives, stripped, or a CSV's
  unlisted class); hidden negative: a true negative observed unknown;
- false negative (FN): a true positive observed negative; false positive (FP): a true negative observed positive;
- FN rate: false negatives / true positives; FP rate: false positives / true negatives;
- label cardinality: mean number of true positives per image; density: cardinality / number of classes;
- observed shares: the shares of all (image, class) entries observed positive / negative / unknown;
- unknown share: entries observed unknown / images;
- precision: observed positives that are true positives / observed positives;
- recall: true positives still observed positive / true positives (what hiding, stripping and noise left).
Ratios with an empty denominator are None (null in JSON, "-" in tables).
When the labels carry no truth beyond what was observed (a user's CSV without corruption), truth equals
observed and the rates are zero by construction; the summary says so.
"""

from __future__ import annotations

import numpy as np

SORT_KEYS = {
    "index": ("index", False),
    "name": ("class", False),
    "positives": ("true_positives", True),
    "observed": ("observed_positives", True),
    "hidden": ("hidden_positives", True),
    "fn": ("fn_rate", True),
    "fp": ("fp_rate", True),
    "unknown": ("unknown_share", True),
    "precision": ("precision", False),
    "recall": ("recall", False),
}


def _ratio(num: int | float, den: int | float) -> float | None:
    return float(num) / float(den) if den else None


def label_stats(truth: np.ndarray, observed: np.ndarray, classes: list[str]) -> dict:
    """Summary, per-class rows and positives-per-image histograms for one (truth, observed) pair."""
    truth = np.asarray(truth, dtype=np.int8)
    observed = np.asarray(observed, dtype=np.int8)
    n, c = truth.shape
    t_pos, t_neg = truth == 1, truth == -1
    o_pos, o_neg, o_unk = observed == 1, observed == -1, observed == 0
    entries = n * c
    card = t_pos.sum(axis=1)
    o_card = o_pos.sum(axis=1)
    summary = {
        "images": int(n),
        "classes": int(c),
        "label_cardinality": _ratio(card.sum(), n),
        "label_density": _ratio(card.sum(), entries),
        "observed_cardinality": _ratio(o_card.sum(), n),
        "observed_positive_share": _ratio(o_pos.sum(), entries),
        "observed_negative_share": _ratio(o_neg.sum(), entries),
        "observed_unknown_share": _ratio(o_unk.sum(), entries),
        "truth_unknown_entries": int((truth == 0).sum()),
        "hidden_positives": int((t_pos & o_unk).sum()),
        "hidden_negatives": int((t_neg & o_unk).sum()),
        "false_negatives": int((t_pos & o_neg).sum()),
        "false_positives": int((t_neg & o_pos).sum()),
        "observed_positive_recall": _ratio((t_pos & o_pos).sum(), t_pos.sum()),
        "truth_equals_observed": bool(np.array_equal(truth, observed)),
    }
    tp = t_pos.sum(axis=0)
    tn = t_neg.sum(axis=0)
    op = o_pos.sum(axis=0)
    hidden_pos = (t_pos & o_unk).sum(axis=0)
    hidden_neg = (t_neg & o_unk).sum(axis=0)
    false_neg = (t_pos & o_neg).sum(axis=0)
    false_pos = (t_neg & o_pos).sum(axis=0)
    correct = (t_pos & o_pos).sum(axis=0)
    unk = o_unk.sum(axis=0)
    rows = [
        {
            "index": j,
            "class": classes[j],
            "true_positives": int(tp[j]),
            "observed_positives": int(op[j]),
            "hidden_positives": int(hidden_pos[j]),
            "hidden_negatives": int(hidden_neg[j]),
            "false_negatives": int(false_neg[j]),
            "fn_rate": _ratio(false_neg[j], tp[j]),
            "false_positives": int(false_pos[j]),
            "fp_rate": _ratio(false_pos[j], tn[j]),
            "unknown_share": _ratio(unk[j], n),
            "precision": _ratio(correct[j], op[j]),
            "recall": _ratio(correct[j], tp[j]),
        }
        for j in range(c)
    ]
    return {
        "summary": summary,
        "per_class": rows,
        "histogram": {"truth": _hist(card), "observed": _hist(o_card)},
    }


def _hist(counts: np.ndarray) -> dict[str, int]:
    """{"0": images with no positive, "1": ..., ...} up to the maximum."""
    if counts.size == 0:
        return {}
    return {str(k): int(v) for k, v in enumerate(np.bincount(counts))}


def sort_rows(rows: list[dict], key: str) -> list[dict]:
    """Rows sorted by a `SORT_KEYS` name; None values last; ties by class index."""
    field, descending = SORT_KEYS[key]

    def k(row):
        v = row[field]
        missing = v is None
        if descending and not missing and not isinstance(v, str):
            v = -v
        return (missing, v if not missing else 0, row["index"])

    return sorted(rows, key=k)


def dataset_stats(prepared, split: str = "train") -> dict:
    """Images per split plus `label_stats` of one split of a loaded prepared folder ("all": every split)."""
    splits = {s: len(prepared.split_data(s)) for s in ("train", "val", "test")}
    if split == "all":
        parts = [prepared.split_data(s) for s in ("train", "val", "test")]
        truth = np.concatenate([p.truth for p in parts])
        observed = np.concatenate([p.observed for p in parts])
    else:
        data = prepared.split_data(split)
        truth, observed = data.truth, data.observed
    out = label_stats(truth, observed, prepared.classes)
    out["summary"] = {"split": split, "images_per_split": splits, **out["summary"]}
    return {
        "path": str(prepared.path),
        "manifest_hash": prepared.manifest_hash,
        "corruptions": [s["step"] for s in prepared.manifest.get("corruptions", [])],
        **out,
    }


def class_counts(prepared) -> list[dict]:
    """Every class with its true positives in each split (`pumlc stats DIR --classes`)."""
    parts = {s: prepared.split_data(s) for s in ("train", "val", "test")}
    totals = {
        s: (p.truth == 1).sum(axis=0) if len(p) else np.zeros(len(prepared.classes), int) for s, p in parts.items()
    }
    return [
        {"index": j, "class": name, **{s: int(totals[s][j]) for s in parts}} for j, name in enumerate(prepared.classes)
    ]
