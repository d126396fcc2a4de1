"""Helpers for tests that drive the real CLI, in this process or in a child process."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from pumlc_cli.cli import app
from pumlc_cli.errors import PumlcError

TINY_MODEL = "test_resnet"  # timm's 0.4M-parameter ResNet with BasicBlocks: real 3x3 convs, fast on a CPU


@dataclass
class Done:
    """What a finished command left: exit code and output, like subprocess.CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: object, check: bool = True, subprocess_: bool = False, timeout: float = 600) -> Done:
    """Run `pumlc ARGS` in this process (fast: no second torch import) or, with subprocess_, as `python -m`.

    In-process, a PumlcError becomes what `pumlc_cli.cli.main` makes of it: exit code 2 and one stderr line.
    """
    argv = [str(a) for a in args]
    if subprocess_:
        proc = subprocess.run(
            [sys.executable, "-m", "pumlc_cli", *argv], capture_output=True, text=True, timeout=timeout
        )
        done = Done(proc.returncode, proc.stdout, proc.stderr)
    else:
        result = CliRunner().invoke(app, argv)
        stderr = result.stderr
        code = result.exit_code
        if isinstance(result.exception, PumlcError):
            stderr += f"pumlc: error: {result.exception}\n"
            code = 2
        elif result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        done = Done(code, result.stdout, stderr)
    if check and done.returncode != 0:
        raise AssertionError(f"pumlc {' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done


def train_args(data: Path, out: Path, *extra: str, loss: str = "pu", epochs: int = 2) -> list[str]:
    """A small CPU run: tiny model from random weights, 32 px, batch 16, no workers."""
    return [
        "train",
        str(data),
        "--out",
        str(out),
        "--loss",
        loss,
        "--model",
        TINY_MODEL,
        "--epochs",
        str(epochs),
        "--batch-size",
        "16",
        "--lr",
        "3e-3",
        "--image-size",
        "32",
        "--scale-size",
        "36",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-pretrained",
        "--train",
        "all",
        *extra,
    ]


def chance_map(truth: np.ndarray) -> float:
    """Expected mAP (%) of random scores: each class's AP is then about its positive rate among known labels."""
    rates = []
    for col in truth.T:
        known = col != 0
        if (col == 1).any():
            rates.append((col[known] == 1).mean())
    return 100.0 * float(np.mean(rates))


def tree_digest(*paths: Path) -> dict[str, str]:
    """Every file under `paths` (or the file itself) -> sha256 of its bytes, plus each folder; compare two
    digests to show that a command left its inputs and earlier outputs byte-identical."""
    import hashlib

    out: dict[str, str] = {}
    for root in map(Path, paths):
        if root.is_file():
            out[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
            continue
        for path in sorted(root.rglob("*")) if root.exists() else []:
            if path.is_symlink() or not path.is_file():
                out[str(path)] = "link" if path.is_symlink() else "dir"
            else:
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def error_line(done: Done, code: int = 2) -> str:
    """The one `pumlc: error: ...` line a refused command printed (asserting exit code and that it is one line)."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("pumlc: error: "), done.stderr[-2000:]
    return lines[0]


def final_error_line(done: Done, code: int = 2) -> str:
    """Like `error_line` for a command that printed progress first: no traceback, one error line, the last."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and [line for line in lines if "error" in line.lower()] == lines[-1:]
    assert lines[-1].startswith("pumlc: error: "), done.stderr[-2000:]
    return lines[-1]
