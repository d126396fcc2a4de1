"""Annotation readers: each turns one dataset format into the same canonical `LabelTable`.

Why one table: corruption, splitting, writing and statistics then never need to know where labels came from.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from pumlc_cli.data.entries import Entries, reindex
from pumlc_cli.data.imagelist import ImageList
from pumlc_cli.errors import PumlcError
from pumlc_cli.inputs import read_input

POSITIVE, NEGATIVE, UNKNOWN = 1, -1, 0


@dataclass
class LabelTable:
    """Image-level labels as read from the source, before any corruption.

    `part` says which source file a row came from: "train" (later split into train/val), "val" (a source's own
    validation file) or "test". Rows keep the source's order (the annotation order matters: the HCP partial-label
    mask is drawn over it). Exhaustive annotations (COCO, VOC, CSV) give the dense `truth` matrix, where an absent
    class is a negative; partial ones (Open Images) give `entries` (truth and observed of the stated labels only)
    with `absent_truth` unknown.
    """

    classes: list[str]
    images: Sequence[str]  # posix paths relative to `image_root` (a list, or an ImageList at scale)
    part: np.ndarray  # str array, "train" | "val" | "test"
    truth: np.ndarray | None  # int8 [N, C], 1 / -1 / 0
    empty: np.ndarray  # bool [N], the source has no annotation at all for the image
    image_root: Path
    sources: list[dict] = field(default_factory=list)  # {"role", "path", "sha256"}
    info: dict = field(default_factory=dict)  # reader, class source, policies, reader-specific counts
    image_dirs: list[Path] = field(default_factory=list)  # the folders images are read from (default: the root)
    entries: Entries | None = None  # stated labels (sparse sources), image indices into `images`
    absent_truth: int = NEGATIVE

    def __post_init__(self) -> None:
        self.image_dirs = self.image_dirs or [self.image_root]
        n, c = len(self.images), len(self.classes)
        if (self.truth is None) == (self.entries is None):
            raise ValueError("a LabelTable holds either a dense truth matrix or entries")
        if self.truth is not None and self.truth.shape != (n, c):
            raise ValueError(f"truth has shape {self.truth.shape}, expected {(n, c)}")

    def subset(self, keep: np.ndarray) -> LabelTable:
        """Rows where `keep` is true, order preserved."""
        idx = np.flatnonzero(keep)
        return LabelTable(
            classes=list(self.classes),
            images=self.images.take(idx) if isinstance(self.images, ImageList) else [self.images[i] for i in idx],
            part=self.part[idx],
            truth=None if self.truth is None else self.truth[idx],
            empty=self.empty[idx],
            image_root=self.image_root,
            sources=self.sources,
            info=self.info,
            image_dirs=self.image_dirs,
            entries=None if self.entries is None else reindex(self.entries, np.asarray(keep, dtype=bool)),
            absent_truth=self.absent_truth,
        )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_source(path: Path, what: str) -> bytes:
    """Read a whole source file; a missing, unreadable or irregular file (a FIFO, a folder) is one line naming it."""
    return read_input(path, what)


def csv_rows(text: str, path: Path | str) -> Iterator[list[str]]:
    """The records of a CSV text; a malformed one (an unclosed quote, a field over the csv module's 131,072
    characters) is one line naming the file and the line."""
    reader = csv.reader(io.StringIO(text))
    try:
        yield from reader
    except csv.Error as err:
        raise PumlcError(f"{path}: line {reader.line_num}: malformed CSV ({err})") from None


def contained_name(name: object, where: str) -> str:
    """An image path from an annotation, normalised (`./a//b.jpg` -> `a/b.jpg`); refused when it is not a
    non-empty string or could leave the image root (absolute, `..`), so no file outside the root is ever read."""
    if not isinstance(name, str):
        raise PumlcError(f"{where}: image file name must be a string, got {name!r}")
    if "\x00" in name:
        raise PumlcError(f"{where}: image file name {name!r} contains a NUL character")
    path = PurePosixPath(name.strip())
    if path.is_absolute():
        raise PumlcError(f"{where}: image path {name!r} is absolute; paths must stay inside the image folder")
    parts = [p for p in path.parts if p not in ("", ".")]
    if ".." in parts:
        raise PumlcError(f"{where}: image path {name!r} leaves the image folder ('..')")
    if not parts:
        raise PumlcError(f"{where}: empty image file name")
    return "/".join(parts)


def refuse_duplicates(images: list[str], origin: Callable[[int], str]) -> None:
    """The same image twice (after normalisation) would be two rows with possibly different labels: refuse,
    naming both entries (`origin(i)` describes row i)."""
    first: dict[str, int] = {}
    for i, name in enumerate(images):
        j = first.setdefault(name, i)
        if j != i:
            raise PumlcError(f"{origin(i)}: image {name!r} is listed twice (also {origin(j)})")


def check_listed_files(root: Path, images: list[str], examples: int = 3) -> None:
    """Every listed image exists, is a regular file (not a folder, FIFO or device, which a decoder would block on
    or fail late) and is not a symlink leading out of the image folder (it would read, and cache, a file the
    dataset does not hold; a linked sub-folder, as in `JPEGImages -> /disk/voc`, is a layout and is followed);
    two entries reaching one file through a symlink are the same image listed twice.
    One `lstat` per image and one `realpath` per folder; refusals give counts and a few examples."""
    real_root = os.path.realpath(root)
    real_dirs: dict[str, str] = {}
    listed: dict[str, str] = {}  # real path -> the first entry reaching it
    missing: list[str] = []
    irregular: list[str] = []
    escaping: list[str] = []
    for rel in images:
        folder, _, name = rel.rpartition("/")
        if folder not in real_dirs:
            real_dirs[folder] = os.path.realpath(os.path.join(real_root, folder))
        path = os.path.join(real_dirs[folder], name)
        try:
            st: os.stat_result | None = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                path, st = os.path.realpath(path), None
        except OSError:
            missing.append(rel)
            continue
        if st is None and not any(os.path.commonpath([path, top]) == top for top in (real_root, real_dirs[folder])):
            escaping.append(f"{rel} -> {path}")
            continue
        try:
            mode = (st or os.stat(path)).st_mode
        except OSError:
            missing.append(rel)
            continue
        if not stat.S_ISREG(mode):
            irregular.append(rel)
            continue
        first = listed.setdefault(path, rel)
        if first != rel:
            raise PumlcError(f"{root}: image {rel!r} is listed twice (also as {first!r}: both are {path})")
    if escaping:
        raise PumlcError(
            f"{root}: {len(escaping)} of {len(images)} listed images are symlinks leading outside the image folder "
            f"(e.g. {', '.join(escaping[:examples])}); give the folder they live in"
        )
    if missing and not (Path(root) / missing[0]).parent.is_dir():
        folder = (Path(root) / missing[0]).parent
        raise PumlcError(f"{folder}: image folder not found ({len(missing)} of {len(images)} listed images missing)")
    for bad, what in ((missing, "missing"), (irregular, "not regular files")):
        if bad:
            raise PumlcError(
                f"{root}: {len(bad)} of {len(images)} listed images are {what} (e.g. {', '.join(bad[:examples])})"
            )


def source_record(role: str, path: Path, data: bytes) -> dict:
    return {"role": role, "path": str(Path(path).resolve()), "sha256": sha256_bytes(data)}


__all__ = [
    "LabelTable",
    "POSITIVE",
    "NEGATIVE",
    "UNKNOWN",
    "check_listed_files",
    "contained_name",
    "read_source",
    "refuse_duplicates",
    "source_record",
    "sha256_bytes",
]
