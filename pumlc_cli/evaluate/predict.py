"""`pumlc predict`: labels and scores for image files, folders or globs, through `load_model` (the Python API).

An unreadable image is reported and skipped; it never stops the batch.
"""

from __future__ import annotations

import csv
import glob
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pumlc_cli.errors import PumlcError

MANY_CLASSES = 100  # above this, predictions carry the TOP_SCORES best scores, not every class's
TOP_SCORES = 20

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class PredictOptions:
    """Everything `pumlc predict` was given."""

    ckpt: Path
    paths: list[str]
    threshold: float | None  # None: the val thresholds of the checkpoint, else 0.5
    top_k: int | None
    weights: Literal["best", "regular", "ema"]
    json_file: Path | None
    csv_file: Path | None
    batch_size: int
    device: Literal["auto", "cuda", "cpu"]
    force: bool


@dataclass(frozen=True)
class LabelRule:
    """Which classes an image is labelled with: its `top_k` highest-scoring classes when given, else every class
    scoring at least its threshold (`thresholds`, one per class). The one place `pumlc predict`'s labelling rule
    lives; `text` says where the thresholds came from."""

    thresholds: np.ndarray
    text: str
    top_k: int | None = None

    @classmethod
    def for_model(cls, thresholds: dict | None, n_classes: int, override: float | None, top_k: int | None) -> LabelRule:
        """`--threshold` when given, else the val thresholds of the model, else 0.5."""
        from pumlc_cli.evaluate.thresholds import decision_rule

        cut, text = decision_rule(thresholds, n_classes, override)
        return cls(cut, text, top_k)

    def labels(self, scores: np.ndarray, classes: list[str]) -> list[str]:
        """The labels of one image's score row, best first."""
        ranked = scores.argsort()[::-1]
        if self.top_k:
            return [classes[i] for i in ranked[: self.top_k]]
        return [classes[i] for i in ranked if scores[i] >= self.thresholds[i]]

    def threshold(self) -> float | None:
        """The one threshold every class shares, or None (per-class thresholds, or top-k)."""
        same = not self.top_k and bool((self.thresholds == self.thresholds[0]).all())
        return float(self.thresholds[0]) if same else None

    def describe(self) -> str:
        return f"top {self.top_k}" if self.top_k else self.text


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given, folders searched recursively for image files, globs expanded; order kept, no repeats."""
    found: list[Path] = []
    for raw in paths:
        matches = [Path(m) for m in sorted(glob.glob(raw, recursive=True))] if glob.has_magic(raw) else [Path(raw)]
        if not matches:
            raise PumlcError(f"{raw}: no file matches")
        for path in matches:
            if path.is_dir():
                found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            elif path.exists():
                found.append(path)
            else:
                raise PumlcError(f"{path}: no such file or folder")
    return list(dict.fromkeys(found))


def run_predict(opts: PredictOptions) -> None:
    """Check the outputs, score every readable image, write the table and the --json/--csv report."""
    from pumlc_cli.evaluate.model import load_model
    from pumlc_cli.outputs import check_report_files
    from pumlc_cli.runtime.checkpoint import resolve_checkpoint

    if opts.json_file and opts.csv_file:
        raise PumlcError("give --json or --csv, not both")
    files = expand_paths(opts.paths)
    ckpt = resolve_checkpoint(opts.ckpt)
    check_report_files(
        {"--json": opts.json_file, "--csv": opts.csv_file},
        inputs=[ckpt, *(p for p in opts.paths if not glob.has_magic(p)), *files],
        force=opts.force,
    )
    model = load_model(ckpt, opts.device, opts.weights)
    rule = LabelRule.for_model(model.thresholds, len(model.classes), opts.threshold, opts.top_k)
    scored = model.score_files(files, opts.batch_size)
    rows = [
        {"image": str(path), "labels": rule.labels(scores, model.classes), "scores": _scores(scores, model.classes)}
        for path, scores in zip(scored.paths, scored.scores, strict=True)
    ]
    skipped = [(str(path), why) for path, why in scored.skipped]
    _report(rows, skipped, rule, opts.json_file, opts.csv_file, model.classes)
    if not rows:
        raise PumlcError("no readable image among the given paths")


def _scores(scores: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Every class's score, or above `MANY_CLASSES` classes (Open Images: 9,605) the `TOP_SCORES` best (and so the
    labelled ones, which are among the best unless the threshold is low): thousands of scores per image help nobody."""
    keep = range(len(classes)) if len(classes) <= MANY_CLASSES else np.argsort(-scores, kind="stable")[:TOP_SCORES]
    return {classes[i]: round(float(scores[i]), 6) for i in keep}


def _report(
    rows: list[dict],
    skipped: list[tuple[str, str]],
    rule: LabelRule,
    json_file: Path | None,
    csv_file: Path | None,
    classes: list[str],
) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from pumlc_cli.textout import is_stdout, table_console, write_text

    err_console = Console(stderr=True)
    for _, why in skipped:
        err_console.print(f"[yellow]skipped[/] {why}", highlight=False)
    if json_file:
        per_class = {} if rule.top_k else {"thresholds": dict(zip(classes, rule.thresholds.tolist(), strict=True))}
        doc = {
            "rule": rule.describe(),
            "threshold": rule.threshold(),
            **per_class,
            "top_k": rule.top_k,
            "predictions": rows,
            "skipped": [{"image": p, "error": e} for p, e in skipped],
        }
        write_text(json_file, json.dumps(doc, indent=2) + "\n")
    if csv_file:
        buf = io.StringIO()
        writer = csv.writer(buf)
        if len(classes) <= MANY_CLASSES:
            writer.writerow(["image", "labels", *classes])
            for row in rows:
                writer.writerow([row["image"], ";".join(row["labels"]), *(row["scores"][c] for c in classes)])
        else:  # one column per class would be thousands: the best scores as class=score
            writer.writerow(["image", "labels", "top_scores"])
            for row in rows:
                top = ";".join(f"{c}={v}" for c, v in row["scores"].items())
                writer.writerow([row["image"], ";".join(row["labels"]), top])
        write_text(csv_file, buf.getvalue())
    table = Table(title=f"predictions ({rule.describe()})", box=box.SIMPLE_HEAD)
    table.add_column("image", overflow="fold", ratio=1)
    table.add_column("labels (score)", ratio=1)
    for row in rows:
        labelled = (f"{c} ({row['scores'][c]:.2f})" if c in row["scores"] else c for c in row["labels"])
        table.add_row(row["image"], ", ".join(labelled) or "-")
    table_console(stderr=is_stdout(json_file) or is_stdout(csv_file)).print(table)
    if skipped:
        err_console.print(f"{len(skipped)} unreadable image(s) skipped, {len(rows)} predicted")
