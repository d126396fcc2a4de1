"""The prepared folder: `labels.parquet` + `manifest.json`, written atomically, read back by `load_prepared`.

Why a folder with a manifest: training and evaluation must be able to say exactly which labels (source files,
policies, corruptions, seeds) they ran on; `Prepared.manifest_hash` identifies it in checkpoints and reports.
Why byte-identical output: the Parquet file is written without timestamps or pandas metadata and with pinned
writer options, so the same inputs, options and seed give the same bytes (and the same hash).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pumlc_cli.atomic import temp_dir_beside
from pumlc_cli.data.corrupt import CorruptionSpec, apply_corruptions, check_seed
from pumlc_cli.data.image_cache import CACHE_DIR, cache_record, check_cache_size, write_image_cache
from pumlc_cli.data.readers import LabelTable, check_listed_files, contained_name
from pumlc_cli.data.splits import carve_validation
from pumlc_cli.errors import PumlcError
from pumlc_cli.inputs import input_folder, read_input

LABELS_FILE = "labels.parquet"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
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

    images: list[str]
    truth: np.ndarray
    observed: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class Prepared:
    """A prepared folder loaded in memory (see `load_prepared`)."""

    path: Path
    frame: object  # pandas.DataFrame: image, split, truth:<c>..., observed:<c>...
    manifest: dict
    classes: list[str]
    image_root: Path  # where images are read from: the image cache when the folder has one
    manifest_hash: str
    source_image_root: Path  # the original images the table was read from
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def splits(self) -> list[str]:
        """Split names present in the table, in train/val/test order."""
        present = set(self.frame["split"].unique())
        return [s for s in SPLITS if s in present]

    def split_data(self, name: str) -> SplitData:
        """Rows of split `name` ("train", "val", "test"; an absent split gives empty arrays)."""
        if name not in SPLITS:
            raise PumlcError(f"unknown split {name!r}: expected one of {', '.join(SPLITS)}")
        if name not in self._cache:
            rows = self.frame[self.frame["split"] == name]
            truth = rows[[f"truth:{c}" for c in self.classes]].to_numpy(dtype=np.int8)
            observed = rows[[f"observed:{c}" for c in self.classes]].to_numpy(dtype=np.int8)
            self._cache[name] = SplitData(rows["image"].astype(str).tolist(), truth, observed)
        return self._cache[name]

    def image_path(self, rel: str) -> Path:
        """Absolute path of an image listed in the table."""
        return self.image_root / rel


def load_prepared(path: str | Path) -> Prepared:
    """Read a folder written by `pumlc prepare`; a missing, damaged or hand-edited folder is a `PumlcError`."""
    import pandas as pd

    path = Path(path)
    man_file, lab_file = path / MANIFEST_FILE, path / LABELS_FILE
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
    if len(set(classes)) != len(classes):
        raise PumlcError(f"{man_file}: a class is listed twice")
    if not lab_file.exists():
        raise PumlcError(f"{lab_file}: missing")
    data = read_input(lab_file, "label table")
    expected_hash = manifest.get("labels_sha256")
    if expected_hash is not None and hashlib.sha256(data).hexdigest() != expected_hash:
        raise PumlcError(f"{lab_file}: changed since `pumlc prepare` wrote it (sha256 differs from {man_file.name})")
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as err:  # pyarrow raises several types for damaged files
        raise PumlcError(f"{lab_file}: cannot read ({str(err).splitlines()[0] if str(err) else err})") from None
    _check_frame(frame, classes, lab_file)
    return Prepared(
        path=path,
        frame=frame,
        manifest=manifest,
        classes=classes,
        image_root=image_root,
        manifest_hash=hashlib.sha256(raw).hexdigest(),
        source_image_root=source_root,
    )


def _check_frame(frame, classes: list[str], lab_file: Path) -> None:
    """Columns match the manifest's classes exactly; labels are -1/0/1; splits are known; image paths are
    contained and unique."""
    label_cols = [f"truth:{c}" for c in classes] + [f"observed:{c}" for c in classes]
    expected = ["image", "split", *label_cols]
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise PumlcError(f"{lab_file}: missing columns {', '.join(missing[:5])} (do not match the manifest's classes)")
    extra = [c for c in frame.columns if c not in expected]
    if extra:
        raise PumlcError(f"{lab_file}: columns {', '.join(extra[:5])} are not in the manifest's classes")
    labels = frame[label_cols].to_numpy()
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < -1 or labels.max() > 1):
        import pandas as pd

        values = set(labels.ravel().tolist())  # any types: strings, floats, None
        bad = sorted(repr(v) for v in values if isinstance(v, str | bytes) or v not in (-1, 0, 1))[:3]
        kinds = sorted({str(t) for t in frame[label_cols].dtypes if not pd.api.types.is_integer_dtype(t)})
        found = ", ".join(bad) if bad else f"{'/'.join(kinds)} columns"  # e.g. floats that are all -1, 0 or 1
        raise PumlcError(f"{lab_file}: labels must be -1, 0 or 1, found {found}")
    splits = set(frame["split"].unique())
    if not splits <= set(SPLITS):
        bad = sorted(map(str, splits - set(SPLITS)))
        raise PumlcError(f"{lab_file}: unknown split(s) {', '.join(bad)} (expected {', '.join(SPLITS)})")
    images = frame["image"].tolist()
    for i, name in enumerate(images):
        if contained_name(name, f"{lab_file}: row {i}") != name:
            raise PumlcError(f"{lab_file}: row {i}: image path {name!r} is not normalised")
    if frame["image"].duplicated().any():
        dup = frame["image"][frame["image"].duplicated()].iloc[0]
        raise PumlcError(f"{lab_file}: image {dup!r} is listed twice")


# ---------------------------------------------------------------------------------------------- writing


def _arrow_table(images: list[str], split: np.ndarray, truth: np.ndarray, observed: np.ndarray, classes):
    import pyarrow as pa

    cols = {"image": pa.array(images, type=pa.string()), "split": pa.array(split.tolist(), type=pa.string())}
    for j, c in enumerate(classes):
        cols[f"truth:{c}"] = pa.array(np.ascontiguousarray(truth[:, j]), type=pa.int8())
    for j, c in enumerate(classes):
        cols[f"observed:{c}"] = pa.array(np.ascontiguousarray(observed[:, j]), type=pa.int8())
    return pa.table(cols)


def manifest_text(manifest: dict) -> str:
    """Indented JSON, but lists of plain values (class names, ids, shapes) on one line."""

    def collapse(match: re.Match) -> str:
        items = [x.strip() for x in match.group(1).split(",\n")]
        return "[" + ", ".join(items) + "]"

    text = json.dumps(manifest, indent=2, ensure_ascii=False)
    return _SCALAR_LIST.sub(collapse, text) + "\n"


_SCALAR_LIST = re.compile(r"\[\n((?:\s*(?:-?[\d.eE+-]+|\"(?:[^\"\\]|\\.)*\"|true|false|null),?\n)+)\s*\]")


def write_prepared(
    out: Path, table, manifest: dict, force: bool = False, populate: Callable[[Path], None] | None = None
) -> None:
    """Write both files into a temporary folder beside `out`, then rename it into place.

    `populate(tmp)` adds more files (the image cache) before the rename, so a failure leaves nothing behind.
    """
    import pyarrow.parquet as pq

    out = Path(out)
    if out.exists() and not force:
        raise PumlcError(f"{out}: already exists (use --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(out)
    try:
        pq.write_table(
            table,
            tmp / LABELS_FILE,
            version="2.6",
            compression="zstd",
            compression_level=3,
            use_dictionary=True,
            write_statistics=True,
            row_group_size=1 << 20,
            data_page_size=1 << 20,
            store_schema=False,
        )
        manifest = {**manifest, "labels_sha256": hashlib.sha256((tmp / LABELS_FILE).read_bytes()).hexdigest()}
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
    check_cache_size(opt.cache_size, opt.cache_workers)
    n_read = len(table.images)
    n_empty = int(table.empty.sum())
    if opt.empty_images == "drop":
        table = table.subset(~table.empty)
    if not (table.part == "train").any():
        raise PumlcError(f"{table.image_root}: no training images (after --empty-images {opt.empty_images})")
    if opt.check_images:
        check_image_files(table)
    else:
        check_listed_files(table.image_root, table.images)

    is_train = table.part == "train"
    truth = table.truth
    truth_tr = truth[is_train]
    obs_tr, records = apply_corruptions(truth_tr, spec, opt.seed, table.classes)
    is_val, split_record = carve_validation(len(truth_tr), opt.val_fraction, opt.seed)
    split_record["clean_val"] = opt.clean_val
    if opt.clean_val:
        obs_tr[is_val] = truth_tr[is_val]
    observed = truth.copy()
    observed[is_train] = obs_tr
    split = np.full(len(table.images), "test", dtype=object)
    split[np.flatnonzero(is_train)] = np.where(is_val, "val", "train")
    split = split.astype(str)

    policies = {"empty_images": opt.empty_images, **table.info.get("policies", {})}
    counts = {s: int((split == s).sum()) for s in SPLITS}
    if counts["train"] == 0:
        raise PumlcError(f"{table.image_root}: the train split would be empty ({counts['val']} image(s), all to val)")
    counts.update(
        {
            "read": n_read,
            "empty_in_source": n_empty,
            "dropped_empty": n_empty if opt.empty_images == "drop" else 0,
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

    arrow = _arrow_table(table.images, split, truth, observed, table.classes)
    write_prepared(Path(out), arrow, manifest, force=opt.force, populate=populate)
    return manifest
