"""`pumlc predict CKPT PATHS...`: labels and scores for image files, folders or globs.

An unreadable image is reported and skipped; it never stops the batch.
"""

from __future__ import annotations

import csv
import glob
import io
import json
from pathlib import Path

import typer

from pumlc_cli.atomic import write_text_atomic
from pumlc_cli.errors import PumlcError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


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


def predict(
    ckpt: Path = typer.Argument(..., help="Checkpoint from `pumlc train`."),
    paths: list[str] = typer.Argument(..., help="Image files, folders or glob patterns."),
    threshold: float = typer.Option(0.5, min=0.0, max=1.0),
    json_file: Path | None = typer.Option(None, "--json", help="Write predictions as JSON."),
    csv_file: Path | None = typer.Option(None, "--csv", help="Write predictions as CSV (image, labels, scores)."),
    weights: str = typer.Option("best", help="best (val-selected), regular or ema."),
    batch_size: int = typer.Option(32, min=1),
    device: str = typer.Option("auto", help="cuda, cpu or auto."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --json/--csv file."),
) -> None:
    """Predict labels above the threshold for every readable image."""
    import torch

    from pumlc_cli.checkpoint import load_checkpoint
    from pumlc_cli.data import EvalTransform, open_rgb
    from pumlc_cli.evaluate import model_from_checkpoint, selected_weights

    if json_file and csv_file:
        raise PumlcError("give --json or --csv, not both")
    if weights not in {"best", "regular", "ema"}:
        raise PumlcError(f"--weights must be best, regular or ema, not {weights!r}")
    files = expand_paths(paths)
    from pumlc_cli.outputs import check_report_files

    check_report_files(
        {"--json": json_file, "--csv": csv_file},
        inputs=[ckpt, *(p for p in paths if not glob.has_magic(p)), *files],
        force=force,
    )
    payload = load_checkpoint(ckpt)
    classes = list(payload["classes"])
    kind = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(kind)
    chosen = selected_weights(payload) if weights == "best" else weights
    model = model_from_checkpoint(payload, chosen, dev)
    transform = EvalTransform(int(payload["config"]["image_size"]))

    rows: list[dict] = []
    skipped: list[tuple[str, str]] = []
    batch: list[tuple[Path, torch.Tensor]] = []

    def flush() -> None:
        if not batch:
            return
        images = torch.stack([t for _, t in batch]).to(dev)
        with torch.no_grad():
            probs = torch.sigmoid(model(images).float()).cpu().numpy()
        for (path, _), p in zip(batch, probs, strict=True):
            labels = [(classes[i], float(p[i])) for i in p.argsort()[::-1] if p[i] >= threshold]
            rows.append(
                {
                    "image": str(path),
                    "labels": [c for c, _ in labels],
                    "scores": {c: round(float(s), 6) for c, s in zip(classes, p, strict=True)},
                }
            )
        batch.clear()

    for path in files:
        try:
            batch.append((path, transform(open_rgb(path))))
        except PumlcError as err:
            skipped.append((str(path), str(err)))
            continue
        if len(batch) == batch_size:
            flush()
    flush()
    _report(rows, skipped, threshold, json_file, csv_file, classes)
    if not rows:
        raise PumlcError("no readable image among the given paths")


def _report(
    rows: list[dict],
    skipped: list[tuple[str, str]],
    threshold: float,
    json_file: Path | None,
    csv_file: Path | None,
    classes: list[str],
) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    err_console = Console(stderr=True)
    for _, why in skipped:
        err_console.print(f"[yellow]skipped[/] {why}", highlight=False)
    if json_file:
        doc = {
            "threshold": threshold,
            "predictions": rows,
            "skipped": [{"image": p, "error": e} for p, e in skipped],
        }
        write_text_atomic(json_file, json.dumps(doc, indent=2) + "\n")
    if csv_file:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["image", "labels", *classes])
        for row in rows:
            writer.writerow([row["image"], ";".join(row["labels"]), *(row["scores"][c] for c in classes)])
        write_text_atomic(csv_file, buf.getvalue())
    table = Table(title=f"predictions (threshold {threshold})")
    table.add_column("image")
    table.add_column("labels (score)")
    for row in rows:
        table.add_row(row["image"], ", ".join(f"{c} ({row['scores'][c]:.2f})" for c in row["labels"]) or "-")
    Console(file=sys.stdout).print(table)
    if skipped:
        err_console.print(f"{len(skipped)} unreadable image(s) skipped, {len(rows)} predicted")
