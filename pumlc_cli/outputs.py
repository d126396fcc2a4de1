"""Output paths, checked before any work: every command's every output option goes through this module.

The policy: an output never overlaps an input (symlinks resolved); a checkpoint, a special file (device, FIFO,
socket) and a run or prepared folder's own files are never written; an existing output is replaced only with
--force, and only when pumlc could have made it (a report file of the kind the option writes, a folder holding
a pumlc manifest or run marker, or an empty folder). `-` names standard output for the text reports (--json,
--csv); binary ones (--plot, --save-scores) refuse it. A command fails in its first second, not after an hour.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Literal

from pumlc_cli.errors import PumlcError
from pumlc_cli.inputs import read_input

STDOUT = "-"
# Files a `pumlc train` run folder and a `pumlc prepare` folder own; nothing else may write them.
RUN_FILES = frozenset(
    {"last.pt", "best.pt", "config.json", "metrics.jsonl", "metrics.csv", "thresholds.json", "tensorboard"}
)
PREPARED_FILES = frozenset({"manifest.json", "labels.parquet", "images.parquet", "images"})
CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".ckpt"})
FOLDS_FILE = "folds.json"  # marks a folder `pumlc audit --folds` made
# Temp files of `pumlc_cli.atomic.atomic_path` (".last.tmp<pid>.pt"), left only by a killed process.
STALE_TEMP = re.compile(r"^\.[\w-]+\.tmp\d+(\.[\w]+)?$")
# What each report option writes: `-` (stdout) suits text only; --force replaces only a file of this kind.
REPORT_KINDS = {"--json": "json", "--csv": "csv", "--per-class-csv": "csv", "--plot": "png", "--save-scores": "npz"}
_BINARY = frozenset({"png", "npz"})


def is_stdout(path: Path | str | None) -> bool:
    return path is not None and str(path) == STDOUT


def resolved_path(path: Path | str) -> Path:
    """Absolute, symlinks followed (also through a not-yet-existing tail), so aliases of one file compare equal."""
    return Path(os.path.expanduser(str(path))).resolve()


def overlaps(a: Path, b: Path) -> bool:
    """`a` equals, contains or lies inside `b` (both resolved)."""
    return a == b or a in b.parents or b in a.parents


def check_not_input(out: Path, flag: str, inputs: Iterable[Path | str | None]) -> None:
    """Refuse, even with --force, an output that equals, contains or lies inside an input (naming the closest
    one: the annotation file itself rather than the image root holding it)."""
    hits = [
        inp for inp in (resolved_path(r) for r in inputs if r is not None and not is_stdout(r)) if overlaps(out, inp)
    ]
    if hits:
        inp = max(hits, key=lambda p: (p == out, len(p.parts)))
        how = "is" if out == inp else ("contains" if out in inp.parents else "lies inside")
        raise PumlcError(f"{out}: {flag} {how} the input {inp}; outputs never overlap inputs (choose another path)")


def is_run_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / n).is_file() for n in ("last.pt", "best.pt"))


def is_prepared_folder(folder: Path) -> bool:
    try:
        return json.loads(read_input(folder / "manifest.json", "manifest")).get("format") == "pumlc-prepared"
    except (PumlcError, OSError, ValueError, AttributeError, RecursionError):  # a FIFO never blocks the check
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


def _is_special(path: Path) -> bool:
    """An existing entry that is neither a regular file nor a folder: a device (/dev/full), FIFO or socket.
    Writing "over" one by temp + rename would replace it; writing into it could block or lose the data."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _holds_kind(path: Path, kind: str) -> bool:
    """Whether an existing file could be an earlier report of `kind` (or is empty): all --force may replace."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if not head:
        return True
    if kind == "json":
        return head.lstrip()[:1] in (b"{", b"[")
    if kind == "csv":
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as err:
            return err.start >= len(head) - 3  # only a character cut by the 4 KiB sample
        return b"\0" not in head
    if kind == "png":
        return head.startswith(b"\x89PNG\r\n\x1a\n")
    try:
        with zipfile.ZipFile(path) as zf:
            return all(name.endswith(".npy") for name in zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


_KIND_NAMES = {"json": "a JSON", "csv": "a CSV", "png": "a PNG", "npz": "an .npz"}


def check_output_file(
    path: Path | str | None, flag: str, *, inputs: Iterable[Path | str | None], force: bool
) -> Path | None:
    """Check one report file (`--json`, `--csv`, `--plot`, `--save-scores`) before the work that fills it.

    Returns the resolved path (write there, so a symlink swapped in later cannot redirect the write), or None for
    no output or `-` (stdout).
    """
    kind = REPORT_KINDS[flag]
    if path is None:
        return None
    if is_stdout(path):
        if kind in _BINARY:
            raise PumlcError(f"{flag} -: {_KIND_NAMES[kind]} file cannot go to standard output; give a file name")
        return None
    out = resolved_path(path)
    check_not_input(out, flag, inputs)
    if out.is_dir():
        raise PumlcError(f"{out}: {flag} names a folder; give a file name")
    if _is_special(out):
        raise PumlcError(
            f"{out}: {flag} is not a regular file (a device, FIFO or socket); pumlc writes only regular files"
            + (" (use '-' for standard output)" if kind not in _BINARY else "")
        )
    _check_owned(out, flag)
    if out.exists():
        if not force:
            raise PumlcError(f"{out}: {flag} file already exists (use --force to replace it)")
        if not _holds_kind(out, kind):
            raise PumlcError(
                f"{out}: {flag} --force replaces only {_KIND_NAMES[kind]} report, and this file holds something "
                "else; choose another name"
            )
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


FolderKind = Literal["prepared", "run", "folds"]
_FOLDER_NAMES = {"prepared": "prepared folders", "run": "run folders", "folds": "audit folds folders"}


def run_foreign_entries(folder: Path) -> list[str]:
    """Entries of `folder` that a pumlc run does not write."""
    return sorted(p.name for p in folder.iterdir() if p.name not in RUN_FILES and not STALE_TEMP.match(p.name))


def _folder_kind(folder: Path) -> FolderKind | None:
    if is_prepared_folder(folder):
        return "prepared"
    if is_run_folder(folder):
        return "run"
    if (folder / FOLDS_FILE).is_file():
        return "folds"
    return None


def check_replaceable(out: Path, flag: str, kind: FolderKind) -> None:
    """An existing `out` is one pumlc made for this purpose, or empty: --force (or reuse) never touches another
    folder, a run folder where a prepared folder is expected, or the reverse."""
    if not out.is_dir():
        return
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    found = _folder_kind(out)
    if kind == "run" and found in (None, "run") and not run_foreign_entries(out):
        return
    if found == kind:
        return
    if found is not None:
        raise PumlcError(
            f"{out}: {flag} is one of pumlc's {_FOLDER_NAMES[found]}, not one of its {_FOLDER_NAMES[kind]}; "
            "choose a new or empty folder"
        )
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    if kind == "run":
        raise PumlcError(f"{out}: holds files that are not a pumlc run's ({shown}); choose a new or empty folder")
    raise PumlcError(
        f"{out}: {flag} holds files pumlc did not write ({shown}); --force only replaces {_FOLDER_NAMES[kind]} "
        "and empty folders"
    )


def check_output_folder(path: Path | str, flag: str, *, inputs: Iterable[Path | str | None], kind: FolderKind) -> Path:
    """Check a folder a command creates or fills (`prepare`/`relabel`/`train --out`, `audit --folds-dir`): not an
    input, not a file, not inside a prepared folder, replaceable (`check_replaceable`), and its nearest existing
    ancestor is a writable folder."""
    if is_stdout(path):
        raise PumlcError(f"{flag} must be a folder, not '-'")
    out = resolved_path(path)
    check_not_input(out, flag, inputs)
    if out.exists() and not out.is_dir():
        raise PumlcError(f"{out}: {flag} is a file, not a folder")
    for folder in out.parents:
        if is_prepared_folder(folder):
            raise PumlcError(f"{out}: {flag} lies inside the prepared folder {folder}; write elsewhere")
    check_replaceable(out, flag, kind)
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
    """`check_output_file` for each of a command's report files (flag -> path), no two the same file and at most
    one on standard output."""
    to_stdout = [flag for flag, path in files.items() if is_stdout(path)]
    if len(to_stdout) > 1:
        raise PumlcError(f"{' and '.join(to_stdout)} are both '-'; only one report can go to standard output")
    checked = {flag: check_output_file(path, flag, inputs=inputs, force=force) for flag, path in files.items()}
    check_distinct(checked)
    return checked


def dataset_inputs(
    image_root: Path | str, image_dirs: Iterable[Path | str], sources: Iterable[Path | str]
) -> list[Path]:
    """A dataset's files for overlap checks: its image folders, its annotation files, and its image root when that
    is the folder the user named (it holds the image folders, as a COCO root or VOC folder does). A root that is
    only the common ancestor of folders given apart (possibly `/`) is left out: no output could avoid it."""
    root = Path(image_root)
    dirs = [Path(d) for d in image_dirs] or [root]
    named = all(d == root or d.parent == root for d in dirs)
    return [*([root] if named else []), *dirs, *(Path(s) for s in sources)]


def prepared_inputs(folder: Path | str) -> list[Path]:
    """What a prepared folder reads, for overlap checks: the folder itself and its dataset (`dataset_inputs`)."""
    folder = Path(folder)
    try:
        manifest = json.loads(read_input(folder / "manifest.json", "manifest"))
        sources = [s["path"] for s in manifest.get("sources") or []]
        return [folder, *dataset_inputs(manifest["image_root"], manifest.get("image_dirs") or [], sources)]
    except (PumlcError, OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return [folder]  # not a readable manifest: loading the folder will say so


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
    if _is_special(out):
        raise PumlcError(
            f"{out}: {flag} is not a regular file (a device, FIFO or socket); pumlc writes only regular files"
        )
    if not out.exists():
        _check_owned(out, flag)
    elif not (out.is_file() and replaceable(out)):
        _check_owned(out, flag)  # a checkpoint or a run's own file is named as such
        raise PumlcError(f"{out}: {flag} file already exists and is not {kind} (--force replaces only that)")
    elif not force:
        raise PumlcError(f"{out}: {flag} file already exists (use --force to replace it)")
    check_parent(out, flag)
    return out
