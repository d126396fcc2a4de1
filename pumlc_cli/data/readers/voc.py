"""PASCAL VOC devkit (`Annotations/*.xml` + `ImageSets/Main/{trainval,test}.txt`) to image-level labels.

Per image and class: a non-difficult object makes the class positive; no object makes it negative; a class
present *only* through `difficult` objects follows the difficult policy:
- `ignore` (default): unknown (0) -- ignored in training and evaluation, exactly the devkit's per-class lists;
- `negative`: -1, as the PU-MLC reference code does;
- `positive`: +1.
Only images listed in the image sets are read (an XML without a listing, e.g. one whose image is not shipped,
is ignored). `test.txt` is optional (VOC 2012 has none): without it there is no test split.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as SafeET
import numpy as np
from defusedxml import DefusedXmlException

from pumlc_cli.data.meta import voc_classes
from pumlc_cli.data.readers import (
    LabelTable,
    contained_name,
    read_source,
    refuse_duplicates,
    source_record,
)
from pumlc_cli.errors import PumlcError
from pumlc_cli.inputs import input_folder

DIFFICULT_POLICIES = ("ignore", "negative", "positive")


def _image_set(path: Path) -> list[str]:
    data = read_source(path, "VOC image set")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PumlcError(f"{path}: not a text file") from None
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not ids:
        raise PumlcError(f"{path}: lists no images")
    seen: dict[str, int] = {}
    for line, image_id in enumerate(ids, start=1):
        contained_name(image_id, f"{path}:{line}")
        if "/" in image_id:
            raise PumlcError(f"{path}:{line}: image id {image_id!r} must be a plain name")
        if seen.setdefault(image_id, line) != line:
            raise PumlcError(f"{path}:{line}: image id {image_id!r} is listed twice (also line {seen[image_id]})")
    return ids


def _parse_xml(path: Path, index: dict[str, int]) -> tuple[str | None, list[tuple[int, bool]], bytes]:
    """(filename from the XML or None, [(class index, difficult)], raw bytes)."""
    data = read_source(path, "VOC annotation")
    # defusedxml refuses entity declarations and external references whatever the installed expat's limits.
    try:
        root = SafeET.fromstring(data)
    except ParseError as err:
        raise PumlcError(f"{path}: malformed XML ({err})") from None
    except DefusedXmlException as err:
        raise PumlcError(f"{path}: refused XML ({err.__class__.__name__}: entities and DTDs are not allowed)") from None
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            raise PumlcError(f"{path}: unknown class name {name!r} (VOC has {', '.join(index)})")
        diff = (obj.findtext("difficult") or "0").strip()
        if diff not in ("0", "1"):
            raise PumlcError(f"{path}: 'difficult' must be 0 or 1, got {diff!r}")
        objects.append((index[name], diff == "1"))
    filename = (root.findtext("filename") or "").strip() or None
    if filename is not None:
        filename = contained_name(filename, f"{path}: <filename>")
    return filename, objects, data


def read_voc(root: Path, difficult: str = "ignore") -> LabelTable:
    """Read `root` (a `VOCdevkit/VOC2007` folder): trainval -> train (later train/val), test -> test."""
    if difficult not in DIFFICULT_POLICIES:
        raise PumlcError(f"--voc-difficult must be one of {', '.join(DIFFICULT_POLICIES)}, got {difficult!r}")
    root = Path(root).resolve()
    input_folder(root, "VOC root folder")
    classes = voc_classes()
    index = {name: i for i, name in enumerate(classes)}
    sets_dir = root / "ImageSets" / "Main"
    parts = [("train", sets_dir / "trainval.txt")]
    if (sets_dir / "test.txt").exists():
        parts.append(("test", sets_dir / "test.txt"))

    images: list[str] = []
    part_col: list[str] = []
    rows, sources = [], []
    diff_pos = {"ignore": 0, "negative": -1, "positive": 1}[difficult]
    origins: list[str] = []
    n_difficult_only = 0
    xml_digest = hashlib.sha256()
    for part, set_file in parts:
        ids = _image_set(set_file)
        sources.append(source_record(f"{part}_image_set", set_file, read_source(set_file, "VOC image set")))
        for image_id in ids:
            xml_path = root / "Annotations" / f"{image_id}.xml"
            if not xml_path.exists():
                raise PumlcError(f"{xml_path}: annotation missing for image {image_id} listed in {set_file}")
            filename, objects, data = _parse_xml(xml_path, index)
            xml_digest.update(f"{image_id}.xml {hashlib.sha256(data).hexdigest()}\n".encode())
            present = np.zeros(len(classes), dtype=bool)
            hard = np.zeros(len(classes), dtype=bool)
            for cls, is_difficult in objects:
                if is_difficult:
                    hard[cls] = True
                else:
                    present[cls] = True
            row = np.full(len(classes), -1, dtype=np.int8)
            row[present] = 1
            only_hard = hard & ~present
            n_difficult_only += int(only_hard.sum())
            row[only_hard] = diff_pos
            rows.append((row, not objects))
            images.append(f"JPEGImages/{filename or image_id + '.jpg'}")
            origins.append(f"{xml_path} (listed in {set_file.name})")
            part_col.append(part)
    sources.append(
        {
            "role": "annotations",
            "path": str(root / "Annotations"),
            "sha256": xml_digest.hexdigest(),
            "digest_of": "lines '<id>.xml <sha256 of the file>' for every image read, in image-set order",
        }
    )
    refuse_duplicates(images, lambda i: origins[i])
    truth = np.stack([r for r, _ in rows]) if rows else np.zeros((0, len(classes)), np.int8)
    return LabelTable(
        classes=classes,
        images=images,
        part=np.array(part_col, dtype=str),
        truth=truth,
        empty=np.array([e for _, e in rows], dtype=bool),
        image_root=root,
        sources=sources,
        info={
            "reader": "voc",
            "class_source": "voc2007",
            "difficult_only_labels": n_difficult_only,
            "policies": {"voc_difficult": difficult, "absent_class": "negative"},
        },
    )
