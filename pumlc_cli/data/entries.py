"""The sparse label store: labels as entries (image, class, truth, observed) plus a rule for absent entries.

Why entries: a dense int8 image x class matrix costs N x C bytes twice (86 GB for Open Images' 9M x 9,605), while
the labels anyone stated are a few per image. Every prepared folder stores only the entries whose (truth, observed)
pair differs from its split's *absent pair*; an absent entry reads as that pair:
- absent truth: `negative` (-1) for exhaustive annotations (COCO, VOC, CSV, synth: a class not listed is absent from
  the image), `unknown` (0) for Open Images (only verified labels are known);
- absent observed, per split: the observed value most of the split's absent-truth entries take (ties go to the
  absent truth). So a split without corruption stores only its positives, and one whose negatives were hidden or
  stripped stores only what is still observed. Open Images: always `unknown`.
Entries are sorted by (image, class) with no duplicates, so the same labels always give the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pumlc_cli.errors import PumlcError

LABEL_NAMES = {1: "positive", -1: "negative", 0: "unknown"}
LABEL_VALUES = {name: value for value, name in LABEL_NAMES.items()}
# split_data() refuses to hold a split densely beyond this many (image, class) entries per matrix.
DENSE_LIMIT = 1 << 28


@dataclass(frozen=True)
class Entries:
    """Stated labels, sorted by (image, class): parallel arrays of one entry each."""

    image: np.ndarray  # int32 [E]
    cls: np.ndarray  # int32 [E]
    truth: np.ndarray  # int8 [E]
    observed: np.ndarray  # int8 [E]

    def __len__(self) -> int:
        return len(self.image)

    def take(self, keep: np.ndarray) -> Entries:
        """The entries selected by a boolean mask or an index array (order kept)."""
        return Entries(self.image[keep], self.cls[keep], self.truth[keep], self.observed[keep])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.image, self.cls, self.truth, self.observed))


def empty_entries() -> Entries:
    return Entries(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int8), np.zeros(0, np.int8))


def sort_entries(image: np.ndarray, cls: np.ndarray, truth: np.ndarray, observed: np.ndarray) -> Entries:
    """Entries in (image, class) order (stable, one radix-friendly sort on a combined int64 key)."""
    key = image.astype(np.int64) << 32 | cls.astype(np.int64)
    order = np.argsort(key, kind="stable")
    return Entries(
        image[order].astype(np.int32),
        cls[order].astype(np.int32),
        truth[order].astype(np.int8),
        observed[order].astype(np.int8),
    )


def from_dense(truth: np.ndarray, observed: np.ndarray, absent_truth: int, absent_observed: np.ndarray) -> Entries:
    """The entries of dense [N, C] matrices whose (truth, observed) differ from the absent pair; `absent_observed`
    holds one value per row (its split's). Row-major, so already sorted."""
    keep = (truth != absent_truth) | (observed != absent_observed[:, None])
    image, cls = np.nonzero(keep)
    return Entries(image.astype(np.int32), cls.astype(np.int32), truth[keep], observed[keep])


def absent_observed_value(truth: np.ndarray, observed: np.ndarray, absent_truth: int) -> int:
    """The observed value most entries with the absent truth take (ties: the absent truth itself)."""
    values = observed[truth == absent_truth]
    counts = {v: int(np.count_nonzero(values == v)) for v in (-1, 0, 1)}
    best = max(counts.values())
    return absent_truth if counts[absent_truth] == best else max(counts, key=lambda v: (counts[v], -abs(v)))


@dataclass(frozen=True)
class SplitEntries:
    """One split's labels as CSR rows: image i's entries are [indptr[i], indptr[i+1]) of `classes`/`truth`/`observed`;
    every other class of the image reads as (absent_truth, absent_observed)."""

    images: Sequence[str]
    indptr: np.ndarray  # int64 [n+1]
    classes: np.ndarray  # int32 [E]
    truth: np.ndarray  # int8 [E]
    observed: np.ndarray  # int8 [E]
    num_classes: int
    absent_truth: int
    absent_observed: int

    def __len__(self) -> int:
        return len(self.images)

    @property
    def rows(self) -> np.ndarray:
        """The local image index of every entry."""
        return np.repeat(np.arange(len(self.images), dtype=np.int64), np.diff(self.indptr))

    def values(self, which: str) -> np.ndarray:
        return self.truth if which == "truth" else self.observed

    def fill(self, which: str) -> int:
        return self.absent_truth if which == "truth" else self.absent_observed

    def dense(self, which: str, where: str = "split") -> np.ndarray:
        """The [n, C] int8 matrix of `truth` or `observed` (refused beyond `DENSE_LIMIT` entries)."""
        n, c = len(self.images), self.num_classes
        if n * c > DENSE_LIMIT:
            raise PumlcError(
                f"{where}: {n:,} images x {c:,} classes is too large to hold as a dense matrix; this step supports "
                "data of that size only through the sparse entries"
            )
        out = np.full((n, c), self.fill(which), dtype=np.int8)
        out[self.rows, self.classes] = self.values(which)
        return out


def split_of(entries: Entries, in_split: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indptr over the split's rows, positions of its entries) for the images where `in_split` is true, in order."""
    rows = np.flatnonzero(in_split)
    local = np.full(len(in_split), -1, dtype=np.int64)
    local[rows] = np.arange(len(rows))
    pick = np.flatnonzero(in_split[entries.image]) if len(entries) else np.zeros(0, np.int64)
    counts = np.bincount(local[entries.image[pick]], minlength=len(rows)) if len(rows) else np.zeros(0, np.int64)
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, pick


def reindex(entries: Entries, keep_images: np.ndarray) -> Entries:
    """Entries of the kept images (a boolean mask over images), image indices renumbered in order."""
    new_index = np.cumsum(keep_images, dtype=np.int64) - 1
    sub = entries.take(keep_images[entries.image]) if len(entries) else entries
    return Entries(new_index[sub.image].astype(np.int32), sub.cls, sub.truth, sub.observed)


def lookup(entries: Entries, n_classes: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Position of each (row, col) among the entries, -1 where absent (one binary search per query)."""
    keys = entries.image.astype(np.int64) * n_classes + entries.cls
    want = np.asarray(rows, dtype=np.int64) * n_classes + np.asarray(cols, dtype=np.int64)
    pos = np.searchsorted(keys, want)
    found = pos < len(keys)
    found[found] = keys[pos[found]] == want[found]
    return np.where(found, pos, -1)


def with_observed(
    entries: Entries, n_classes: int, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, absent: tuple
) -> Entries:
    """Entries with observed set to `values` at (rows, cols); `absent` = (absent truth, absent observed per image)
    gives the truth of new entries and tells which entries now equal the absent pair (and so are dropped)."""
    absent_truth, absent_observed = absent
    pos = lookup(entries, n_classes, rows, cols)
    observed = entries.observed.copy()
    observed[pos[pos >= 0]] = np.asarray(values)[pos >= 0]
    new = pos < 0
    rows, cols = np.asarray(rows)[new], np.asarray(cols)[new]
    merged = sort_entries(
        np.concatenate([entries.image, rows]).astype(np.int32),
        np.concatenate([entries.cls, cols]).astype(np.int32),
        np.concatenate([entries.truth, np.full(len(rows), absent_truth, np.int8)]),
        np.concatenate([observed, np.asarray(values, dtype=np.int8)[new]]),
    )
    keep = (merged.truth != absent_truth) | (merged.observed != absent_observed[merged.image])
    return merged.take(keep)
