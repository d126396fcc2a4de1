"""Worker processes (data-loader workers, the image cache pool, torchrun ranks) that never outlive their parent
and never outnumber the CPUs.

Why: a worker that ignores SIGTERM (so a signal to the whole process group reaches the parent first, which saves a
checkpoint or removes its temp folder) would otherwise survive a `kill -9` of its parent, and a parent that exits
on an error while a worker is still referenced would wait for it forever.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from pumlc_cli.runtime.interrupt import SIGNALS

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: a container's or a scheduler's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cap_workers(flag: str, requested: int) -> int:
    """`requested` worker processes, at most one per available CPU; a capped value prints one notice (rank 0)."""
    cpus = available_cpus()
    if requested <= cpus:
        return requested
    if os.environ.get("RANK", "0") == "0":
        print(f"pumlc: note: {flag} {requested} capped to {cpus}, the CPUs available to this process", file=sys.stderr)
    return cpus


def die_with_parent(parent: int | None = None) -> None:
    """Ask Linux to SIGKILL this process when its parent exits, however it exits (PR_SET_PDEATHSIG). A parent
    that is already gone (`parent` no longer the parent pid) ends this process at once."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def child_pids(parent: int) -> list[int]:
    """The processes whose parent is `parent` (from /proc: torchrun's workers, each in a session of its own)."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            found.append(int(stat_file.parent.name))
    return found


def init_worker(*_: object) -> None:
    """Initializer of every worker process (image cache pool, DataLoader: the worker id argument is ignored).

    SIGINT and SIGTERM, also when sent to the whole process group, are left to the parent: it saves a checkpoint or
    removes its temp folder, then shuts the workers down (a worker killed first would end the run with an error
    instead). The worker dies with its parent, even when the parent is killed with SIGKILL.
    """
    import multiprocessing

    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    die_with_parent(parent.pid if parent is not None else None)


def end_children() -> None:
    """Kill the multiprocessing children still alive (workers of a loader an error left behind) and reap them.

    The last step before exiting: Python's own exit handler would send them SIGTERM, which workers ignore, and then
    wait for them forever. Loaders shut their workers down themselves; this only catches what an error skipped.
    """
    if "multiprocessing" not in sys.modules:
        return
    import multiprocessing

    children = multiprocessing.active_children()
    if not children:
        return
    # a data loader's SIGCHLD handler would report these deaths as a worker failure
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in children:
        child.kill()
    for child in children:
        child.join(timeout=5)
