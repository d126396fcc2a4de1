"""MS-COCO instances files (2014, 2017 or any subset in that schema) to image-level labels.

The file is parsed as `pycocotools.coco.COCO` parses it (one `json` load of the whole file, same schema), but
(a) the cyclic garbage collector is paused during the parse and (b) the image x class matrix is built with
numpy instead of pycocotools' per-annotation index loops, so reading a val2014-sized file costs less than
`COCO(path)` even though we also hash it (see bench/prepare.py).

Policies (recorded in the manifest):
- every image listed in `images` is a row, in file order, including images without annotations ("empty";
  `prepare --empty-images` decides whether they are kept; default yes, as HCP-MLR-PL and PU-MLC do);
- crowd annotations (`iscrowd: 1`) count as positives, like any other annotation of the class;
- a class absent from an image is a negative (COCO annotations are exhaustive at image level).
- class order: when the file's categories are exactly COCO's 80 (same ids and names), the contiguous index
  of `datasets_meta/coco2014.json`; otherwise the file's own categories sorted by id.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import numpy as np

from pumlc_cli.data.meta import coco_categories
from pumlc_cli.data.readers import (
    LabelTable,
    contained_name,
    read_source,
    refuse_duplicates,
    source_record,
)
from pumlc_cli.errors import PumlcError

_INT64 = (-(2**63), 2**63 - 1)


def _int_ids(path: Path, section: str, key: str, values: list) -> np.ndarray:
    """JSON ids as int64; a float, bool, string, null or out-of-range value is refused (numpy would silently
    truncate 1.7 to 1 and read `true` as 1)."""
    if set(map(type, values)) - {int}:
        bad = next(v for v in values if type(v) is not int)
        raise PumlcError(f"{path}: '{section}' {key} must be an integer, got {json.dumps(bad)}")
    if values and (min(values) < _INT64[0] or max(values) > _INT64[1]):
        bad = next(v for v in values if not _INT64[0] <= v <= _INT64[1])
        raise PumlcError(f"{path}: '{section}' {key} {bad} is outside the 64-bit integer range")
    return np.array(values, dtype=np.int64)


def _load_json(path: Path) -> tuple[dict, bytes]:
    data = read_source(path, "COCO annotation file")
    # The parse allocates millions of small containers and no reference cycles; with the cyclic collector on,
    # its repeated full passes over the growing heap cost about a third of the load on val2014-sized files.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        doc = json.loads(data)
    except UnicodeDecodeError as err:
        raise PumlcError(f"{path}: not a UTF-8 JSON file ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise PumlcError(f"{path}: malformed JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except RecursionError:
        raise PumlcError(f"{path}: malformed JSON (nested too deeply)") from None
    finally:
        if was_enabled:
            gc.enable()
    if not isinstance(doc, dict):
        raise PumlcError(f"{path}: not a COCO instances file (top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise PumlcError(f"{path}: not a COCO instances file (no '{key}' list)")
    return doc, data


def _categories(path: Path, doc: dict) -> list[tuple[int, str]]:
    try:
        raw = [(c["id"], c["name"]) for c in doc["categories"]]
    except (KeyError, TypeError):
        raise PumlcError(f"{path}: malformed 'categories' (each needs an integer 'id' and a 'name')") from None
    ids = _int_ids(path, "categories", "id", [i for i, _ in raw]).tolist()
    if any(not isinstance(n, str) or not n.strip() for _, n in raw):
        bad = next(n for _, n in raw if not isinstance(n, str) or not n.strip())
        raise PumlcError(f"{path}: 'categories' name must be a non-empty string, got {json.dumps(bad)}")
    cats = sorted(zip(ids, (n for _, n in raw), strict=True))
    if not cats:
        raise PumlcError(f"{path}: no categories")
    ids = [i for i, _ in cats]
    if len(set(ids)) != len(ids):
        raise PumlcError(f"{path}: duplicate category ids")
    names = [n for _, n in cats]
    if len(set(names)) != len(names):
        raise PumlcError(f"{path}: duplicate category names")
    return cats


def _matrix(path: Path, doc: dict, cat_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """(truth int8 [N, C], empty bool [N], file names, crowd annotation count), rows in file order."""
    images, anns = doc["images"], doc["annotations"]
    n, c = len(images), len(cat_ids)
    try:
        raw_ids = [im["id"] for im in images]
        raw_names = [im["file_name"] for im in images]
    except (KeyError, TypeError):
        raise PumlcError(f"{path}: malformed 'images' (each needs an integer 'id' and a 'file_name')") from None
    img_ids = _int_ids(path, "images", "id", raw_ids)
    names = [contained_name(name, f"{path}: image id {i}") for i, name in zip(raw_ids, raw_names, strict=True)]
    try:
        raw_img = [a["image_id"] for a in anns]
        raw_cat = [a["category_id"] for a in anns]
        crowd = sum(1 for a in anns if a.get("iscrowd"))
    except (KeyError, TypeError, AttributeError):
        raise PumlcError(
            f"{path}: malformed 'annotations' (each needs an integer 'image_id' and 'category_id')"
        ) from None
    a_img = _int_ids(path, "annotations", "image_id", raw_img)
    a_cat = _int_ids(path, "annotations", "category_id", raw_cat)
    order = np.argsort(img_ids, kind="stable")
    sorted_ids = img_ids[order]
    if n > 1 and np.any(sorted_ids[1:] == sorted_ids[:-1]):
        dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]][0]
        raise PumlcError(f"{path}: image id {dup} is listed twice")
    pos = np.searchsorted(sorted_ids, a_img)
    pos_c = np.minimum(pos, max(n - 1, 0))
    bad = (pos >= n) | (sorted_ids[pos_c] != a_img) if n else np.ones(len(a_img), bool)
    if bad.any():
        raise PumlcError(f"{path}: an annotation refers to image id {a_img[bad][0]}, which is not in 'images'")
    rows = order[pos_c]
    cpos = np.searchsorted(cat_ids, a_cat)
    cpos_c = np.minimum(cpos, c - 1)
    bad = (cpos >= c) | (cat_ids[cpos_c] != a_cat)
    if bad.any():
        raise PumlcError(f"{path}: an annotation uses category id {a_cat[bad][0]}, which is not in 'categories'")
    truth = np.full((n, c), -1, dtype=np.int8)
    truth[rows, cpos_c] = 1
    empty = np.bincount(rows, minlength=n) == 0
    return truth, empty, names, crowd


def default_images_dir(ann: Path) -> Path:
    """COCO layout: `ROOT/annotations/instances_train2014.json` -> `ROOT/train2014`."""
    stem = ann.stem
    split = stem[len("instances_") :] if stem.startswith("instances_") else stem
    return ann.resolve().parent.parent / split


def read_coco(
    train_ann: Path,
    test_ann: Path | None,
    train_images: Path | None = None,
    test_images: Path | None = None,
) -> LabelTable:
    """Read a COCO train file (-> train/val) and optionally a test file (-> test) into one `LabelTable`.

    Image paths are stored relative to the deepest folder holding both image folders (the COCO root).
    """
    files = [("train", Path(train_ann), train_images)]
    if test_ann is not None:
        files.append(("test", Path(test_ann), test_images))
    parsed = []
    for part, ann, img_dir in files:
        doc, data = _load_json(ann)
        img_dir = Path(img_dir) if img_dir is not None else default_images_dir(ann)
        if not doc["images"]:
            raise PumlcError(f"{ann}: lists no images")
        parsed.append((part, ann, img_dir.resolve(), doc, data))

    cats = _categories(parsed[0][1], parsed[0][3])
    for _, ann, _, doc, _ in parsed[1:]:
        if _categories(ann, doc) != cats:
            raise PumlcError(f"{ann}: categories differ from those of {parsed[0][1]}")
    class_source = "coco2014" if cats == coco_categories() else "file"
    cat_ids = np.array([i for i, _ in cats], dtype=np.int64)

    dirs = [p[2] for p in parsed]
    root = Path(os.path.commonpath([str(d) for d in dirs])) if len(dirs) > 1 else dirs[0]
    images: list[str] = []
    parts, truths, empties, sources = [], [], [], []
    origins: list[tuple[Path, object]] = []
    info: dict = {
        "reader": "coco",
        "class_source": class_source,
        "category_ids": cat_ids.tolist(),
        "policies": {"crowd": "positive", "absent_class": "negative"},
    }
    for part, ann, img_dir, doc, data in parsed:
        truth, empty, names, crowd = _matrix(ann, doc, cat_ids)
        prefix = Path(os.path.relpath(img_dir, root)).as_posix()
        pre = "" if prefix == "." else prefix + "/"
        images.extend(pre + name for name in names)
        origins.extend((ann, im.get("id")) for im in doc["images"])
        parts.append(np.full(len(names), part, dtype=object))
        truths.append(truth)
        empties.append(empty)
        sources.append(source_record(f"{part}_annotations", ann, data))
        info[f"{part}_crowd_annotations"] = int(crowd)
        info[f"{part}_annotations"] = len(doc["annotations"])
    refuse_duplicates(images, lambda i: f"{origins[i][0]}: image id {origins[i][1]}")
    return LabelTable(
        classes=[name for _, name in cats],
        images=images,
        part=np.concatenate(parts).astype(str),
        truth=np.concatenate(truths),
        empty=np.concatenate(empties),
        image_root=root,
        sources=sources,
        info=info,
        image_dirs=dirs,
    )
