"""Figures for `pumlc eval --plot`: per-class AP, and AP against each class's missing-positive rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pumlc_cli.atomic import atomic_path


def missing_positive_rate(truth: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Share of each class's true positives that the training labels do not mark positive: hidden positives plus
    false negatives, over true positives (NaN if none)."""
    pos = truth == 1
    n_pos = pos.sum(axis=0)
    missed = (pos & (observed != 1)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos > 0, missed / np.maximum(n_pos, 1), np.nan)


def plot_per_class(path: Path, classes: list[str], per_class_ap: np.ndarray, prepared: Any) -> None:
    """Sorted AP bars; a second panel when the training labels miss positives (noise or partial labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = np.asarray(per_class_ap, dtype=float)  # percent
    train = prepared.split_data("train")
    missed = missing_positive_rate(train.truth, train.observed)
    noisy = bool(np.nanmax(missed) > 0) if np.isfinite(missed).any() else False
    fig, axes = plt.subplots(1, 2 if noisy else 1, figsize=(14 if noisy else 9, max(4, 0.18 * len(classes))))
    axes = np.atleast_1d(axes)
    order = np.argsort(np.nan_to_num(ap, nan=-1.0))
    axes[0].barh([classes[i] for i in order], np.nan_to_num(ap[order]), color="tab:blue")
    axes[0].set_xlabel("AP (%)")
    axes[0].set_title("Per-class AP")
    axes[0].tick_params(axis="y", labelsize=7)
    if noisy:
        axes[1].scatter(missed * 100, ap, s=14)
        for i, name in enumerate(classes):
            if np.isfinite(ap[i]) and np.isfinite(missed[i]):
                axes[1].annotate(name, (missed[i] * 100, ap[i]), fontsize=6)
        axes[1].set_xlabel("missing positives (hidden + false negatives) in training labels (%)")
        axes[1].set_ylabel("AP (%)")
        axes[1].set_title("AP vs missing-positive rate")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=(path.suffix.lstrip(".") or "png"))
    plt.close(fig)
