"""Validation carve-out: a seeded share of the training file becomes `val`.

Why seeded from its own stream: the held-out images must not depend on which corruptions were asked for, so
two runs that differ only in `--partial` compare on the same validation images.
"""

from __future__ import annotations

import numpy as np

from pumlc_cli.data.corrupt import rng_description, step_rng
from pumlc_cli.errors import PumlcError


def carve_validation(n_train: int, fraction: float, seed: int) -> tuple[np.ndarray, dict]:
    """Boolean mask over the training file's rows (True = validation) and the manifest record."""
    if not 0.0 <= fraction < 1.0:
        raise PumlcError(f"--val-fraction must be within [0, 1), got {fraction}")
    n_val = int(round(fraction * n_train))
    if fraction > 0 and n_train >= 2:
        n_val = min(max(n_val, 1), n_train - 1)
    is_val = np.zeros(n_train, dtype=bool)
    if n_val:
        is_val[step_rng(seed, "val_split").permutation(n_train)[:n_val]] = True
    record = {"fraction": fraction, "seed": seed, "rng": rng_description("val_split"), "n_val": int(n_val)}
    return is_val, record
