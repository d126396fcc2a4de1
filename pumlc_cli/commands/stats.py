"""`pumlc stats DIR`: summary, per-class table and histogram of a prepared folder (rich tables or JSON)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def stats(
    path: Annotated[Path, typer.Argument(help="Prepared folder (from `pumlc prepare`).")],
    split: Annotated[str, typer.Option(help="Split for the per-class table: train | val | test | all.")] = "train",
    sort: Annotated[
        str,
        typer.Option(
            help="Per-class order: index | name | positives | observed | fn | fp | unknown | precision | recall."
        ),
    ] = "index",
    json_file: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the statistics as JSON to FILE ('-': stdout only)."),
    ] = None,
) -> None:
    """How many labels each split holds, how noisy the observed labels are, and how much is unknown."""
    from rich.console import Console
    from rich.table import Table

    from pumlc_cli.atomic import write_text_atomic
    from pumlc_cli.errors import PumlcError
    from pumlc_cli.prepared import load_prepared
    from pumlc_cli.stats import SORT_KEYS, dataset_stats, sort_rows

    if split not in ("train", "val", "test", "all"):
        raise PumlcError(f"--split must be train, val, test or all, got {split!r}")
    if sort not in SORT_KEYS:
        raise PumlcError(f"--sort must be one of {', '.join(SORT_KEYS)}, got {sort!r}")
    from pumlc_cli.outputs import check_output_file, prepared_inputs

    # an existing report is replaced as before; the data it describes and its own files never are
    check_output_file(json_file, "--json", inputs=prepared_inputs(path), force=True)
    prepared = load_prepared(path)
    result = dataset_stats(prepared, split)
    result["per_class"] = sort_rows(result["per_class"], sort)
    if json_file is not None:
        text = json.dumps(result, indent=2) + "\n"
        if str(json_file) == "-":
            typer.echo(text, nl=False)
            return
        try:
            write_text_atomic(json_file, text)
        except OSError as err:
            raise PumlcError(f"{json_file}: cannot write ({err.strerror})") from None

    console = Console(width=None if sys.stdout.isatty() else 120)
    s = result["summary"]
    summ = Table(title=f"{path} — {split}", show_header=False)
    summ.add_column("what")
    summ.add_column("value", justify="right")
    for name, n in s["images_per_split"].items():
        summ.add_row(f"images ({name})", str(n))
    summ.add_row("classes", str(s["classes"]))
    summ.add_row("label cardinality (true positives / image)", _num(s["label_cardinality"]))
    summ.add_row("label density", _num(s["label_density"], 4))
    summ.add_row("observed positives / image", _num(s["observed_cardinality"]))
    summ.add_row(
        "observed positive / negative / unknown",
        " / ".join(_pct(s[f"observed_{k}_share"]) for k in ("positive", "negative", "unknown")),
    )
    summ.add_row("missed positives (true +, observed −)", str(s["missed_positives"]))
    summ.add_row("injected false positives (true −, observed +)", str(s["injected_false_positives"]))
    summ.add_row("true positives still observed positive", _pct(s["observed_positive_recall"]))
    if s["truth_unknown_entries"]:
        summ.add_row("unknown in truth (e.g. VOC difficult-only)", str(s["truth_unknown_entries"]))
    summ.add_row("corruptions", " → ".join(result["corruptions"]) or "none")
    console.print(summ)
    if s["images"] == 0:
        console.print(f"split {split} holds no images")
        return
    if s["truth_equals_observed"]:
        console.print("truth equals observed here: no injected noise or hidden labels to measure")

    tab = Table(
        title=f"per class ({split}, sorted by {sort})",
        header_style="bold",
        caption="missed+: true positive observed negative (FN = missed+ / true+); "
        "inj.FP: true negative observed positive (FP = inj.FP / true negatives); "
        "prec.: share of observed positives that are true; recall: share of true positives observed positive",
    )
    for col in ("#", "class", "true+", "obs+", "missed+", "FN", "inj.FP", "FP", "unknown", "prec.", "recall"):
        tab.add_column(col, justify="left" if col == "class" else "right")
    for r in result["per_class"]:
        tab.add_row(
            str(r["index"]),
            r["class"],
            str(r["true_positives"]),
            str(r["observed_positives"]),
            str(r["missed_positives"]),
            _pct(r["fn_rate"]),
            str(r["injected_fps"]),
            _pct(r["fp_rate"]),
            _pct(r["unknown_share"]),
            _pct(r["precision"]),
            _pct(r["recall"]),
        )
    console.print(tab)

    hist = Table(title=f"positives per image ({split})", header_style="bold")
    hist.add_column("positives", justify="right")
    hist.add_column("images (truth)", justify="right")
    hist.add_column("images (observed)", justify="right")
    hist.add_column("")
    h_t, h_o = result["histogram"]["truth"], result["histogram"]["observed"]
    keys = sorted({int(k) for k in h_t} | {int(k) for k in h_o})
    top = max([*h_t.values(), *h_o.values(), 1])
    for k in keys:
        t, o = h_t.get(str(k), 0), h_o.get(str(k), 0)
        hist.add_row(str(k), str(t), str(o), "█" * max(0, round(30 * t / top)))
    console.print(hist)
