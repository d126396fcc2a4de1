"""A user's own labels: CSV files with a header holding `image` and `labels` columns.

`labels` lists an image's classes separated by `sep` (default: whitespace); an empty field means no class.
Every listed class is a positive and every other class a negative: the user's labels are the truth, so truth
and observed coincide unless `prepare` corrupts them. Classes are given (`--classes`: a file with one name per
line, or comma-separated names) or inferred as the sorted union of all names in the train and test files.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from pumlc_cli.data.readers import (
    LabelTable,
    contained_name,
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


def _rows(path: Path, sep: str | None) -> tuple[list[tuple[str, list[str], int]], bytes]:
    data = read_source(path, "CSV label file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PumlcError(f"{path}: not a UTF-8 text file") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise PumlcError(f"{path}: empty file (expected a header with columns image,labels)")
    cols = [h.strip().lower() for h in header]
    if "image" not in cols or "labels" not in cols:
        raise PumlcError(f"{path}: header must have columns 'image' and 'labels', got {','.join(header)}")
    ci, cl = cols.index("image"), cols.index("labels")
    out = []
    for line_no, rec in enumerate(reader, start=2):
        if not rec or all(not f.strip() for f in rec):
            continue
        if len(rec) <= max(ci, cl):
            raise PumlcError(f"{path}:{line_no}: expected {len(header)} fields, got {len(rec)}")
        image = rec[ci].strip()
        if not image:
            raise PumlcError(f"{path}:{line_no}: empty image path")
        field = rec[cl]
        labels = field.split() if sep is None else [s.strip() for s in field.split(sep)]
        out.append((image, [s for s in labels if s], line_no))
    return out, data


def read_csv_labels(
    train: Path, test: Path | None, images: Path, sep: str = " ", classes: list[str] | None = None
) -> LabelTable:
    """Read the train (-> train/val) and optional test (-> test) CSV files; paths relative to `images`."""
    split_sep = None if sep.strip() == "" else sep
    root = Path(images).resolve()
    files = [("train", Path(train))] + ([("test", Path(test))] if test is not None else [])
    parsed = [(part, path, *_rows(path, split_sep)) for part, path in files]
    for _, path, rows, _ in parsed:
        if not rows:
            raise PumlcError(f"{path}: lists no images")
    if classes is None:
        given = False
        classes = sorted({lab for _, _, rows, _ in parsed for _, labs, _ in rows for lab in labs})
        if not classes:
            raise PumlcError(f"{train}: no labels found, cannot infer the classes (give --classes)")
    else:
        given = True
    index = {name: i for i, name in enumerate(classes)}
    names, part_col, truths, sources, origins = [], [], [], [], []
    for part, path, rows, data in parsed:
        truth = np.full((len(rows), len(classes)), -1, dtype=np.int8)
        for r, (image, labs, line_no) in enumerate(rows):
            for lab in labs:
                cls = index.get(lab)
                if cls is None:
                    raise PumlcError(f"{path}:{line_no}: unknown class name {lab!r} (not in --classes)")
                truth[r, cls] = 1
            where = f"{path}:{line_no}"
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
        empty=~(truth == 1).any(axis=1),
        image_root=root,
        sources=sources,
        info={
            "reader": "csv",
            "class_source": "given" if given else "inferred",
            "label_separator": sep,
            "policies": {"absent_class": "negative"},
        },
    )
