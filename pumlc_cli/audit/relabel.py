"""`pumlc relabel`: a new prepared folder whose observed labels take accepted audit suggestions.

Accepted missing positives become observed positives; accepted wrong positives become unknown (not negative: the
audit says the label is doubtful, not that the class is absent). The truth columns and the test split are never
changed, so a model trained on the new folder is judged on the same test labels as before. The step is appended to
the manifest's label steps (`corruptions`, which `pumlc stats` lists) with the audit file's sha256 and the counts
per class.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pumlc_cli.data.readers import csv_rows
from pumlc_cli.errors import PumlcError
from pumlc_cli.inputs import read_input

REQUIRED = ("kind", "rank", "image", "split", "class", "score", "observed")
NEW_VALUE = {"missing": 1, "wrong": 0}


@dataclass(frozen=True)
class Suggestion:
    kind: str
    rank: int
    row: int  # row of the prepared folder's table
    col: int  # class index
    score: float
    in_sample: bool = False  # the model trained on the image (the audit CSV's `in_sample`)
    upper_bound: bool = False  # a missing-positive score with c estimated (a lower bound): an upper bound


@dataclass(frozen=True)
class Selection:
    """Which suggestions to accept: kinds, the top K of each kind, a score floor, a class subset."""

    kinds: tuple[str, ...]
    accept_top: int | None
    min_score: float | None
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Change:
    """What accepting the suggestions would do, shown (and checked) before anything is written."""

    accepted: list[Suggestion]
    added: int  # observed positives gained (accepted missing positives)
    removed: int  # observed positives made unknown (accepted wrong positives)
    observed_positives: int  # before, over the train and val images
    images: int  # train and val images

    @property
    def expected_correct(self) -> float:
        """Each score estimates the probability that its change is right; their sum, the right changes expected."""
        return float(sum(s.score for s in self.accepted))

    @property
    def expected_precision(self) -> float | None:
        return self.expected_correct / len(self.accepted) if self.accepted else None

    def per_image(self) -> tuple[float, float]:
        """Observed positives per train/val image, before and after."""
        n = max(self.images, 1)
        return self.observed_positives / n, (self.observed_positives + self.added - self.removed) / n

    def summary(self) -> str:
        before, after = self.per_image()
        precision = self.expected_precision
        said = "-" if precision is None else f"{100 * precision:.1f}%"
        return (
            f"relabel: {self.added} positive(s) added, {self.removed} removed (made unknown); expected right "
            f"{self.expected_correct:.1f} of {len(self.accepted)} (expected precision {said}); observed positives "
            f"per image {before:.2f} → {after:.2f}"
        )

    def untrusted(self) -> str | None:
        """What makes the accepted scores overstate by construction (in-sample, or c estimated), or None."""
        in_sample = sum(s.in_sample for s in self.accepted)
        bounded = sum(s.upper_bound for s in self.accepted)
        parts = []
        if in_sample:
            parts.append(f"{in_sample} are in-sample (score out of fold: `pumlc audit --folds K`)")
        if bounded:
            parts.append(
                f"{bounded} are upper bounds (the audit estimated c, a lower bound: `pumlc audit --label-frequency C` "
                "from a checked sample)"
            )
        if not parts:
            return None
        return f"of {len(self.accepted)} accepted scores, {'; '.join(parts)}: the expected precision is too high"

    def refusal(self, min_precision: float) -> str | None:
        """Why writing would probably damage the labels (or do nothing), or None.

        Scores that overstate by construction are refused too: on the README's worked example, the 23 in-sample,
        estimated-c scores >= 0.8 said 87.8% and were right 65.2% of the time, and out of fold with c still
        estimated 77 said 86.2% and were right 45.5%. An expected precision from them is not one to act on."""
        if not self.accepted:
            return "no suggestion passes the selection (--min-score, --accept-top, --kind, --classes): nothing to write"
        if self.added > self.observed_positives:
            return (
                f"relabel would add {self.added} positives to a dataset observing {self.observed_positives}: more "
                "than doubling its labels; accept fewer (--min-score, --accept-top) or pass --force"
            )
        untrusted = self.untrusted()
        if untrusted:
            return f"{untrusted}; pass --force to write anyway"
        precision = self.expected_correct / len(self.accepted)
        if precision < min_precision:
            return (
                f"the accepted changes' expected precision {100 * precision:.1f}% is below --min-precision "
                f"{100 * min_precision:g}%; raise --min-score or pass --force"
            )
        return None


def read_suggestions(path: Path, prepared) -> list[Suggestion]:
    """Rows of an audit CSV, checked against the prepared folder; a mismatch names the line and stops."""
    path = Path(path)
    try:  # a byte-order mark (a spreadsheet's "CSV UTF-8") is not part of the first column's name
        text = read_input(path, "audit CSV").decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PumlcError(f"{path}: not a UTF-8 text file") from None
    rows = csv_rows(text, path)
    fieldnames = next(rows, None) or []
    missing = [c for c in REQUIRED if c not in fieldnames]
    if missing:
        raise PumlcError(f"{path}: not an audit CSV (missing columns {', '.join(missing)})")
    records = [dict(zip(fieldnames, values, strict=False)) for values in rows]
    class_index = {c: j for j, c in enumerate(prepared.classes)}
    # every line's image row and observed label in one pass over the folder (millions of images at Open Images
    # scale: no per-image Python objects, no per-line search of the label entries)
    where, here_all = _rows_and_observed(prepared, records, class_index)
    out: list[Suggestion] = []
    seen: set[tuple[int, int]] = set()
    for line, rec in enumerate(records, start=2):
        at = f"{path}: line {line}"
        kind, split, image, name = (rec.get(c, "") for c in ("kind", "split", "image", "class"))
        if kind not in NEW_VALUE:
            raise PumlcError(f"{at}: kind {kind!r} is not missing or wrong")
        if split not in ("train", "val"):
            raise PumlcError(f"{at}: split {split!r} cannot be relabelled (only train and val)")
        if where[line - 2] < 0:
            raise PumlcError(f"{at}: image {image!r} is not in the {split} split of {prepared.path}")
        if name not in class_index:
            raise PumlcError(f"{at}: class {name!r} is not a class of {prepared.path}")
        try:
            rank, score, obs = int(rec["rank"]), float(rec["score"]), int(rec["observed"])
        except ValueError:
            raise PumlcError(f"{at}: rank, score and observed must be numbers") from None
        row, col = int(where[line - 2]), class_index[name]
        here = int(here_all[line - 2])
        if here != obs:
            raise PumlcError(
                f"{at}: {image} / {name} is observed {here} here but {obs} in the audit "
                "(the audit was made on other labels)"
            )
        if (row, col) in seen:
            raise PumlcError(f"{at}: {image} / {name} is listed twice")
        seen.add((row, col))
        # columns added later (older audit CSVs lack them): how far the scores can be trusted
        in_sample = rec.get("in_sample", "0") == "1"
        upper_bound = kind == "missing" and rec.get("label_frequency") == "estimated"
        out.append(Suggestion(kind, rank, row, col, score, in_sample, upper_bound))
    return out


def _rows_and_observed(prepared, records: list[dict], class_index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per audit line: the image's row in the folder (-1 where the image is not in the line's split) and its
    observed label at the line's class (0 where either is unknown)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = prepared.images_table.column("image").combine_chunks()
    found = pc.index_in(pa.array([r.get("image", "") for r in records], pa.string()), value_set=names)
    where = np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    split_of = prepared.split_column[np.maximum(where, 0)] if len(where) else np.zeros(0, str)
    where[(where >= 0) & (split_of != np.array([r.get("split", "") for r in records], dtype=str))] = -1
    cols = np.array([class_index.get(r.get("class", ""), -1) for r in records], dtype=np.int64)
    known = (where >= 0) & (cols >= 0)
    observed = np.zeros(len(records), dtype=np.int8)
    observed[known] = prepared.observed_at(where[known], cols[known])
    return where, observed


def select(suggestions: list[Suggestion], sel: Selection, classes: list[str]) -> list[Suggestion]:
    """The accepted suggestions: wanted kind and class, score ≥ min_score, then the best `accept_top` per kind."""
    unknown = [c for c in sel.classes if c not in classes]
    if unknown:
        raise PumlcError(f"--classes: {', '.join(unknown)} not among the classes ({', '.join(classes[:8])}, …)")
    wanted = {classes.index(c) for c in sel.classes} if sel.classes else set(range(len(classes)))
    accepted: list[Suggestion] = []
    for kind in sel.kinds:
        rows = [s for s in suggestions if s.kind == kind and s.col in wanted]
        if sel.min_score is not None:
            rows = [s for s in rows if s.score >= sel.min_score]
        rows.sort(key=lambda s: s.rank)
        accepted += rows[: sel.accept_top] if sel.accept_top is not None else rows
    return accepted


def plan_change(prepared, audit_csv: Path, sel: Selection) -> Change:
    """The accepted suggestions and what they would change; nothing is written."""
    if sel.accept_top is None and sel.min_score is None:
        raise PumlcError("pass --accept-top K or --min-score S (which suggestions to accept)")
    accepted = select(read_suggestions(audit_csv, prepared), sel, list(prepared.classes))
    parts = [prepared.split_entries(name) for name in ("train", "val")]
    return Change(
        accepted,
        added=sum(s.kind == "missing" for s in accepted),
        removed=sum(s.kind == "wrong" for s in accepted),
        observed_positives=sum(_observed_positives(part) for part in parts),
        images=sum(len(part) for part in parts),
    )


def _observed_positives(part) -> int:
    """A split's observed positives counted on its entries (absent ones by the split's rule): no images x classes
    matrix, so relabel works on Open Images too."""
    absent = len(part) * part.num_classes - len(part.classes)
    return int((part.observed == 1).sum()) + (absent if part.absent_observed == 1 else 0)


def relabel(
    prepared,
    audit_csv: Path,
    out: Path,
    sel: Selection,
    change: Change,
    force: bool = False,
    min_precision: float = 0.5,
) -> dict:
    """Write the relabelled folder (atomically, beside `out`) with `change` accepted, and return its manifest.

    A change that `Change.refusal` calls damaging is refused unless `force`, which the manifest then records."""
    from pumlc_cli.data.entries import with_observed
    from pumlc_cli.data.prepared import store_of, write_prepared

    if Path(out).resolve() == Path(prepared.path).resolve():
        raise PumlcError(f"{out}: is the source folder; relabel writes a new one")
    refusal = change.refusal(min_precision)
    if refusal and not force:
        raise PumlcError(refusal)
    accepted = change.accepted
    counts: dict[str, dict[str, int]] = {}
    for s in accepted:
        entry = counts.setdefault(prepared.classes[s.col], {"added_positives": 0, "removed_positives": 0})
        entry["added_positives" if s.kind == "missing" else "removed_positives"] += 1
    source = store_of(prepared)
    entries = with_observed(
        source.entries,
        len(prepared.classes),
        np.array([s.row for s in accepted], dtype=np.int64),
        np.array([s.col for s in accepted], dtype=np.int64),
        np.array([NEW_VALUE[s.kind] for s in accepted], dtype=np.int8),
        (prepared.absent_truth, prepared.absent_observed_per_image()),
    )
    manifest = json.loads(json.dumps(prepared.manifest))
    manifest.setdefault("corruptions", []).append(
        {
            "step": "relabel",
            "source": str(prepared.path),
            "source_manifest_sha256": prepared.manifest_hash,
            "audit_file": str(audit_csv),
            "audit_sha256": hashlib.sha256(read_input(audit_csv, "audit CSV")).hexdigest(),
            "kinds": list(sel.kinds),
            "accept_top": sel.accept_top,
            "min_score": sel.min_score,
            "classes": list(sel.classes) or None,
            "accepted": len(accepted),
            "expected_correct": round(change.expected_correct, 3),
            "expected_precision": None if change.expected_precision is None else round(change.expected_precision, 4),
            "min_precision": min_precision,
            "forced_past": refusal,
            "score_warning": change.untrusted(),
            "per_class": dict(sorted(counts.items())),
        }
    )
    cache = manifest.get("image_cache")
    populate = None
    if cache:
        source_cache = Path(prepared.path) / cache["dir"]

        def populate(tmp: Path) -> None:
            shutil.copytree(source_cache, tmp / cache["dir"], copy_function=_link_or_copy)

    write_prepared(Path(out), replace(source, entries=entries), manifest, force=force, populate=populate)
    return manifest


def _link_or_copy(src: str, dst: str) -> None:
    """Hard links share the cached JPEGs without doubling the disk use; copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
