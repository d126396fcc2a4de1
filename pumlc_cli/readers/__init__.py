"""Annotation readers: each turns one dataset format into the same canonical `LabelTable`.

Why one table: corruption, splitting, writing and statistics then never need to know where labels came from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pumlc_cli.errors import PumlcError

POSITIVE, NEGATIVE, UNKNOWN = 1, -1, 0


@dataclass
class LabelTable:
    """Image-level labels as read from the source, before any corruption.

    `part` says which source file a row came from: "train" (later split into train/val) or "test". Rows keep
    the source's order (the annotation order matters: the HCP partial-label mask is drawn over it).
    """

    classes: list[str]
    images: list[str]  # posix paths relative to `image_root`
    part: np.ndarray  # str array, "train" | "test"
    truth: np.ndarray  # int8 [N, C], 1 / -1 / 0
    empty: np.ndarray  # bool [N], the source has no annotation at all for the image
    image_root: Path
    sources: list[dict] = field(default_factory=list)  # {"role", "path", "sha256"}
    info: dict = field(default_factory=dict)  # reader, class source, policies, reader-specific counts

    def __post_init__(self) -> None:
        n, c = len(self.images), len(self.classes)
        if self.truth.shape != (n, c):
            raise ValueError(f"truth has shape {self.truth.shape}, expected {(n, c)}")

    def subset(self, keep: np.ndarray) -> LabelTable:
        """Rows where `keep` is true, order preserved."""
        idx = np.flatnonzero(keep)
        return LabelTable(
            classes=list(self.classes),
            images=[self.images[i] for i in idx],
            part=self.part[idx],
            truth=self.truth[idx],
            empty=self.empty[idx],
            image_root=self.image_root,
            sources=self.sources,
            info=self.info,
        )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_source(path: Path, what: str) -> bytes:
    """Read a whole source file; a missing or unreadable file is a one-line user error naming it."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise PumlcError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise PumlcError(f"{path}: {what} is a directory, expected a file") from None
    except OSError as err:
        raise PumlcError(f"{path}: cannot read {what} ({err.strerror})") from None


def source_record(role: str, path: Path, data: bytes) -> dict:
    return {"role": role, "path": str(Path(path).resolve()), "sha256": sha256_bytes(data)}


__all__ = ["LabelTable", "POSITIVE", "NEGATIVE", "UNKNOWN", "read_source", "source_record", "sha256_bytes"]
