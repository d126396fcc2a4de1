"""The prepared folder: `labels.parquet` + `manifest.json`, written atomically, read back by `load_prepared`.

Why a folder with a manifest: training and evaluation must be able to say exactly which labels (source files,
policies, corruptions, seeds) they ran on; `Prepared.manifest_hash` identifies it in checkpoints and reports.
Why byte-identical output: the Parquet file is written without timestamps or pandas metadata and with pinned
writer options, so the same inputs, options and seed give the same bytes (and the same hash).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pumlc_cli.atomic import temp_dir_beside
from pumlc_cli.data.corrupt import CorruptionSpec, apply_corruptions, apply_entry_corruptions, check_seed
from pumlc_cli.data.entries import (
    LABEL_NAMES,
    LABEL_VALUES,
    Entries,
    SplitEntries,
    absent_observed_value,
    from_dense,
    lookup,
    split_of,
)
from pumlc_cli.data.image_cache import CACHE_DIR, cache_record, check_cache_size, write_image_cache
from pumlc_cli.data.imagelist import ImageList
from pumlc_cli.data.readers import LabelTable, check_listed_files, contained_name
from pumlc_cli.data.splits import carve_validation
from pumlc_cli.errors import PumlcError
from pumlc_cli.inputs import input_folder, read_input

LABELS_FILE = "labels.parquet"
IMAGES_FILE = "images.parquet"
LABEL_FILES = (IMAGES_FILE, LABELS_FILE)
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 2
ENTRY_COLUMNS = {"image_idx": np.int32, "class_idx": np.int32, "truth": np.int8, "observed": np.int8}
SPLITS = ("train", "val", "test")
EMPTY_POLICIES = ("keep", "drop")


def toolkit_version() -> str:
    try:
        return importlib.metadata.version("pumlc")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class SplitData:
    """One split's image paths (relative to the image root) and its int8 [N, C] truth and observed labels."""

    images: Sequence[str]  # an ImageList
    truth: np.ndarray
    observed: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class Prepared:
    """A prepared folder loaded in memory (see `load_prepared`): the image table and the label entries."""

    path: Path
    images_table: object  # pyarrow.Table: image, split (row = image index)
    entries: Entries  # every stored label entry, image indices into images_table
    manifest: dict
    classes: list[str]
    image_root: Path  # where images are read from: the image cache when the folder has one
    manifest_hash: str
    source_image_root: Path  # the original images the table was read from
    absent_truth: int = -1
    absent_observed: dict = field(default_factory=dict)  # split -> value
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def frame(self):
        """pandas.DataFrame with the columns image and split, one row per image in index order."""
        if "frame" not in self._cache:
            self._cache["frame"] = self.images_table.to_pandas()
        return self._cache["frame"]

    @property
    def split_column(self) -> np.ndarray:
        """str [N]: each image's split (built from one comparison per split name, no Python string per image)."""
        if "split" not in self._cache:
            import pyarrow.compute as pc

            column = self.images_table.column("split")
            split = np.empty(len(column), dtype="<U5")
            for name in SPLITS:  # load_prepared checked that these are the only values
                split[pc.equal(column, name).to_numpy(zero_copy_only=False)] = name
            self._cache["split"] = split
        return self._cache["split"]

    @property
    def images(self) -> ImageList:
        """Every image path, in index order, as stored (an Arrow string array: memory grows with the path bytes)."""
        if "images" not in self._cache:
            self._cache["images"] = ImageList(self.images_table.column("image"))
        return self._cache["images"]

    @property
    def splits(self) -> list[str]:
        """Split names present in the table, in train/val/test order."""
        present = set(np.unique(self.split_column).tolist())
        return [s for s in SPLITS if s in present]

    def split_entries(self, name: str) -> SplitEntries:
        """Rows of split `name` as CSR entries (memory grows with the stored labels, not images x classes)."""
        if name not in SPLITS:
            raise PumlcError(f"unknown split {name!r}: expected one of {', '.join(SPLITS)}")
        key = ("entries", name)
        if key not in self._cache:
            in_split = self.split_column == name
            indptr, pick = split_of(self.entries, in_split)
            self._cache[key] = SplitEntries(
                images=self.images.take(in_split),
                indptr=indptr,
                classes=self.entries.cls[pick],
                truth=self.entries.truth[pick],
                observed=self.entries.observed[pick],
                num_classes=len(self.classes),
                absent_truth=self.absent_truth,
                absent_observed=int(self.absent_observed.get(name, self.absent_truth)),
            )
        return self._cache[key]

    def split_data(self, name: str) -> SplitData:
        """Rows of split `name` ("train", "val", "test"; an absent split gives empty arrays) as dense matrices."""
        if name not in self._cache:
            part = self.split_entries(name)
            where = f"{self.path} ({name})"
            self._cache[name] = SplitData(part.images, part.dense("truth", where), part.dense("observed", where))
        return self._cache[name]

    def absent_observed_per_image(self) -> np.ndarray:
        """int8 [N]: what an absent entry of each image reads as when observed (its split's rule)."""
        out = np.full(len(self.split_column), self.absent_truth, dtype=np.int8)
        for split, value in self.absent_observed.items():
            out[self.split_column == split] = value
        return out

    def observed_at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Observed labels at (image index, class index) pairs, absent ones by the rule."""
        pos = lookup(self.entries, len(self.classes), rows, cols)
        fill = self.absent_observed_per_image()[np.asarray(rows, dtype=np.int64)]
        return np.where(pos >= 0, self.entries.observed[np.maximum(pos, 0)] if len(self.entries) else fill, fill)

    def image_path(self, rel: str) -> Path:
        """Absolute path of an image listed in the table."""
        return self.image_root / rel


def load_prepared(path: str | Path) -> Prepared:
    """Read a folder written by `pumlc prepare`; a missing, damaged or hand-edited folder is a `PumlcError`."""
    path = Path(path)
    man_file = path / MANIFEST_FILE
    if not path.exists():
        raise PumlcError(f"{path}: prepared folder not found (create it with `pumlc prepare`)")
    input_folder(path, "prepared folder")
    if not man_file.exists():
        raise PumlcError(f"{man_file}: missing (not a folder written by `pumlc prepare`)")
    raw = read_input(man_file, "manifest")
    try:
        manifest = json.loads(raw)
        classes = manifest["classes"]
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise TypeError
        source_root = Path(manifest["image_root"])
        cache = manifest.get("image_cache")
        # Resolved against the folder itself, so a prepared folder with its cache can be moved or copied.
        image_root = (path / cache["dir"]).resolve() if cache else source_root
    except (ValueError, KeyError, TypeError, RecursionError):
        raise PumlcError(f"{man_file}: malformed manifest") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise PumlcError(
            f"{path}: written by an older pumlc (format {manifest.get('format_version')}, one label column per "
            f"class); re-prepare it with the same `pumlc prepare` command (sources and steps: {man_file.name})"
        )
    if len(set(classes)) != len(classes):
        raise PumlcError(f"{man_file}: a class is listed twice")
    absent_truth, absent_observed = _absent_rule(manifest, man_file)
    hashes = manifest.get("files_sha256")
    if not isinstance(hashes, dict) or set(hashes) != set(LABEL_FILES):
        raise PumlcError(f"{man_file}: malformed manifest (files_sha256 must name {', '.join(LABEL_FILES)})")
    tables = {name: _read_table(path / name, hashes[name], man_file) for name in LABEL_FILES}
    images = tables[IMAGES_FILE]
    entries = _check_tables(images, tables[LABELS_FILE], classes, path)
    return Prepared(
        path=path,
        images_table=images,
        entries=entries,
        manifest=manifest,
        classes=classes,
        image_root=image_root,
        manifest_hash=hashlib.sha256(raw).hexdigest(),
        source_image_root=source_root,
        absent_truth=absent_truth,
        absent_observed=absent_observed,
    )


def _absent_rule(manifest: dict, man_file: Path) -> tuple[int, dict[str, int]]:
    try:
        rule = manifest["labels"]
        truth = LABEL_VALUES[rule["absent_truth"]]
        observed = {s: LABEL_VALUES[v] for s, v in rule["absent_observed"].items() if s in SPLITS}
    except (KeyError, TypeError, AttributeError):
        raise PumlcError(f"{man_file}: malformed manifest (labels: absent_truth / absent_observed)") from None
    return truth, observed


def _read_table(file: Path, expected_hash: object, man_file: Path):
    import pyarrow.parquet as pq

    if not file.exists():
        raise PumlcError(f"{file}: missing")
    data = read_input(file, "label table")
    if hashlib.sha256(data).hexdigest() != expected_hash:
        raise PumlcError(f"{file}: changed since `pumlc prepare` wrote it (sha256 differs from {man_file.name})")
    try:
        import pyarrow as pa

        return pq.read_table(pa.BufferReader(data))
    except Exception as err:  # pyarrow raises several types for damaged files
        raise PumlcError(f"{file}: cannot read ({str(err).splitlines()[0] if str(err) else err})") from None


_BAD_PATH = r"(^|/)\.{1,2}(/|$)|//|^/|^\s|\s$|\x00|^$|/$"


def _check_tables(images, labels, classes: list[str], path: Path) -> Entries:
    """Images: columns image, split; paths contained, normalised and unique; known splits. Labels: the entry
    columns with their types, indices in range, values -1/0/1, sorted by (image, class) without duplicates."""
    import pyarrow as pa
    import pyarrow.compute as pc

    img_file, lab_file = path / IMAGES_FILE, path / LABELS_FILE
    if "image" not in images.column_names or "split" not in images.column_names:
        raise PumlcError(f"{img_file}: needs the columns image and split")
    names = images.column("image")
    if not pa.types.is_string(names.type) and not pa.types.is_large_string(names.type):
        raise PumlcError(f"{img_file}: column image must hold strings")
    if names.null_count:
        raise PumlcError(f"{img_file}: an image path is missing")
    bad = pc.match_substring_regex(names, _BAD_PATH)
    if pc.any(bad).as_py():
        i = int(pc.index(bad, True).as_py())
        name = names[i].as_py()
        contained_name(name, f"{img_file}: row {i}")
        raise PumlcError(f"{img_file}: row {i}: image path {name!r} is not normalised")
    if len(pc.unique(names)) != len(names):  # (count_distinct hashes twice as slowly)
        counts = pc.value_counts(names)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise PumlcError(f"{img_file}: image {dup!r} is listed twice")
    splits = set(pc.unique(images.column("split")).to_pylist())
    if not splits <= set(SPLITS):
        bad_splits = sorted(map(str, splits - set(SPLITS)))
        raise PumlcError(f"{img_file}: unknown split(s) {', '.join(bad_splits)} (expected {', '.join(SPLITS)})")
    if any(c.startswith(("truth:", "observed:")) for c in labels.column_names):
        raise PumlcError(f"{lab_file}: one column per class is the old layout; re-prepare the folder")
    missing = [c for c in ENTRY_COLUMNS if c not in labels.column_names]
    if missing or len(labels.column_names) != len(ENTRY_COLUMNS):
        raise PumlcError(f"{lab_file}: expected the columns {', '.join(ENTRY_COLUMNS)}")
    cols = {}
    for name, kind in ENTRY_COLUMNS.items():
        col = labels.column(name)
        if name in ("truth", "observed") and not pa.types.is_integer(col.type):
            _refuse_label_values(col, lab_file)
        if not pa.types.is_integer(col.type) or col.null_count:
            raise PumlcError(f"{lab_file}: column {name} must hold integers")
        cols[name] = col.to_numpy().astype(kind, copy=False)
    n, c = len(names), len(classes)
    for name, bound, what in (
        ("image_idx", n, f"{img_file.name}'s {n} images"),
        ("class_idx", c, f"the manifest's {c} classes"),
    ):
        v = cols[name]
        if len(v) and (v.min() < 0 or v.max() >= bound):
            raise PumlcError(f"{lab_file}: {name} outside [0, {bound}) (does not match {what})")
    for name in ("truth", "observed"):
        v = cols[name]
        if len(v) and (v.min() < -1 or v.max() > 1):
            raise PumlcError(f"{lab_file}: labels must be -1, 0 or 1 in column {name}")
    key = cols["image_idx"].astype(np.int64) * c + cols["class_idx"]
    if len(key) > 1 and not (np.diff(key) > 0).all():
        raise PumlcError(f"{lab_file}: entries must be sorted by (image_idx, class_idx), each once")
    return Entries(cols["image_idx"], cols["class_idx"], cols["truth"], cols["observed"])


def _refuse_label_values(col, lab_file: Path) -> None:
    """A label column that is not integer: name its values that are not -1/0/1 (strings, fractions), or its type
    when every value would pass (floats that are all whole)."""
    values = set(col.to_pylist())
    bad = sorted(repr(v) for v in values if isinstance(v, str | bytes) or v not in (-1, 0, 1))[:3]
    found = ", ".join(bad) if bad else f"{col.type.to_pandas_dtype().__name__} columns"
    raise PumlcError(f"{lab_file}: labels must be -1, 0 or 1, found {found}")


# ---------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class LabelStore:
    """What a prepared folder's two label files hold: images with their split, the entries, and the rule for the
    absent entries (see `pumlc_cli.data.entries`)."""

    images: Sequence[str]  # a list, or an ImageList (written without a Python string per image)
    split: np.ndarray  # str [N]
    entries: Entries
    absent_truth: int = -1
    absent_observed: dict = field(default_factory=dict)  # split -> value

    @classmethod
    def from_dense(
        cls, images: list[str], split: np.ndarray, truth: np.ndarray, observed: np.ndarray, absent_truth: int = -1
    ) -> LabelStore:
        """Entries of dense matrices, each split's absent observed value the one most of its absent entries take."""
        split = np.asarray(split, dtype=str)
        absent = {s: absent_observed_value(truth[split == s], observed[split == s], absent_truth) for s in SPLITS}
        per_row = np.zeros(len(split), dtype=np.int8)
        for s in SPLITS:
            per_row[split == s] = absent[s]
        return cls(list(images), split, from_dense(truth, observed, absent_truth, per_row), absent_truth, absent)

    def rule(self) -> dict:
        """The manifest's `labels` record."""
        return {
            "layout": "entries",
            "absent_truth": LABEL_NAMES[self.absent_truth],
            "absent_observed": {s: LABEL_NAMES[self.absent_observed.get(s, self.absent_truth)] for s in SPLITS},
            "entries": len(self.entries),
        }

    def tables(self) -> dict:
        import pyarrow as pa

        e = self.entries
        images = pa.table(
            {
                "image": ImageList(self.images).arrow,
                "split": pa.array(np.asarray(self.split, dtype=str), type=pa.string()).dictionary_encode(),
            }
        )
        labels = pa.table(
            {
                name: pa.array(np.ascontiguousarray(arr, dtype=kind))
                for (name, kind), arr in zip(ENTRY_COLUMNS.items(), (e.image, e.cls, e.truth, e.observed), strict=True)
            }
        )
        return {IMAGES_FILE: images, LABELS_FILE: labels}


def store_of(prepared: Prepared) -> LabelStore:
    """A loaded folder's labels, to be changed and written again (audit folds, relabel)."""
    return LabelStore(
        prepared.images,
        prepared.split_column.copy(),
        prepared.entries,
        prepared.absent_truth,
        dict(prepared.absent_observed),
    )


def manifest_text(manifest: dict) -> str:
    """Indented JSON, but lists of plain values (class names, ids, shapes) on one line."""

    def collapse(match: re.Match) -> str:
        items = [x.strip() for x in match.group(1).split(",\n")]
        return "[" + ", ".join(items) + "]"

    text = json.dumps(manifest, indent=2, ensure_ascii=False)
    return _SCALAR_LIST.sub(collapse, text) + "\n"


_SCALAR_LIST = re.compile(r"\[\n((?:\s*(?:-?[\d.eE+-]+|\"(?:[^\"\\]|\\.)*\"|true|false|null),?\n)+)\s*\]")


def write_prepared(
    out: Path, store: LabelStore, manifest: dict, force: bool = False, populate: Callable[[Path], None] | None = None
) -> None:
    """Write the label files and the manifest (with their sha256) into a temporary folder beside `out`, then
    rename it into place.

    `populate(tmp)` adds more files (the image cache) before the rename, so a failure leaves nothing behind.
    """
    import pyarrow.parquet as pq

    out = Path(out)
    if out.exists() and not force:
        raise PumlcError(f"{out}: already exists (use --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(out)
    try:
        hashes = {}
        for name, table in store.tables().items():
            pq.write_table(
                table,
                tmp / name,
                version="2.6",
                compression="zstd",
                compression_level=1,
                # sorted image indices delta-encode to a few bits; labels and splits take a handful of values
                use_dictionary=["split", "truth", "observed"],
                column_encoding={"image_idx": "DELTA_BINARY_PACKED"} if name == LABELS_FILE else None,
                write_statistics=True,
                row_group_size=1 << 20,
                data_page_size=1 << 20,
                store_schema=False,
            )
            hashes[name] = _sha256_file(tmp / name)
        manifest = {**manifest, "format_version": FORMAT_VERSION, "labels": store.rule(), "files_sha256": hashes}
        (tmp / MANIFEST_FILE).write_text(manifest_text(manifest), encoding="utf-8")
        if populate is not None:
            populate(tmp)
        if out.exists() or out.is_symlink():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex}"
            out.rename(old)
            try:
                tmp.rename(out)
            except OSError:
                old.rename(out)
                raise
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def check_image_files(table: LabelTable) -> None:
    """Every listed image exists and opens as an image (header parsed and pixels decoded at reduced size)."""
    from pumlc_cli.data.pixels import open_image

    check_listed_files(table.image_root, table.images)
    for rel in table.images:
        path = table.image_root / rel
        try:
            with open_image(path) as im:
                im.draft("RGB", (32, 32))
                im.load()
        except PumlcError:
            raise
        except Exception as err:
            raise PumlcError(f"{path}: cannot be opened as an image ({err.__class__.__name__}: {err})") from None


@dataclass(frozen=True)
class WriteOptions:
    """How a prepared folder is split and written, besides the corruption (`CorruptionSpec`)."""

    seed: int = 0
    val_fraction: float = 0.1
    clean_val: bool = False
    empty_images: Literal["keep", "drop"] = "keep"
    check_images: bool = False
    images_optional: bool = False
    force: bool = False
    cache_size: int | None = None
    cache_workers: int | None = None


def prepare_dataset(
    table: LabelTable, out: Path, spec: CorruptionSpec | None = None, options: WriteOptions | None = None
) -> dict:
    """Empty-image policy -> (optional) image check -> corruptions of the training file -> val split -> write
    (with `cache_size`, also the pre-resized image cache, see `pumlc_cli.data.image_cache`).

    Returns the manifest that was written.
    """
    spec = spec or CorruptionSpec()
    opt = options or WriteOptions()
    spec.validate()
    check_seed(opt.seed)
    if opt.empty_images not in EMPTY_POLICIES:
        raise PumlcError(f"--empty-images must be keep or drop, got {opt.empty_images!r}")
    if opt.images_optional and (opt.check_images or opt.cache_size is not None):
        raise PumlcError(
            "--images-optional skips the image files: it cannot be combined with --check-images or --cache-size"
        )
    check_cache_size(opt.cache_size, opt.cache_workers)
    n_read = len(table.images)
    n_empty = int(table.empty.sum())
    if opt.empty_images == "drop":
        table = table.subset(~table.empty)
    if not (table.part == "train").any():
        raise PumlcError(f"{table.image_root}: no training images (after --empty-images {opt.empty_images})")
    if opt.check_images:
        check_image_files(table)
    elif not opt.images_optional:
        check_listed_files(table.image_root, table.images)

    split, split_record = _assign_splits(table.part, opt)
    corrupted = (table.part == "train") | (table.part == "val")
    if table.entries is None:
        store, records = _dense_labels(table, split, corrupted, spec, opt)
    else:
        store, records = _sparse_labels(table, split, corrupted, spec, opt)

    policies = {"empty_images": opt.empty_images, **table.info.get("policies", {})}
    policies["image_files"] = "not checked (--images-optional)" if opt.images_optional else "checked"
    counts = {s: int((split == s).sum()) for s in SPLITS}
    if counts["train"] == 0:
        raise PumlcError(f"{table.image_root}: the train split would be empty ({counts['val']} image(s), all to val)")
    counts.update(
        {
            "read": n_read,
            "empty_in_source": n_empty,
            "dropped_empty": n_empty if opt.empty_images == "drop" else 0,
            "label_entries": len(store.entries),
        }
    )
    info = {k: v for k, v in table.info.items() if k != "policies"}
    manifest = {
        "format": "pumlc-prepared",
        "format_version": FORMAT_VERSION,
        "toolkit": {"name": "pumlc", "version": toolkit_version()},
        "source": info,
        "sources": table.sources,
        "image_root": str(Path(table.image_root).resolve()),
        "image_dirs": [str(Path(d).resolve()) for d in table.image_dirs],
        "classes": list(table.classes),
        "encoding": {"positive": 1, "negative": -1, "unknown": 0},
        "labels": store.rule(),
        "policies": policies,
        "seed": opt.seed,
        "corruptions": records,
        "corrupted_splits": ["train"] if opt.clean_val else ["train", "val"],
        "validation": split_record,
        "counts": counts,
    }
    populate = None
    if opt.cache_size is not None:
        manifest["image_cache"] = cache_record(opt.cache_size)

        def populate(tmp: Path) -> None:
            write_image_cache(table.image_root, table.images, tmp / CACHE_DIR, opt.cache_size, opt.cache_workers)

    write_prepared(Path(out), store, manifest, force=opt.force, populate=populate)
    return manifest


def _assign_splits(part: np.ndarray, opt: WriteOptions) -> tuple[np.ndarray, dict]:
    """train/val/test per row: a source's own validation part is val; without one, val is carved from train."""
    split = np.array(part, dtype="<U5")  # train / val / test
    if (part == "val").any():
        record = {"from": "the source's validation file", "n_val": int((part == "val").sum())}
    else:
        is_train = part == "train"
        is_val, record = carve_validation(int(is_train.sum()), opt.val_fraction, opt.seed)
        split[np.flatnonzero(is_train)] = np.where(is_val, "val", "train")
    record["clean_val"] = opt.clean_val
    return split.astype(str), record


def _dense_labels(table: LabelTable, split: np.ndarray, corrupted: np.ndarray, spec: CorruptionSpec, opt):
    """Exhaustive annotations (absent = negative): the corruptions see the training file's dense matrix (so the
    HCP mask is drawn exactly as published), then only the entries that differ from the absent pair are kept."""
    truth = table.truth
    observed = truth.copy()
    obs_tr, records = apply_corruptions(truth[corrupted], spec, opt.seed, table.classes)
    observed[corrupted] = obs_tr
    if opt.clean_val:
        val = split == "val"
        observed[val] = truth[val]
    return LabelStore.from_dense(table.images, split, truth, observed, table.absent_truth), records


def _sparse_labels(table: LabelTable, split: np.ndarray, corrupted: np.ndarray, spec: CorruptionSpec, opt):
    """Partial annotations (absent = unknown): the corruptions act on the stated entries only."""
    e = table.entries
    sel = corrupted[e.image]
    observed = e.observed.copy()
    observed[sel], records = apply_entry_corruptions(e.take(sel), spec, opt.seed, table.classes)
    if opt.clean_val:
        val = (split == "val")[e.image]
        observed[val] = e.observed[val]
    out = Entries(e.image, e.cls, e.truth, observed)
    keep = (out.truth != table.absent_truth) | (out.observed != table.absent_truth)
    rule = dict.fromkeys(SPLITS, table.absent_truth)
    return LabelStore(table.images, split, out.take(keep), table.absent_truth, rule), records
