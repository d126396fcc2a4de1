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

from dataclasses import dataclass

import numpy as np

from pumlc_cli.data.entries import SplitEntries

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


PAIRS = [(t, o) for t in (-1, 0, 1) for o in (-1, 0, 1)]


@dataclass
class Counts:
    """Per-class counts of every (truth, observed) pair and the positives per image: all that the statistics
    need, summed over the entries plus the absent entries of each split (never an images x classes matrix)."""

    pairs: dict[tuple[int, int], np.ndarray]  # (truth, observed) -> [C] counts
    card_truth: np.ndarray  # true positives per image
    card_observed: np.ndarray  # observed positives per image

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            {k: self.pairs[k] + other.pairs[k] for k in PAIRS},
            np.concatenate([self.card_truth, other.card_truth]),
            np.concatenate([self.card_observed, other.card_observed]),
        )


def split_counts(part: SplitEntries) -> Counts:
    """`Counts` of one split from its entries and its absent pair."""
    c, n = part.num_classes, len(part)
    cls, t, o = part.classes, part.truth, part.observed
    per_class = np.bincount(cls, minlength=c)
    pairs = {(a, b): np.bincount(cls[(t == a) & (o == b)], minlength=c).astype(np.int64) for a, b in PAIRS}
    pairs[(part.absent_truth, part.absent_observed)] += n - per_class
    rows = part.rows
    per_image = np.diff(part.indptr)

    def card(values: np.ndarray, absent: int) -> np.ndarray:
        out = np.bincount(rows[values == 1], minlength=n).astype(np.int64)
        return out + (c - per_image) if absent == 1 else out

    return Counts(pairs, card(t, part.absent_truth), card(o, part.absent_observed))


def label_stats(truth: np.ndarray, observed: np.ndarray, classes: list[str]) -> dict:
    """Summary, per-class rows and positives-per-image histograms for one dense (truth, observed) pair."""
    truth = np.asarray(truth, dtype=np.int8)
    observed = np.asarray(observed, dtype=np.int8)
    n, c = truth.shape
    cls = np.tile(np.arange(c, dtype=np.int32), n)
    indptr = np.arange(n + 1, dtype=np.int64) * c
    part = SplitEntries([""] * n, indptr, cls, truth.ravel(), observed.ravel(), c, -1, -1)
    return counts_stats(split_counts(part), classes)


def counts_stats(counts: Counts, classes: list[str]) -> dict:
    """Summary, per-class rows and positives-per-image histograms from `Counts`."""
    p = counts.pairs
    n, c = len(counts.card_truth), len(classes)

    def total(keep) -> np.ndarray:
        return sum((p[k] for k in PAIRS if keep(*k)), np.zeros(c, np.int64))

    tp, tn = total(lambda t, o: t == 1), total(lambda t, o: t == -1)
    op, on, unk = total(lambda t, o: o == 1), total(lambda t, o: o == -1), total(lambda t, o: o == 0)
    hidden_pos, hidden_neg = p[(1, 0)], p[(-1, 0)]
    false_neg, false_pos, correct = p[(1, -1)], p[(-1, 1)], p[(1, 1)]
    entries = n * c
    summary = {
        "images": int(n),
        "classes": int(c),
        "label_cardinality": _ratio(tp.sum(), n),
        "label_density": _ratio(tp.sum(), entries),
        "observed_cardinality": _ratio(op.sum(), n),
        "observed_positive_share": _ratio(op.sum(), entries),
        "observed_negative_share": _ratio(on.sum(), entries),
        "observed_unknown_share": _ratio(unk.sum(), entries),
        "truth_unknown_entries": int(total(lambda t, o: t == 0).sum()),
        "hidden_positives": int(hidden_pos.sum()),
        "hidden_negatives": int(hidden_neg.sum()),
        "false_negatives": int(false_neg.sum()),
        "false_positives": int(false_pos.sum()),
        "observed_positive_recall": _ratio(correct.sum(), tp.sum()),
        "truth_equals_observed": not any(p[(t, o)].any() for t, o in PAIRS if t != o),
    }
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
        "histogram": {"truth": _hist(counts.card_truth), "observed": _hist(counts.card_observed)},
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
    """Images per split plus the statistics of one split of a loaded prepared folder ("all": every split), from
    the label entries."""
    splits = {s: len(prepared.split_entries(s)) for s in ("train", "val", "test")}
    names = ("train", "val", "test") if split == "all" else (split,)
    counts = split_counts(prepared.split_entries(names[0]))
    for name in names[1:]:
        counts = counts + split_counts(prepared.split_entries(name))
    out = counts_stats(counts, prepared.classes)
    out["summary"] = {"split": split, "images_per_split": splits, **out["summary"]}
    return {
        "path": str(prepared.path),
        "manifest_hash": prepared.manifest_hash,
        "corruptions": [s["step"] for s in prepared.manifest.get("corruptions", [])],
        "absent_truth": prepared.manifest["labels"]["absent_truth"],
        **out,
    }


def class_counts(prepared) -> list[dict]:
    """Every class with its true positives in each split (`pumlc stats DIR --classes`)."""
    totals = {}
    for s in ("train", "val", "test"):
        pairs = split_counts(prepared.split_entries(s)).pairs
        totals[s] = pairs[(1, -1)] + pairs[(1, 0)] + pairs[(1, 1)]
    return [
        {"index": j, "class": name, **{s: int(totals[s][j]) for s in totals}} for j, name in enumerate(prepared.classes)
    ]
