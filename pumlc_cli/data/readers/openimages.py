"""Open Images (V6, V7) image-level labels, read from the files as they are distributed, into sparse entries.

Open Images is partially labelled by construction: each image has a few human-verified labels (`Confidence` 1: the
class is present, 0: verified absent) and every other class is unknown. So the table holds entries only: a verified
label is observed and true (±1); an absent entry is unknown in truth and observed. `--machine-labels MIN_CONF` adds
the machine-generated labels with a confidence ≥ MIN_CONF as observed positives of unknown truth (a noisy-label
source), on images the human file lists and where no human label exists for the class.

Files (looked up in ROOT, then ROOT/annotations; V7 names first): the class descriptions (`LabelName,DisplayName`),
the trainable class list, and `ImageID,Source,LabelName,Confidence` label files for train (required), validation
and test. Images are `ROOT/{train,validation,test}/<ImageID>.jpg`; train -> train, validation -> val, test -> test.

Everything runs on Arrow/numpy columns (pyarrow.csv with declared column types, hash lookups for ids and MIDs, one
sort of the entries); no Python loop touches a row. Policies, recorded in the manifest: labels of classes outside
`--classes` are dropped and counted; the same (image, class) listed twice with one confidence counts once; listed
both verified present and verified absent, it becomes unknown (counted). Refused with one line: a wrong header, a
malformed row, a MID missing from the class descriptions, an ImageID that is not a plain file name, an image in two
splits, a confidence other than 0/1 (human) or outside [0, 1] (machine).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pumlc_cli.data.entries import Entries, sort_entries
from pumlc_cli.data.imagelist import ImageList
from pumlc_cli.data.readers import UNKNOWN, LabelTable
from pumlc_cli.errors import PumlcError

CLASS_FILES = ("oidv7-class-descriptions.csv", "oidv6-class-descriptions.csv")
TRAINABLE_FILES = ("oidv7-classes-trainable.txt", "oidv6-classes-trainable.txt", "classes-trainable.txt")
HUMAN_FILES = {
    "train": (
        "oidv7-train-annotations-human-imagelabels.csv",
        "oidv6-train-annotations-human-imagelabels.csv",
        "train-annotations-human-imagelabels.csv",
    ),
    "validation": ("oidv7-val-annotations-human-imagelabels.csv", "validation-annotations-human-imagelabels.csv"),
    "test": ("oidv7-test-annotations-human-imagelabels.csv", "test-annotations-human-imagelabels.csv"),
}
MACHINE_FILES = {
    "train": ("oidv7-train-annotations-machine-imagelabels.csv", "train-annotations-machine-imagelabels.csv"),
    "validation": ("oidv7-val-annotations-machine-imagelabels.csv", "validation-annotations-machine-imagelabels.csv"),
    "test": ("oidv7-test-annotations-machine-imagelabels.csv", "test-annotations-machine-imagelabels.csv"),
}
PARTS = {"train": "train", "validation": "val", "test": "test"}
LABEL_HEADER = ["ImageID", "Source", "LabelName", "Confidence"]
CLASS_HEADER = ["LabelName", "DisplayName"]
IMAGE_ID = r"^[0-9A-Za-z_-]+$"
CLASS_CHOICES = ("all", "trainable")
# CSV blocks parsed in parallel: 4 MB keeps the threads busy with fewer buffers in flight than larger blocks (16 MB
# raised the parse's peak memory by ~100 MB at 1M images, and was no faster)
BLOCK_SIZE = 1 << 22


def find_file(root: Path, names: tuple[str, ...]) -> Path | None:
    """The first of `names` present in ROOT or ROOT/annotations."""
    for name in names:
        for folder in (root, root / "annotations"):
            if (folder / name).is_file():
                return folder / name
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _header(path: Path, expected: list[str]) -> None:
    try:
        with open(path, "rb") as fh:
            first = fh.readline(4096).decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise PumlcError(f"{path}: not a UTF-8 CSV file") from None
    except OSError as err:
        raise PumlcError(f"{path}: cannot read ({err.strerror})") from None
    if [h.strip() for h in first.split(",")] != expected:
        raise PumlcError(f"{path}: header must be {','.join(expected)}, got {first[:80]!r}")


def read_csv(path: Path, columns: dict[str, object], header: list[str] | None = None):
    """A CSV with the given header (default: the columns) as an Arrow table of the given columns and types;
    malformed rows are one line."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    _header(path, header or list(columns))
    bad: list = []

    def on_invalid(row) -> str:
        bad.append(row)
        return "skip"

    try:
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(block_size=BLOCK_SIZE, use_threads=True),
            parse_options=pcsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pcsv.ConvertOptions(
                column_types=columns,
                include_columns=list(columns),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as err:
        raise PumlcError(f"{path}: malformed CSV ({str(err).splitlines()[0]})") from None
    except (OSError, pa.ArrowException) as err:
        raise PumlcError(f"{path}: cannot read ({str(err).splitlines()[0]})") from None
    if bad:
        row = bad[0]
        where = f"{path}:{row.number}" if row.number is not None else str(path)
        raise PumlcError(
            f"{where}: malformed row, expected {row.expected_columns} fields, got {row.actual_columns} "
            f"({row.text[:60]!r}; {len(bad)} such row(s))"
        )
    return table


def _first_bad(mask, path: Path, what: str, values) -> None:
    """One line naming the first row where `mask` holds (line = row + 2: the header is line 1)."""
    import pyarrow.compute as pc

    if len(mask) and pc.any(mask).as_py():
        i = int(pc.index(mask, True).as_py())
        raise PumlcError(f"{path}:{i + 2}: {what} {values[i].as_py()!r}")


@dataclass(frozen=True)
class ClassSet:
    mids: list[str]  # selected MIDs, in class order
    names: list[str]  # unique display names (MID appended where a display name repeats)
    source: str  # all | trainable | FILE
    all_mids: object  # pyarrow string array: every MID of the descriptions file
    sources: list[dict]


def read_classes(root: Path, choice: str) -> ClassSet:
    """The class descriptions, and the selection: all of them, the trainable list, or a file of MIDs."""
    import pyarrow as pa
    import pyarrow.compute as pc

    desc_file = find_file(root, CLASS_FILES)
    if desc_file is None:
        raise PumlcError(f"{root}: no class descriptions ({' or '.join(CLASS_FILES)})")
    desc = read_csv(desc_file, {"LabelName": pa.string(), "DisplayName": pa.string()})
    mids = desc.column("LabelName").combine_chunks()
    if len(mids) == 0:
        raise PumlcError(f"{desc_file}: lists no classes")
    if pc.count_distinct(mids).as_py() != len(mids):
        counts = pc.value_counts(mids)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise PumlcError(f"{desc_file}: class {dup!r} is listed twice")
    _first_bad(pc.equal(mids, ""), desc_file, "empty LabelName", mids)
    sources = [_record("class_descriptions", desc_file)]
    if choice == "all":
        chosen = np.arange(len(mids))
    else:
        if choice == "trainable":
            list_file = find_file(root, TRAINABLE_FILES)
            if list_file is None:
                raise PumlcError(f"{root}: no trainable class list ({' or '.join(TRAINABLE_FILES)}); try --classes all")
        else:
            list_file = Path(choice)
            if not list_file.is_file():
                raise PumlcError(f"--classes {choice}: expected all, trainable or a file of MIDs (one per line)")
        try:
            wanted = [line.strip() for line in list_file.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as err:
            raise PumlcError(f"{list_file}: cannot read the class list ({err})") from None
        if not wanted:
            raise PumlcError(f"{list_file}: lists no classes")
        if len(set(wanted)) != len(wanted):
            raise PumlcError(f"{list_file}: a class is listed twice")
        index = pc.index_in(pa.array(wanted, pa.string()), value_set=mids)
        if index.null_count:
            missing = wanted[int(pc.index(pc.is_null(index), True).as_py())]
            raise PumlcError(f"{list_file}: class {missing!r} is not in {desc_file.name}")
        chosen = index.to_numpy()
        sources.append(_record("class_list", list_file))
    display = desc.column("DisplayName").combine_chunks().take(pa.array(chosen)).to_pylist()
    selected = mids.take(pa.array(chosen)).to_pylist()
    repeats = {n for n in display if display.count(n) > 1} if len(set(display)) != len(display) else set()
    names = [f"{d} ({m})" if d in repeats or not d.strip() else d for d, m in zip(display, selected, strict=True)]
    return ClassSet(selected, names, choice if choice in CLASS_CHOICES else str(Path(choice).resolve()), mids, sources)


def _record(role: str, path: Path) -> dict:
    return {"role": role, "path": str(path.resolve()), "sha256": _sha256(path)}


@dataclass
class _Part:
    ids: object  # pyarrow string array: the part's image ids, first appearance order
    image: np.ndarray  # int32 per kept row: index into ids
    cls: np.ndarray  # int32 per kept row: selected class index
    value: np.ndarray  # int8 per kept row: 1 verified present / -1 verified absent (human); 1 (machine, >= MIN_CONF)
    counts: dict


def _encoded(table, name: str) -> tuple[object, np.ndarray]:
    """(dictionary, int32 codes per row) of a dictionary-encoded column (chunks unified, first-appearance order)."""
    import pyarrow as pa

    chunks = table.column(name).chunks
    if not chunks:
        return pa.array([], pa.string()), np.zeros(0, np.int32)
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in chunks]).astype(np.int32, copy=False)
    return chunks[0].dictionary, codes


def _bad_value(path: Path, what: str, dictionary, codes: np.ndarray, bad: np.ndarray) -> None:
    """One line naming the first row whose dictionary value is bad (line = row + 2: the header is line 1)."""
    if bad.any():
        row = int(np.flatnonzero(bad[codes])[0])
        raise PumlcError(f"{path}:{row + 2}: {what} {dictionary[int(codes[row])].as_py()!r}")


def _read_labels(path: Path, classes: ClassSet, min_conf: float | None = None, known_ids=None) -> _Part:
    """One label file (machine labels when `min_conf` is given): ids of its images, and the (image, class, value)
    rows of the selected classes.

    The CSV parser dictionary-encodes ImageID, LabelName and Confidence (in parallel, as it parses), so ids, MIDs and
    confidences are checked and mapped once per distinct value, then spread to the rows by their int32 codes: the
    rows cost 9 bytes each (image, class, value), whatever the length of the strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    coded = pa.dictionary(pa.int32(), pa.string())
    table = read_csv(path, dict.fromkeys(("ImageID", "LabelName", "Confidence"), coded), header=LABEL_HEADER)
    table = table.unify_dictionaries()
    ids, image = _encoded(table, "ImageID")
    mids, mid_code = _encoded(table, "LabelName")
    confs, conf_code = _encoded(table, "Confidence")
    del table
    bad_id = pc.invert(pc.match_substring_regex(ids, IMAGE_ID)).to_numpy(zero_copy_only=False)
    _bad_value(path, "ImageID must be a plain file name, got", ids, image, bad_id)
    if min_conf is not None:
        ok = pc.match_substring_regex(confs, r"^(0(\.\d*)?|1(\.0*)?|\.\d+)$").to_numpy(zero_copy_only=False)
        _bad_value(path, "Confidence must be a number within [0, 1], got", confs, conf_code, ~ok)
    else:
        ok = pc.match_substring_regex(confs, r"^[01](\.0*)?$").to_numpy(zero_copy_only=False)
        _bad_value(path, "Confidence must be 0 or 1, got", confs, conf_code, ~ok)
    conf = pc.cast(confs, pa.float64()).to_numpy(zero_copy_only=False)
    # value of each distinct confidence; machine: 0 below MIN_CONF (dropped below)
    if min_conf is None:
        conf_value = np.where(conf == 1.0, 1, -1).astype(np.int8)
    else:
        conf_value = (conf >= min_conf).astype(np.int8)
    value = conf_value[conf_code]
    del conf_code
    mid_index = pc.index_in(mids, value_set=classes.all_mids)
    descriptions = next(s for s in classes.sources if s["role"] == "class_descriptions")["path"]
    unknown = mid_index.is_null().to_numpy(zero_copy_only=False)
    _bad_value(path, f"LabelName not in {Path(descriptions).name}:", mids, mid_code, unknown)
    # selected class of each MID of the descriptions (-1: not selected), then of each distinct MID, then of each row
    selected = np.full(len(classes.all_mids), -1, dtype=np.int32)
    chosen = pc.index_in(pa.array(classes.mids, pa.string()), value_set=classes.all_mids).to_numpy()
    selected[chosen] = np.arange(len(classes.mids), dtype=np.int32)
    cls = selected[mid_index.fill_null(0).to_numpy(zero_copy_only=False)][mid_code]
    del mid_code
    part_ids = ids
    if known_ids is not None:  # machine labels: only the images the human file lists
        part_ids = known_ids
        known = pc.index_in(ids, value_set=known_ids).fill_null(-1).to_numpy(zero_copy_only=False)
        image = known.astype(np.int32)[image]
    keep = cls >= 0
    counts = {"rows": len(image), "other_class_rows": int(len(keep) - np.count_nonzero(keep))}
    if known_ids is not None:
        counts["rows_on_images_without_human_labels"] = int((keep & (image < 0)).sum())
        keep &= image >= 0
    if min_conf is not None:
        keep &= value == 1
    if not keep.all():
        image, cls, value = image[keep], cls[keep], value[keep]
    return _Part(part_ids, image, cls, value, counts)


def _resolve(part: _Part, n_classes: int, machine: bool) -> tuple[Entries, dict]:
    """Sorted, duplicate-free entries of one part; conflicting verifications become unknown (dropped).

    Files as distributed list each image's labels together, in class order: then the rows are already the entries
    (checked on one int64 key per row) and nothing is sorted or copied."""
    image, cls, value = part.image, part.cls, part.value
    key = image.astype(np.int64) * n_classes + cls
    ordered = bool((key[1:] > key[:-1]).all())
    duplicates = conflicts = 0
    if not ordered:
        if not (key[1:] >= key[:-1]).all():
            order = np.argsort(key, kind="stable")
            key, value = key[order], value[order]
            del order
        start = np.ones(len(key), dtype=bool)
        start[1:] = key[1:] != key[:-1]
        first = np.flatnonzero(start)
        del start
        duplicates = len(key) - len(first)
        low, high = np.minimum.reduceat(value, first), np.maximum.reduceat(value, first)
        agree = low == high
        conflicts = len(agree) - int(np.count_nonzero(agree))
        image_cls = np.divmod(key[first[agree]], n_classes)
        image, cls, value = image_cls[0].astype(np.int32), image_cls[1].astype(np.int32), high[agree]
    if machine:
        ones = np.ones(len(image), dtype=np.int8)
        return Entries(image, cls, ones * UNKNOWN, ones), {}
    counts = {"duplicate_rows": int(duplicates), "conflicting_labels_to_unknown": int(conflicts)}
    return Entries(image, cls, value, value.copy()), counts


def read_openimages(root: Path, classes: str = "trainable", machine_min_conf: float | None = None) -> LabelTable:
    """Read an Open Images root (see the module docstring) into a sparse `LabelTable` (absent truth unknown)."""
    import pyarrow as pa

    root = Path(root).resolve()
    if not root.is_dir():
        raise PumlcError(f"{root}: Open Images root folder not found")
    if machine_min_conf is not None and not 0.0 <= machine_min_conf <= 1.0:
        raise PumlcError(f"--machine-labels must be a confidence within [0, 1], got {machine_min_conf}")
    found = {part: find_file(root, names) for part, names in HUMAN_FILES.items()}
    if found["train"] is None:
        raise PumlcError(f"{root}: no training labels ({' or '.join(HUMAN_FILES['train'])})")
    cls = read_classes(root, classes)
    c = len(cls.mids)
    files = [(part, path) for part, path in found.items() if path is not None]
    machine_files = {}
    if machine_min_conf is not None:
        machine_files = {part: find_file(root, MACHINE_FILES[part]) for part, _ in files}
        if machine_files["train"] is None:
            raise PumlcError(f"{root}: --machine-labels needs {' or '.join(MACHINE_FILES['train'])}")
    hashed = [(f"{part}_labels", path) for part, path in files]
    hashed += [(f"{part}_machine_labels", path) for part, path in machine_files.items() if path is not None]
    with ThreadPoolExecutor(max_workers=2) as pool:  # hashing runs beside the parse (both release the GIL)
        digests = {role: pool.submit(_sha256, path) for role, path in hashed}
        info: dict = {"reader": "openimages", "class_source": cls.source, "label_names": cls.mids, "counts": {}}
        ids_parts, entries_parts, part_names = [], [], []
        offset = 0
        for part, path in files:
            human = _read_labels(path, cls)
            entries, counts = _resolve(human, c, machine=False)
            counts = {**human.counts, **counts, "images": len(human.ids)}
            machine_path = machine_files.get(part)
            if machine_path is not None:
                machine = _read_labels(machine_path, cls, machine_min_conf, known_ids=human.ids)
                extra, _ = _resolve(machine, c, machine=True)
                entries, added, shadowed = _merge_machine(entries, extra, c)
                counts.update(
                    {
                        "machine_rows": machine.counts["rows"],
                        "machine_rows_on_images_without_human_labels": machine.counts[
                            "rows_on_images_without_human_labels"
                        ],
                        "machine_positives_added": added,
                        "machine_labels_under_human_labels": shadowed,
                    }
                )
            info["counts"][part] = counts
            ids_parts.append(human.ids)
            part_names.append(part)
            if offset:
                entries = Entries(entries.image + np.int32(offset), entries.cls, entries.truth, entries.observed)
            entries_parts.append(entries)
            offset += len(human.ids)
        sources = cls.sources + [
            {"role": role, "path": str(path), "sha256": digests[role].result()} for role, path in hashed
        ]
    _refuse_shared_images(root, ids_parts, part_names)
    sizes = [len(i) for i in ids_parts]
    part = np.repeat(np.array([PARTS[p] for p in part_names]), sizes)
    images = ImageList(pa.concat_arrays([_paths(name, ids) for name, ids in zip(part_names, ids_parts, strict=True)]))
    del ids_parts
    entries = Entries(
        np.concatenate([e.image for e in entries_parts]),
        np.concatenate([e.cls for e in entries_parts]),
        np.concatenate([e.truth for e in entries_parts]),
        np.concatenate([e.observed for e in entries_parts]),
    )
    info["policies"] = {
        "absent_class": "unknown",
        "verified": "Confidence 1 -> +1, 0 -> -1 (truth and observed)",
        "other_classes": "dropped (counted)",
        "conflicting_verifications": "unknown (counted)",
        "machine_labels": "off" if machine_min_conf is None else f"observed +1 at Confidence >= {machine_min_conf}",
    }
    return LabelTable(
        classes=cls.names,
        images=images,
        part=part,
        truth=None,
        empty=np.bincount(entries.image, minlength=len(images)) == 0,
        image_root=root,
        sources=sources,
        info=info,
        image_dirs=[root / p for p in part_names],
        entries=entries,
        absent_truth=UNKNOWN,
    )


def _refuse_shared_images(root: Path, ids_parts: list, part_names: list[str]) -> None:
    """An image in two label files would be trained and tested on: refused. Each file's ids are unique already, so
    only later files are looked up among earlier ones (hashing the smaller set, probing the larger)."""
    import pyarrow.compute as pc

    for k in range(1, len(ids_parts)):
        for j in range(k):
            shared = pc.is_in(ids_parts[j], value_set=ids_parts[k]).to_numpy(zero_copy_only=False)
            if shared.any():
                dup = ids_parts[j][int(np.flatnonzero(shared)[0])].as_py()
                raise PumlcError(f"{root}: image {dup!r} is in both the {part_names[j]} and {part_names[k]} labels")


def _paths(folder: str, ids):
    """`<folder>/<ImageID>.jpg` for every id of one label file (one Arrow string kernel, no Python string per image)."""
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(f"{folder}/", ids, ".jpg", "")


def _merge_machine(human: Entries, machine: Entries, n_classes: int) -> tuple[Entries, int, int]:
    """Human entries plus the machine positives on (image, class) pairs without a human label."""
    h_key = human.image.astype(np.int64) * n_classes + human.cls
    m_key = machine.image.astype(np.int64) * n_classes + machine.cls
    under = np.isin(m_key, h_key, assume_unique=True)
    extra = machine.take(~under)
    merged = sort_entries(
        np.concatenate([human.image, extra.image]),
        np.concatenate([human.cls, extra.cls]),
        np.concatenate([human.truth, extra.truth]),
        np.concatenate([human.observed, extra.observed]),
    )
    return merged, len(extra), int(under.sum())
