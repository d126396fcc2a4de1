"""Atomic file writes: a reader or a crash never sees half a file; what is created respects the user's umask."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_dir_beside(out: Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden folder next to `out` (same file system, so it can be renamed into place). mkdtemp makes
    it 0700; it gets the mode a plain mkdir would have, as the folder it becomes is the user's."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=suffix, dir=out.parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


def remove_stale(out: Path) -> list[Path]:
    """Temp and replaced folders a killed run (`prepare`, `synth`) left beside `out`; call it holding `out`'s lock."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(?:[a-z0-9_]{{8}}\.tmp|old-[0-9a-f]{{32}})$")
    stale = [p for p in out.parent.iterdir() if pattern.match(p.name)] if out.parent.is_dir() else []
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers pick the format); rename it over `path`
    when the block succeeds, remove it when it fails. Writers create it with open(), so the umask applies."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: Path | str, text: str) -> None:
    """UTF-8; a file name that is not UTF-8 (kept by Python as surrogates) is written as its own bytes."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8", "surrogateescape"))


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
