"""`pumlc predict CKPT PATHS...`: labels and scores for image files, folders or globs.

An unreadable image is reported and skipped; it never stops the batch.
"""

from __future__ import annotations

import csv
import glob
import io
import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from pumlc_cli.errors import PumlcError
from pumlc_cli.help import examples

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

EXAMPLES = examples(
    "pumlc predict runs/pu photo.jpg holiday/ --top-k 3",
    "pumlc predict runs/pu 'imgs/**/*.jpg' --csv predictions.csv",
)


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


_OUT = "Output"


def predict(
    ckpt: Annotated[Path, typer.Argument(help="Run folder (its best.pt) or a checkpoint from `pumlc train`.")],
    paths: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns.")],
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Label the classes scoring at least this.")] = 0.5,
    top_k: Annotated[
        int | None, typer.Option(min=1, help="Label the K highest-scoring classes instead (threshold ignored).")
    ] = None,
    weights: Annotated[
        Literal["best", "regular", "ema"], typer.Option(help="Weights; best = selected on val.")
    ] = "best",
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write predictions as JSON ('-': stdout).", rich_help_panel=_OUT)
    ] = None,
    csv_file: Annotated[
        Path | None,
        typer.Option("--csv", help="Write image, labels, scores as CSV ('-': stdout).", rich_help_panel=_OUT),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 32,
    device: Annotated[Literal["auto", "cuda", "cpu"], typer.Option(help="Device.")] = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing --json/--csv file.", rich_help_panel=_OUT)
    ] = False,
) -> None:
    """Labels and scores for every readable image (an unreadable one is reported and skipped)."""
    import torch

    from pumlc_cli.data.datasets import EvalTransform, open_rgb
    from pumlc_cli.evaluate.evaluation import model_from_checkpoint, selected_weights
    from pumlc_cli.runtime.checkpoint import load_checkpoint, resolve_checkpoint

    if json_file and csv_file:
        raise PumlcError("give --json or --csv, not both")
    files = expand_paths(paths)
    ckpt = resolve_checkpoint(ckpt)
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
            ranked = p.argsort()[::-1]
            labels = (
                [classes[i] for i in ranked[:top_k]] if top_k else [classes[i] for i in ranked if p[i] >= threshold]
            )
            rows.append(
                {
                    "image": str(path),
                    "labels": labels,
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
    _report(rows, skipped, {"threshold": threshold, "top_k": top_k}, json_file, csv_file, classes)
    if not rows:
        raise PumlcError("no readable image among the given paths")


def _report(
    rows: list[dict],
    skipped: list[tuple[str, str]],
    rule: dict,
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
        doc = {**rule, "predictions": rows, "skipped": [{"image": p, "error": e} for p, e in skipped]}
        write_text(json_file, json.dumps(doc, indent=2) + "\n")
    if csv_file:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["image", "labels", *classes])
        for row in rows:
            writer.writerow([row["image"], ";".join(row["labels"]), *(row["scores"][c] for c in classes)])
        write_text(csv_file, buf.getvalue())
    how = f"top {rule['top_k']}" if rule["top_k"] else f"threshold {rule['threshold']}"
    table = Table(title=f"predictions ({how})", box=box.SIMPLE_HEAD)
    table.add_column("image", overflow="fold", ratio=1)
    table.add_column("labels (score)", ratio=1)
    for row in rows:
        table.add_row(row["image"], ", ".join(f"{c} ({row['scores'][c]:.2f})" for c in row["labels"]) or "-")
    table_console(stderr=is_stdout(json_file) or is_stdout(csv_file)).print(table)
    if skipped:
        err_console.print(f"{len(skipped)} unreadable image(s) skipped, {len(rows)} predicted")
