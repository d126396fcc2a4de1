"""Output paths, checked before any work: a command never writes over its inputs, a checkpoint, a run or prepared
folder's own files, or (without --force) any existing file; and it fails in its first second, not after an hour.

`-` names standard output and passes every check (nothing on disk is touched).
"""

from __future__ import annotations

import json
import os
import socket
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from pumlc_cli.errors import PumlcError

STDOUT = "-"
# Files a `pumlc train` run folder and a `pumlc prepare` folder own; nothing else may write them.
RUN_FILES = frozenset({"last.pt", "best.pt", "config.json", "metrics.jsonl", "tensorboard"})
PREPARED_FILES = frozenset({"manifest.json", "labels.parquet", "images"})
CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".ckpt"})


def is_stdout(path: Path | str | None) -> bool:
    return path is not None and str(path) == STDOUT


def resolved_path(path: Path | str) -> Path:
    """Absolute, symlinks followed (also through a not-yet-existing tail), so aliases of one file compare equal."""
    return Path(os.path.expanduser(str(path))).resolve()


def overlaps(a: Path, b: Path) -> bool:
    """`a` equals, contains or lies inside `b` (both resolved)."""
    return a == b or a in b.parents or b in a.parents


def check_not_input(out: Path, flag: str, inputs: Iterable[Path | str | None]) -> None:
    """Refuse, even with --force, an output that equals, contains or lies inside an input."""
    for raw in inputs:
        if raw is None or is_stdout(raw):
            continue
        inp = resolved_path(raw)
        if overlaps(out, inp):
            how = "is" if out == inp else ("contains" if out in inp.parents else "lies inside")
            raise PumlcError(f"{out}: {flag} {how} the input {inp}; outputs never overlap inputs (choose another path)")


def is_run_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / n).is_file() for n in ("last.pt", "best.pt"))


def is_prepared_folder(folder: Path) -> bool:
    try:
        return json.loads((folder / "manifest.json").read_bytes()).get("format") == "pumlc-prepared"
    except (OSError, ValueError, AttributeError):
        return False


def is_checkpoint(path: Path) -> bool:
    """A file torch.save wrote (a zip holding `*/data.pkl`), or any existing file with a checkpoint suffix."""
    if not path.is_file():
        return False
    if path.suffix in CHECKPOINT_SUFFIXES:
        return True
    try:
        with zipfile.ZipFile(path) as zf:
            return any(name.endswith("/data.pkl") for name in zf.namelist()[:8])
    except (OSError, zipfile.BadZipFile):
        return False


def _check_owned(out: Path, flag: str) -> None:
    """Never write a checkpoint, nor a file a run or prepared folder owns (even with --force)."""
    if is_checkpoint(out):
        raise PumlcError(f"{out}: {flag} would overwrite a checkpoint; checkpoints are never overwritten")
    for folder in (out.parent, *out.parent.parents):
        if is_prepared_folder(folder):
            raise PumlcError(f"{out}: {flag} lies inside the prepared folder {folder}; write elsewhere")
    if out.name in RUN_FILES and is_run_folder(out.parent):
        raise PumlcError(f"{out}: {flag} would overwrite the run folder's own {out.name}; write elsewhere")


def check_parent(out: Path, flag: str, create: bool = False) -> None:
    """The folder `out` goes into exists (or, with `create`, can be made), is a folder and is writable."""
    parent = out.parent
    if create:
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    if not parent.exists():
        raise PumlcError(f"{out}: {flag}: folder {parent} does not exist")
    if not parent.is_dir():
        raise PumlcError(f"{out}: {flag}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PumlcError(f"{out}: {flag}: cannot write in {parent} (permission denied)")


def check_output_file(
    path: Path | str | None, flag: str, *, inputs: Iterable[Path | str | None], force: bool
) -> Path | None:
    """Check one report file (`--json`, `--csv`, `--plot`, `--save-scores`) before the work that fills it.

    Returns the resolved path (write there, so a symlink swapped in later cannot redirect the write), or None for
    no output or `-` (stdout).
    """
    if path is None or is_stdout(path):
        return None
    out = resolved_path(path)
    check_not_input(out, flag, inputs)
    if out.is_dir():
        raise PumlcError(f"{out}: {flag} names a folder; give a file name")
    _check_owned(out, flag)
    if out.exists() and not force:
        raise PumlcError(f"{out}: {flag} file already exists (use --force to replace it)")
    check_parent(out, flag)
    return out


def check_distinct(paths: dict[str, Path | None]) -> None:
    """Two outputs of one command must not be the same file."""
    seen: dict[Path, str] = {}
    for flag, path in paths.items():
        if path is None:
            continue
        if path in seen:
            raise PumlcError(f"{path}: given to both {seen[path]} and {flag}")
        seen[path] = flag


def check_output_folder(path: Path | str, flag: str, *, inputs: Iterable[Path | str | None]) -> Path:
    """Check a folder a command creates or fills (`prepare --out`, `train --out`): not an input, not a file,
    and its nearest existing ancestor is a writable folder."""
    if is_stdout(path):
        raise PumlcError(f"{flag} must be a folder, not '-'")
    out = resolved_path(path)
    check_not_input(out, flag, inputs)
    if out.exists() and not out.is_dir():
        raise PumlcError(f"{out}: {flag} is a file, not a folder")
    if is_checkpoint(out):
        raise PumlcError(f"{out}: {flag} is a checkpoint")
    check_parent(out, flag, create=True)
    return out


# ------------------------------------------------------------------------------------------------ claiming


def lock_path(out: Path) -> Path:
    """The lock sits beside the folder, so it also guards `prepare`'s temp-folder-then-rename."""
    return out.parent / f".{out.name}.pumlc-lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']}, {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def claim(out: Path, command: str) -> Iterator[None]:
    """Hold an exclusive lock on `out` for the block; a second claimant fails at once naming the holder.

    The lock file records the holder (pid, host, command) and is removed on release: unlinking it while it is
    held is safe because filelock re-checks after each flock that the inode it locked is still linked.
    """
    from filelock import FileLock, Timeout

    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)

    def record(fd: int) -> None:
        doc = {"pid": os.getpid(), "host": socket.gethostname(), "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(doc).encode(), 0)

    lock = FileLock(str(path), timeout=0, is_singleton=False, on_acquired=record)
    try:
        lock.acquire()
    except Timeout:
        raise PumlcError(f"{out}: in use by {_holder(path)}; wait for it to finish or choose another --out") from None
    try:
        yield
    finally:
        with suppress(FileNotFoundError):
            path.unlink()
        lock.release()


def check_report_files(
    files: dict[str, Path | None], *, inputs: Iterable[Path | str | None], force: bool
) -> dict[str, Path | None]:
    """`check_output_file` for each of a command's report files (flag -> path), and no two the same."""
    checked = {flag: check_output_file(path, flag, inputs=inputs, force=force) for flag, path in files.items()}
    check_distinct(checked)
    return checked


def prepared_inputs(folder: Path | str) -> list[Path]:
    """A prepared folder and the image folders it reads (its cache, the source images), for overlap checks."""
    folder = Path(folder)
    found = [folder]
    try:
        manifest = json.loads((folder / "manifest.json").read_bytes())
        found += [Path(d) for d in manifest.get("image_dirs") or [manifest["image_root"]]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return found


def check_model_file(
    path: Path | str,
    flag: str,
    *,
    inputs: Iterable[Path | str | None],
    force: bool,
    kind: str,
    replaceable: Callable[[Path], bool],
) -> Path:
    """Check a model file (`pumlc export --out`) as a report file, except that --force replaces an existing file
    only when `replaceable(path)` says it is a `kind` pumlc wrote: an export may be a zip with a .pt name, which
    any other output must leave alone as a checkpoint. Returns the resolved path."""
    if is_stdout(path):
        raise PumlcError(f"{flag} must be a file, not '-'")
    out = resolved_path(path)
    check_not_input(out, flag, inputs)
    if out.is_dir():
        raise PumlcError(f"{out}: {flag} names a folder; give a file name")
    if not out.exists():
        _check_owned(out, flag)
    elif not (out.is_file() and replaceable(out)):
        _check_owned(out, flag)  # a checkpoint or a run's own file is named as such
        raise PumlcError(f"{out}: {flag} file already exists and is not {kind} (--force replaces only that)")
    elif not force:
        raise PumlcError(f"{out}: {flag} file already exists (use --force to replace it)")
    check_parent(out, flag)
    return out
