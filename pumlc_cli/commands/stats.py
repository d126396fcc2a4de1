"""`pumlc stats DIR`: summary, per-class table and histogram of a prepared folder (rich tables or JSON).

Every table fits 80 columns: percentages are whole numbers with one decimal, class names wrap rather than being
cut, and piped output has a fixed width (`pumlc_cli.textout`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from pumlc_cli.help import examples

EXAMPLES = examples(
    "pumlc stats prep --split val --sort fn",
    "pumlc stats prep --classes",
    "pumlc stats prep --split all --sort fn --json - | jq .summary",
)

Split = Literal["train", "val", "test", "all"]
MANY_CLASSES = 100  # above this, the per-class table shows the first and last rows of its order
SHOWN_ROWS = 20
Sort = Literal["index", "name", "positives", "observed", "hidden", "fn", "fp", "unknown", "precision", "recall"]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def stats(
    path: Annotated[Path, typer.Argument(help="Prepared folder (from `pumlc prepare`).")],
    split: Annotated[Split, typer.Option(help="Split of the per-class table and histogram.")] = "train",
    sort: Annotated[
        Sort | None,
        typer.Option(help=f"Order of the per-class table (default: index; positives above {MANY_CLASSES} classes)."),
    ] = None,
    rows: Annotated[
        int | None,
        typer.Option(
            min=0,
            help=f"Per-class rows shown: the first and last N/2 of the order (default: all up to {MANY_CLASSES} "
            f"classes, else {SHOWN_ROWS}: the most and least labelled; 0: all).",
        ),
    ] = None,
    classes: Annotated[
        bool, typer.Option("--classes", help="List the classes with their true positives per split, then stop.")
    ] = False,
    json_file: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the numbers as JSON to FILE ('-': JSON alone on stdout)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --json file.")] = False,
) -> None:
    """How many labels each split holds: hidden positives/negatives, false negatives/positives, per class."""
    from pumlc_cli.data.prepared import load_prepared
    from pumlc_cli.data.stats import class_counts, dataset_stats, sort_rows
    from pumlc_cli.outputs import check_output_file, prepared_inputs
    from pumlc_cli.textout import is_stdout, table_console, write_text

    target = check_output_file(json_file, "--json", inputs=prepared_inputs(path), force=force)
    prepared = load_prepared(path)
    if classes:
        rows = class_counts(prepared)
        if json_file is not None:
            write_text(target or "-", json.dumps({"path": str(prepared.path), "classes": rows}, indent=2) + "\n")
        if not is_stdout(json_file):
            _class_table(rows, path)
        return
    result = dataset_stats(prepared, split)
    many = len(prepared.classes) > MANY_CLASSES
    sort = sort or ("positives" if many else "index")
    result["per_class"] = sort_rows(result["per_class"], sort)
    if json_file is not None:
        write_text(target or "-", json.dumps(result, indent=2) + "\n")
        if is_stdout(json_file):
            return
    console = table_console()
    console.print(_summary_table(result, path, split))
    if result["summary"]["images"] == 0:
        console.print(f"split {split} holds no images")
        return
    if result["summary"]["truth_equals_observed"]:
        console.print("truth equals observed here: no injected noise or hidden labels to measure")
    shown = rows if rows is not None else (SHOWN_ROWS if many else 0)
    console.print(_per_class_table(result["per_class"], split, sort, shown))
    console.print(_histogram(result["histogram"], split))


def _table(title: str, **kw: Any):
    from rich import box
    from rich.table import Table

    return Table(title=title, box=box.SIMPLE_HEAD, padding=0, header_style="bold", **kw)


def _summary_table(result: dict, path: Path, split: str):
    s = result["summary"]
    summ = _table(f"{Path(path).name}: {split}", show_header=False)
    summ.add_column("what")
    summ.add_column("value", justify="right", no_wrap=True)
    summ.add_row(
        "images (" + " / ".join(s["images_per_split"]) + ")", " / ".join(map(str, s["images_per_split"].values()))
    )
    summ.add_row("classes", str(s["classes"]))
    summ.add_row("true positives per image", _num(s["label_cardinality"]))
    summ.add_row("label density", _num(s["label_density"], 4))
    summ.add_row("observed positives per image", _num(s["observed_cardinality"]))
    summ.add_row("labels observed positive", _pct(s["observed_positive_share"]))
    summ.add_row("labels observed negative", _pct(s["observed_negative_share"]))
    summ.add_row("labels unknown (hidden + and −)", _pct(s["observed_unknown_share"]))
    summ.add_row("hidden positives (true +, observed ?)", str(s["hidden_positives"]))
    summ.add_row("hidden negatives (true −, observed ?)", str(s["hidden_negatives"]))
    summ.add_row("false negatives (true +, observed −)", str(s["false_negatives"]))
    summ.add_row("false positives (true −, observed +)", str(s["false_positives"]))
    summ.add_row("true positives still observed positive", _pct(s["observed_positive_recall"]))
    if result["absent_truth"] == "unknown":
        summ.add_row("not verified (unknown in truth)", f"{s['truth_unknown_entries']:,}")
    elif s["truth_unknown_entries"]:
        summ.add_row("unknown in truth (e.g. VOC difficult-only)", str(s["truth_unknown_entries"]))
    summ.add_row("corruptions", " → ".join(result["corruptions"]) or "none")
    return summ


_PER_CLASS = (
    ("#", "index", str),
    ("class", "class", str),
    ("true+", "true_positives", str),
    ("obs+", "observed_positives", str),
    ("hidden+", "hidden_positives", str),
    ("hidden−", "hidden_negatives", str),
    ("FN", "false_negatives", str),
    ("FP", "false_positives", str),
    ("prec.", "precision", _pct),
    ("recall", "recall", _pct),
)


def _per_class_table(rows: list[dict], split: str, sort: str, shown: int = 0):
    """All rows, or (`shown` > 0) the first and last shown/2 of the order with the count of those left out."""
    hidden = len(rows) - shown if 0 < shown < len(rows) else 0
    tab = _table(
        f"per class ({split}, by {sort}" + (f"; first and last {shown // 2} of {len(rows)}" if hidden else "") + ")",
        caption="hidden+ / hidden−: true positives / negatives observed unknown. FN: false negatives (true +, "
        "observed −). FP: false positives (true −, observed +). prec., recall: of the observed positives against "
        "the truth. FN and FP rates: --json.",
    )
    for header, _, _ in _PER_CLASS:
        if header == "class":
            tab.add_column(header, overflow="fold", min_width=6)
        else:
            tab.add_column(header, justify="right", no_wrap=True)
    head, tail = (rows[: shown - shown // 2], rows[len(rows) - shown // 2 :]) if hidden else (rows, [])
    for r in head:
        tab.add_row(*(fmt(r[key]) for _, key, fmt in _PER_CLASS))
    if hidden:
        tab.add_row("", f"… {hidden:,} more", *[""] * (len(_PER_CLASS) - 2))
    for r in tail:
        tab.add_row(*(fmt(r[key]) for _, key, fmt in _PER_CLASS))
    return tab


def _histogram(hist: dict, split: str):
    tab = _table(f"positives per image ({split})")
    tab.add_column("positives", justify="right")
    tab.add_column("images (truth)", justify="right")
    tab.add_column("images (observed)", justify="right")
    tab.add_column("")
    h_t, h_o = hist["truth"], hist["observed"]
    keys = sorted({int(k) for k in h_t} | {int(k) for k in h_o})
    top = max([*h_t.values(), *h_o.values(), 1])
    for k in keys:
        t, o = h_t.get(str(k), 0), h_o.get(str(k), 0)
        tab.add_row(str(k), str(t), str(o), "█" * max(0, round(30 * t / top)))
    return tab


def _class_table(rows: list[dict], path: Path) -> None:
    from pumlc_cli.textout import table_console

    splits = [k for k in rows[0] if k not in ("index", "class")] if rows else []
    tab = _table(f"{Path(path).name}: {len(rows)} classes, true positives per split")
    tab.add_column("#", justify="right", no_wrap=True)
    tab.add_column("class", overflow="fold", min_width=6)
    for s in splits:
        tab.add_column(s, justify="right", no_wrap=True)
    for r in rows:
        tab.add_row(str(r["index"]), r["class"], *(str(r[s]) for s in splits))
    table_console().print(tab)
