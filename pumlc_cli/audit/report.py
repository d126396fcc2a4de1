"""What `pumlc audit` writes: the suggestion list (CSV/JSON), per-class estimates, the truth check, tables, a plot."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from pumlc_cli.audit.entries import EntryAudit
from pumlc_cli.audit.scores import KINDS, Audit

# in_sample: 1 when the model trained on the image; label_frequency: how c was set ("given", or "estimated": a
# lower bound, so the missing-positive scores are upper bounds); `relabel` warns on either
CSV_COLUMNS = ("kind", "rank", "image", "split", "class", "score", "prob", "observed", "in_sample", "label_frequency")
IMAGE_WIDTH = 32
MANY_CLASSES = 100  # above this, the per-class table shows the SHOWN_CLASSES with most estimated missing positives
SHOWN_CLASSES = 20  # image paths in the tables keep their end (the file name) so rows fit 80 columns


def suggestions(
    audit: Audit | EntryAudit, images: list[str], splits: list[str], classes: list[str], floor: float
) -> list[dict]:
    """Every suspected entry with score ≥ `floor`, missing positives first, each kind ranked 1, 2, 3, … as listed."""
    out: list[dict] = []
    for kind in KINDS:
        rows, cols, scores, probs, observed = audit.ranked(kind)
        listed = 0
        for i, j, score, prob, obs in zip(
            rows.tolist(), cols.tolist(), scores.tolist(), probs.tolist(), observed.tolist(), strict=True
        ):
            if not score >= floor:  # NaN (class without observed positives) is never listed
                continue
            listed += 1
            out.append(
                {
                    "kind": kind,
                    "rank": listed,
                    "image": images[i],
                    "split": splits[i],
                    "class": classes[j],
                    "score": round(score, 6),
                    "prob": round(prob, 6),
                    "observed": int(obs),
                }
            )
    return out


def build_report(
    audit: Audit | EntryAudit,
    images: list[str],
    splits: list[str],
    classes: list[str],
    truth: dict | None,
    *,
    floor: float,
    source: dict[str, Any],
) -> dict[str, Any]:
    """The JSON document: where the scores came from, per-class estimates, suggestions, and the truth check
    (`truth_report`'s, or None without a truth that differs from the observed labels)."""
    per_class = []
    for name, est in zip(classes, audit.classes, strict=True):
        per_class.append(
            {
                "class": name,
                "observed_positives": est.observed_positives,
                "candidates": est.candidates,
                "label_frequency": _num(est.label_frequency),
                "est_true_positives": _num(est.est_true_positives),
                "est_missing_positives": _num(est.est_missing),
                "est_missing_rate": _num(est.est_missing_rate),
                "est_wrong_positives": _num(est.est_wrong),
                "est_wrong_rate": _num(est.est_wrong_rate),
            }
        )
    in_sample = bool(source.get("in_sample"))  # the model trained on the train split's images, not on val's
    basis = source.get("label_frequency")
    basis = basis if basis in ("given", "estimated") else "not used"  # entry data: calibrated on stated labels
    report: dict[str, Any] = {
        **source,
        "n_images": len(images),
        "floor": floor,
        "per_class": per_class,
        "suggestions": [
            {**row, "in_sample": int(in_sample and row["split"] == "train"), "label_frequency": basis}
            for row in suggestions(audit, images, splits, classes, floor)
        ],
        "truth": None,
    }
    if truth is not None:
        report["truth"] = _clean(truth)
    return report


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def render(report: dict[str, Any], top: int, stderr: bool = False) -> None:
    """Top suggestions of each kind, per-class estimates, and (with a truth) how good the ranking is; on stderr
    when `--csv -` puts the CSV on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=stderr)
    for kind, title in (("missing", "suspected missing positives"), ("wrong", "suspected wrong positives")):
        rows = [r for r in report["suggestions"] if r["kind"] == kind][:top]
        sample = "in-sample scores, " if report.get("in_sample") else ""
        table = Table(title=f"{title} (top {top}, {sample}score ≥ {report['floor']:g})", header_style="bold")
        for col in ("rank", "image", "class", "score", "obs"):
            table.add_column(col, justify="left" if col in {"image", "class"} else "right")
        for r in rows:  # the model's own score (`prob`) is in --csv/--json
            table.add_row(str(r["rank"]), _tail(r["image"], IMAGE_WIDTH), r["class"], f"{r['score']:.3f}", _obs(r))
        if rows:
            console.print(table)
        else:
            console.print(f"no {title} with score ≥ {report['floor']:g}")
    truth = report["truth"]
    true_rates = {r["class"]: r["true_missing_rate"] for r in truth["per_class"]} if truth else {}
    entries = "scored" in report  # entry data (Open Images): see pumlc_cli.audit.entries
    shown = shown_classes(report["per_class"])
    rows = [report["per_class"][i] for i in shown] if len(shown) < len(report["per_class"]) else report["per_class"]
    per_class = Table(
        title=f"per class ({report['split']}, estimated from the scores"
        + (
            f"; the {len(rows)} of {len(report['per_class']):,} with most missing+, all in --json"
            if rows is not report["per_class"]
            else ""
        )
        + ")",
        header_style="bold",
        caption=(
            ""
            if entries
            else "c: share of the true positives observed positive (the label frequency the scores assume). "
        )
        + "Estimated: true+; missing+, true positives not observed positive (hidden positives and false "
        "negatives"
        + ("; summed over each image's top unknown classes" if entries else "")
        + "); missing = missing+ / true+; wrong: share of the observed positives that are false positives"
        + ("; true missing: from the truth the corruption kept" if truth else ""),
    )
    cols = ["class", "obs+", "c", "true+", "missing+", "missing", "wrong"] + (["true missing"] if truth else [])
    if entries:  # entry data: calibrated on the stated labels, no label frequency
        cols.remove("c")
    for col in cols:
        per_class.add_column(col, justify="left" if col == "class" else "right", no_wrap=col == "class")
    for r in rows:
        cells = [
            r["class"],
            str(r["observed_positives"]),
            *([] if entries else [_f(r["label_frequency"], 2)]),
            _f(r["est_true_positives"], 0),
            _f(r["est_missing_positives"], 0),
            _pct(r["est_missing_rate"]),
            _pct(r["est_wrong_rate"]),
        ]
        per_class.add_row(*cells, *([_pct(true_rates.get(r["class"]))] if truth else []))
    console.print(per_class)
    if report.get("label_frequency") == "estimated":
        console.print(
            "c is estimated: a lower bound, tight only where the model scores some of a class's positives above all "
            "its negatives, so the missing-positive scores are upper bounds; --label-frequency C sets it when known."
        )
    if truth:
        check = Table(title="suggestions against the truth kept by the corruption", header_style="bold")
        for col in ("kind", "k", "precision@k", "recall@k"):
            check.add_column(col, justify="left" if col == "kind" else "right")
        for kind in KINDS:
            if kind not in truth:
                continue
            for at in truth[kind]["at"].values():
                check.add_row(kind, str(at["k"]), _pct(at["precision"]), _pct(at["recall"]))
            check.add_row(kind, "AP", _pct(truth[kind]["ap"]), "", end_section=True)
        console.print(check)
        for kind in (k for k in KINDS if k in truth):
            rel = truth[kind]["reliability"]
            parts = [
                f"≥ {cut}: {a['n']}, right {_pct(a['precision'])} (scores say {_pct(a['expected_precision'])})"
                for cut, a in rel["above"].items()
            ]
            console.print(f"{kind}: scored {'; '.join(parts)}; calibration error (ECE, 10 bins) {_pct(rel['ece'])}")
        console.print(f"missing-rate error per class (MAE): {_pct(truth['missing_rate_mae'])}")


def shown_classes(per_class: list[dict]) -> list[int]:
    """Indices of the classes a table or plot shows: all of them, or above `MANY_CLASSES` (thousands of classes,
    Open Images) the `SHOWN_CLASSES` with most estimated missing positives."""
    if len(per_class) <= MANY_CLASSES:
        return list(range(len(per_class)))
    return sorted(range(len(per_class)), key=lambda i: -(per_class[i]["est_missing_positives"] or 0))[:SHOWN_CLASSES]


def plot_audit(path: Path, report: dict[str, Any]) -> None:
    """Per class: estimated missing-positive and wrong-positive rates (and the true missing rate when known); the
    classes of `shown_classes`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pumlc_cli.atomic import atomic_path

    shown = shown_classes(report["per_class"])
    rows = [report["per_class"][i] for i in shown]
    names = [r["class"] for r in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(9, max(3.5, 0.22 * len(rows))))
    series = [("est. missing rate", "est_missing_rate", -0.27), ("est. wrong rate", "est_wrong_rate", 0.0)]
    for label, key, dy in series:
        ax.barh(y + dy, [100 * (r[key] or 0) for r in rows], height=0.27, label=label)
    if report["truth"]:
        true = [100 * (report["truth"]["per_class"][i]["true_missing_rate"] or 0) for i in shown]
        ax.barh(y + 0.27, true, height=0.27, label="true missing rate")
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("% of the class's positives")
    many = len(shown) < len(report["per_class"])
    ax.set_title(
        f"label audit ({report['split']})"
        + (f": the {len(shown)} of {len(report['per_class']):,} classes with most missing+" if many else "")
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=(path.suffix.lstrip(".") or "png"))
    plt.close(fig)


def _tail(text: str, width: int) -> str:
    """`…` + the last characters: the end of a path tells images apart; --csv/--json hold the whole path."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _obs(row: dict) -> str:
    return {1: "+", -1: "−", 0: "?"}[row["observed"]]


def _num(value: float) -> float | None:
    return None if not math.isfinite(value) else round(float(value), 6)


def _clean(value: Any) -> Any:
    """NaN → None, recursively (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float):
        return _num(value)
    return value


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def _f(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
