"""Claiming a `train --out` folder: checked, locked for the whole run, and left as found when the start fails."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pumlc_cli.atomic import write_bytes_atomic
from pumlc_cli.outputs import STALE_TEMP, check_output_folder, claim


@contextmanager
def claim_run_folder(out: Path, *, inputs: Iterable[Path | str | None]) -> Iterator[Path]:
    """Check `out` (not an input, not a file, writable; a new, empty or pumlc run folder),
    hold its lock for the block, remove temp files a killed run left, and, when the block fails before any
    checkpoint exists, remove what it created (a failed start leaves nothing)."""
    target = check_output_folder(out, "--out", inputs=inputs, kind="run")
    created = not target.exists()
    before = {} if created else {p.name: p for p in target.iterdir()}
    config = target / "config.json"
    config_bytes = config.read_bytes() if config.is_file() else None
    checkpoint = _signature(target / "last.pt")
    with claim(target, "pumlc train"):
        if target.is_dir():
            for stale in (p for p in target.iterdir() if STALE_TEMP.match(p.name)):
                stale.unlink(missing_ok=True)
        try:
            yield target
        except BaseException:
            if _signature(target / "last.pt") == checkpoint:  # no progress saved: leave the folder as found
                _undo(target, created, set(before), config_bytes)
            raise


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _undo(target: Path, created: bool, before: set[str], config_bytes: bytes | None) -> None:
    if created:
        shutil.rmtree(target, ignore_errors=True)
        return
    for entry in target.iterdir():
        if entry.name not in before:
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
    if config_bytes is not None:
        write_bytes_atomic(target / "config.json", config_bytes)
