"""`pumlc compare RUN...`: the options in which runs differ and what they reached, in one 80-column table.

Why from the run folders alone: config.json holds every resolved option, metrics.jsonl every epoch's val mAP,
and a report that `pumlc eval RUN --json RUN/eval.json` put beside them the test metrics, so comparing needs no
checkpoint loading (and no torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pumlc_cli.errors import PumlcError

# Options that say where and how a run was executed, not what was trained: never a reason two runs differ.
NOT_COMPARED = frozenset(
    {
        "out",
        "resume",
        "workers",
        "device",
        "gpus",
        "nproc",
        "nnodes",
        "node_rank",
        "master_addr",
        "master_port",
        "tensorboard",
        "log_every",
        "save_every",
        "max_steps",
        "compile",
        "channels_last",
    }
)
REPORT_KEYS = ("mAP", "CF1", "OF1")


@dataclass
class RunSummary:
    """One run folder as compare reads it."""

    name: str
    config: dict[str, Any]
    history: list[dict[str, Any]]
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> eval report


def read_run(folder: Path) -> RunSummary:
    """config.json (required), metrics.jsonl and eval*.json reports (when present) of a run folder."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise PumlcError(f"{folder}: not a pumlc run folder (no config.json)")
    config = _json(config_file)
    history = []
    metrics = folder / "metrics.jsonl"
    if metrics.is_file():
        history = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
    reports = {}
    for path in sorted(folder.glob("eval*.json")):
        report = _json(path)
        if isinstance(report, dict) and {"split", "mAP", "checkpoint"} <= set(report):
            reports.setdefault(str(report["split"]), report)
    return RunSummary(folder.name, config, history, reports)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PumlcError(f"{path}: cannot read ({type(err).__name__})") from None


def comparison_rows(runs: list[RunSummary]) -> list[tuple[str, list[str]]]:
    """(label, one cell per run): the options that differ, then the val and report metrics."""
    keys = sorted({k for r in runs for k in r.config} - NOT_COMPARED)
    rows = [(k, [_value(r.config.get(k)) for r in runs]) for k in keys]
    rows = [(k, cells) for k, cells in rows if len(runs) == 1 or len(set(cells)) > 1]
    rows.append(("epochs done", [str(len(r.history)) for r in runs]))
    rows.append(("best val mAP", [_best(r.history) for r in runs]))
    rows.append(("last val mAP", [_last(r.history) for r in runs]))
    for split in sorted({s for r in runs for s in r.reports}):
        for key in REPORT_KEYS:
            rows.append((f"{split} {key}", [_number(r.reports.get(split, {}).get(key)) for r in runs]))
    return rows


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str) and "/" in value:  # a path: its last part tells runs apart
        return Path(value).name
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _number(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}"


def _scores(record: dict[str, Any]) -> dict[str, float]:
    named = {"regular": record.get("val_mAP"), "EMA": record.get("val_mAP_ema")}
    return {k: float(v) for k, v in named.items() if v is not None}


def _best(history: list[dict[str, Any]]) -> str:
    best = None
    for record in history:
        for weights, value in _scores(record).items():
            if best is None or value > best[0]:
                best = (value, weights, record["epoch"])
    return "-" if best is None else f"{best[0]:.2f} ({best[1]}, ep {best[2]})"


def _last(history: list[dict[str, Any]]) -> str:
    scores = _scores(history[-1]) if history else {}
    return "-" if not scores else f"{max(scores.values()):.2f}"


def compare_runs(folders: list[Path]) -> None:
    """Print the comparison of `folders` as one table (80 columns when piped)."""
    from rich import box
    from rich.table import Table

    from pumlc_cli.textout import table_console

    runs = [read_run(f) for f in folders]
    names = [r.name for r in runs]
    if len(set(names)) < len(names):  # same folder name in different places: show the paths
        names = [str(f) for f in folders]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("", no_wrap=True)
    for name in names:
        table.add_column(name, overflow="fold")
    for label, cells in comparison_rows(runs):
        table.add_row(label, *cells)
    table_console().print(table)
