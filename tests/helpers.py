"""Helpers for tests that drive the real CLI in child processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

TINY_MODEL = "test_resnet"  # timm's 0.4M-parameter ResNet with BasicBlocks: real 3x3 convs, fast on a CPU


def run_cli(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m pumlc_cli ARGS`, returning the completed process (stdout/stderr as text)."""
    done = subprocess.run(
        [sys.executable, "-m", "pumlc_cli", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"pumlc {' '.join(map(str, args))} failed ({done.returncode}):\n{done.stderr[-4000:]}"
        )
    return done


def train_args(data: Path, out: Path, *extra: str, loss: str = "pu", epochs: int = 2) -> list[str]:
    """A small CPU run: tiny model, 32 px, batch 16, no workers."""
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
