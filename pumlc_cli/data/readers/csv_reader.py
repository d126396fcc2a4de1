"""A user's own labels: CSV files with a header holding `image` and `labels` columns, optionally `negatives`.

`labels` lists an image's classes separated by `sep` (default: whitespace); an empty field means no class.
A row with more fields than the header is refused, not cut: `img,a,b` is two labels split by an unquoted comma.
Without a `negatives` column every listed class is a positive and every other class a negative. With one, it lists
the classes checked absent (verified negatives) and every class in neither field is unknown (0), in the truth
too: a CSV that lists only some positives then says so instead of inventing negatives. Train and test files must
agree on the column, or one file's unlisted classes would be negatives and the other's unknown. The user's labels
are the truth, so truth and observed coincide unless `prepare` corrupts them. Classes are given (`--classes`: a
file with one name per line, or comma-separated names) or inferred as the sorted union of all names in the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pumlc_cli.data.readers import (
    LabelTable,
    contained_name,
    csv_rows,
    read_source,
    refuse_duplicates,
    source_record,
)
from pumlc_cli.errors import PumlcError


def parse_class_list(spec: str) -> list[str]:
    """`--classes`: an existing file (one name per line) or comma-separated names."""
    path = Path(spec)
    if path.is_file():
        names = [line.strip() for line in read_source(path, "class list").decode("utf-8").splitlines()]
        where = str(path)
    else:
        names = [s.strip() for s in spec.split(",")]
        where = "--classes"
    names = [n for n in names if n]
    if not names:
        raise PumlcError(f"{where}: no class names")
    if len(set(names)) != len(names):
        raise PumlcError(f"{where}: a class name is listed twice")
    return names


@dataclass(frozen=True)
class _Row:
    image: str
    positives: list[str]
    negatives: list[str]  # empty without a `negatives` column
    line_no: int


def _names(field: str, sep: str | None) -> list[str]:
    names = field.split() if sep is None else [s.strip() for s in field.split(sep)]
    return [s for s in names if s]


def _rows(path: Path, sep: str | None) -> tuple[list[_Row], bool, bytes]:
    """The file's rows and whether it has a `negatives` column."""
    data = read_source(path, "CSV label file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PumlcError(f"{path}: not a UTF-8 text file") from None
    reader = csv_rows(text, path)
    header = next(reader, None)
    if header is None:
        raise PumlcError(f"{path}: empty file (expected a header with columns image,labels)")
    cols = [h.strip().lower() for h in header]
    if "image" not in cols or "labels" not in cols:
        raise PumlcError(f"{path}: header must have columns 'image' and 'labels', got {','.join(header)}")
    ci, cl = cols.index("image"), cols.index("labels")
    cn = cols.index("negatives") if "negatives" in cols else None
    out = []
    for line_no, rec in enumerate(reader, start=2):
        if not rec or all(not f.strip() for f in rec):
            continue
        if len(rec) <= max(ci, cl, cn or 0):
            raise PumlcError(f"{path}:{line_no}: expected {len(header)} fields, got {len(rec)}")
        if any(f.strip() for f in rec[len(header) :]):  # `img,a,b`: the labels were split by an unquoted comma
            raise PumlcError(
                f"{path}:{line_no}: {len(rec)} fields but the header has {len(header)} ({','.join(header)}); "
                'quote a field that holds commas ("a,b") or separate labels with spaces'
            )
        image = rec[ci].strip()
        if not image:
            raise PumlcError(f"{path}:{line_no}: empty image path")
        negatives = _names(rec[cn], sep) if cn is not None else []
        out.append(_Row(image, _names(rec[cl], sep), negatives, line_no))
    return out, cn is not None, data


def _check_syntax(parsed: list[tuple[str, Path, list[_Row], bool, bytes]], classes: list[str] | None) -> None:
    """One-line refusals for the ways a CSV can say contradictory things about a label."""
    with_neg = [path for _, path, _, has, _ in parsed if has]
    if with_neg and len(with_neg) < len(parsed):
        other = next(path for _, path, _, has, _ in parsed if not has)
        raise PumlcError(
            f"{other}: has no 'negatives' column but {with_neg[0]} has one (unlisted classes would be negatives in "
            "one file and unknown in the other); add the column to both, empty where nothing was checked"
        )
    known = set(classes or [])
    for _, path, rows, has_neg, _ in parsed:
        for row in rows:
            where = f"{path}:{row.line_no}"
            for name in (*row.positives, *row.negatives):
                if name.startswith("-") and name not in known:
                    hint = "list it in the 'negatives' column" if has_neg else "add a 'negatives' column listing it"
                    raise PumlcError(
                        f"{where}: {name!r}: a '-name' is not a class; to mark {name[1:]!r} as checked absent, {hint}"
                    )
            both = sorted(set(row.positives) & set(row.negatives))
            if both:
                raise PumlcError(f"{where}: class {both[0]!r} is both in labels and in negatives")


def read_csv_labels(
    train: Path, test: Path | None, images: Path, sep: str = " ", classes: list[str] | None = None
) -> LabelTable:
    """Read the train (-> train/val) and optional test (-> test) CSV files; paths relative to `images`."""
    split_sep = None if sep.strip() == "" else sep
    root = Path(images).resolve()
    files = [("train", Path(train))] + ([("test", Path(test))] if test is not None else [])
    parsed = [(part, path, *_rows(path, split_sep)) for part, path in files]
    for _, path, rows, _, _ in parsed:
        if not rows:
            raise PumlcError(f"{path}: lists no images")
    _check_syntax(parsed, classes)
    verified = parsed[0][3]
    if classes is None:
        given = False
        classes = sorted({n for _, _, rows, _, _ in parsed for r in rows for n in (*r.positives, *r.negatives)})
        if not classes:
            raise PumlcError(f"{train}: no labels found, cannot infer the classes (give --classes)")
    else:
        given = True
    index = {name: i for i, name in enumerate(classes)}
    names, part_col, truths, sources, origins = [], [], [], [], []
    for part, path, rows, _, data in parsed:
        truth = np.full((len(rows), len(classes)), 0 if verified else -1, dtype=np.int8)
        for r, row in enumerate(rows):
            where = f"{path}:{row.line_no}"
            for listed, value, field in ((row.positives, 1, "labels"), (row.negatives, -1, "negatives")):
                for name in listed:
                    cls = index.get(name)
                    if cls is None:
                        raise PumlcError(f"{where}: unknown class name {name!r} in {field} (not in --classes)")
                    truth[r, cls] = value
            image = row.image
            if Path(image).is_absolute():
                try:
                    image = Path(image).resolve().relative_to(root).as_posix()
                except ValueError:
                    raise PumlcError(f"{where}: {image} is not under the image folder {root}") from None
            names.append(contained_name(image, where))
            origins.append(where)
        part_col += [part] * len(rows)
        truths.append(truth)
        sources.append(source_record(f"{part}_labels", path, data))
    refuse_duplicates(names, lambda i: origins[i])
    truth = np.concatenate(truths)
    return LabelTable(
        classes=list(classes),
        images=names,
        part=np.array(part_col, dtype=str),
        truth=truth,
        # with verified negatives, a row listing only negatives is annotated (not an "empty image")
        empty=~(truth != 0).any(axis=1) if verified else ~(truth == 1).any(axis=1),
        image_root=root,
        sources=sources,
        info={
            "reader": "csv",
            "class_source": "given" if given else "inferred",
            "label_separator": sep,
            "policies": {"absent_class": "unknown" if verified else "negative"},
        },
    )
