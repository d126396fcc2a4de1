"""`pumlc eval`: score a checkpoint on one split of a prepared folder and report the metrics (tables, JSON,
scores, plot); several processes shard the images under torchrun."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pumlc_cli.atomic import atomic_path
from pumlc_cli.errors import PumlcError
from pumlc_cli.runtime.workers import cap_workers

METRIC_KEYS = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")
F1_KEYS = METRIC_KEYS[1:]
MANY_CLASSES = 100  # above this, the per-class AP table shows the best and worst SHOWN_CLASSES // 2
SHOWN_CLASSES = 20


@dataclass(frozen=True)
class EvalOptions:
    """Everything `pumlc eval` was given; `argv` repeats the command for torchrun children (minus the paths,
    device and process counts, which the parent resolves)."""

    ckpt: Path
    data: Path | None
    split: str
    threshold: float
    mask_unknown: bool
    weights: str
    voc11: bool
    json_file: Path | None
    plot: Path | None
    scores_file: Path | None
    per_class_csv: Path | None
    batch_size: int
    workers: int
    decode: str
    device: str
    gpus: int
    nproc: int
    force: bool
    argv: tuple[str, ...] = ()


def run_eval(opts: EvalOptions) -> int:
    """Evaluate and report; returns the exit code (a torchrun re-launch returns its children's)."""
    import torch

    from pumlc_cli.evaluate.evaluation import available_weights, selected_weights
    from pumlc_cli.outputs import check_report_files, prepared_inputs
    from pumlc_cli.runtime.checkpoint import load_checkpoint, resolve_checkpoint
    from pumlc_cli.runtime.dist import check_gpus, device_kind

    ckpt = resolve_checkpoint(opts.ckpt)
    payload = load_checkpoint(ckpt)
    if opts.weights != "best" and opts.weights not in available_weights(payload):
        raise PumlcError(
            f"{ckpt}: holds only the {selected_weights(payload)} weights; use last.pt for --weights {opts.weights}"
        )
    data = opts.data or Path(payload["config"]["data"])
    if not (data / "manifest.json").is_file():
        raise PumlcError(f"{data}: not a prepared folder (no manifest.json); pass --data")
    outputs = check_report_files(  # before the evaluation, so a bad path never costs its results
        {
            "--json": opts.json_file,
            "--plot": opts.plot,
            "--save-scores": opts.scores_file,
            "--per-class-csv": opts.per_class_csv,
        },
        inputs=[ckpt, *prepared_inputs(data)],
        force=opts.force or "LOCAL_RANK" in os.environ,  # torchrun children follow the parent's check
    )
    kind = device_kind(opts.device)
    if opts.decode == "gpu" and (kind != "cuda" or not torch.cuda.is_available()):
        raise PumlcError("--decode gpu needs a CUDA device (use --decode pil on the CPU)")
    check_gpus(opts.gpus, kind)  # several GPUs asked for and none there: refused, not silently one CPU process
    opts = replace(opts, workers=cap_workers("--workers", opts.workers))
    procs = opts.gpus if kind == "cuda" else opts.nproc
    if procs > 1 and "LOCAL_RANK" not in os.environ:
        from pumlc_cli.runtime.launch import run_local

        return run_local(procs, ["eval", str(ckpt), "--data", str(data), "--device", kind, *opts.argv])
    _evaluate_and_report(opts, outputs, ckpt, payload, data, kind)
    return 0


def _evaluate_and_report(
    opts: EvalOptions, outputs: dict[str, Path | None], ckpt: Path, payload: dict[str, Any], data: Path, kind: str
) -> None:
    import torch

    from pumlc_cli.data.prepared import load_prepared
    from pumlc_cli.evaluate.evaluation import evaluate, selected_weights
    from pumlc_cli.evaluate.thresholds import val_thresholds
    from pumlc_cli.runtime import dist
    from pumlc_cli.textout import is_stdout, write_text

    info = dist.setup(kind)
    try:
        amp = "bf16" if kind == "cuda" and torch.cuda.is_bf16_supported() else "none"
        result = evaluate(
            payload,
            ckpt,
            data,
            opts.split,
            threshold=opts.threshold,
            mask_unknown=opts.mask_unknown,
            voc11=opts.voc11,
            batch_size=opts.batch_size,
            workers=opts.workers,
            info=info,
            amp=amp,
            decode_device=info.device if opts.decode == "gpu" else None,
        )
    finally:
        dist.teardown(info)
    if not info.is_main:
        return
    classes = list(payload["classes"])
    headline = selected_weights(payload) if opts.weights == "best" else opts.weights
    # the val thresholds belong to the val-selected weights; another weight set is only reported at --threshold
    chosen = val_thresholds(payload, str(ckpt)) if headline == selected_weights(payload) else None
    report = build_report(
        result, classes, headline, opts.threshold, str(ckpt), str(data), opts.split, opts.mask_unknown, chosen
    )
    render(report, opts.voc11, stderr=is_stdout(opts.json_file) or is_stdout(opts.per_class_csv))
    if opts.json_file:
        write_text(outputs["--json"] or "-", json.dumps(report, indent=2, allow_nan=False) + "\n")
    if opts.per_class_csv:
        write_text(outputs["--per-class-csv"] or "-", per_class_csv(result, classes, headline, opts.threshold, chosen))
    if outputs["--save-scores"]:
        with atomic_path(outputs["--save-scores"]) as tmp, open(tmp, "wb") as fh:  # a file object: savez adds no suffix
            np.savez_compressed(
                fh,
                images=np.array(result.images),
                targets=result.targets,
                classes=np.array(classes),
                **(
                    {}
                    if result.entries is None
                    else {"entry_rows": result.entries[0], "entry_classes": result.entries[1]}
                ),
                **{f"scores_{name}": scores for name, scores in result.scores.items()},
            )
    if outputs["--plot"]:
        from pumlc_cli.evaluate.plots import plot_per_class

        plot_per_class(outputs["--plot"], classes, result.metrics[headline]["per_class_ap"], load_prepared(data))


def build_report(
    result: Any,
    classes: list[str],
    headline: str,
    threshold: float,
    ckpt: str,
    data: str,
    split: str,
    mask_unknown: bool,
    thresholds: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON document: headline metrics at top level, both weight sets under `all_weights`, and the headline's
    F1 figures at the val-chosen thresholds under `at_val_thresholds` (null without them)."""
    from pumlc_cli.evaluate.metrics import masked_threshold_metrics, threshold_metrics
    from pumlc_cli.evaluate.thresholds import describe

    def block(m: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {k: _clean(m[k]) for k in METRIC_KEYS}
        out["top3"] = {k: _clean(m["top3"][k]) for k in METRIC_KEYS if k in m["top3"]}
        out["per_class"] = {c: _clean(ap) for c, ap in zip(classes, m["per_class_ap"], strict=True)}
        out["classes_without_positives"] = [classes[i] for i in m["classes_without_positives"]]
        if "mAP_voc11" in m:
            out["mAP11"] = _clean(m["mAP_voc11"])
        return out

    blocks = {w: block(m) for w, m in result.metrics.items()}
    report = {
        **blocks[headline],
        "weights": headline,
        "n_images": len(result.images),
        "threshold": threshold,
        "split": split,
        "targets": ("observed labels, unknown ignored" if mask_unknown else "true labels")
        + (" (label entries: each class over the images where it is known)" if result.entries is not None else ""),
        "checkpoint": ckpt,
        "data": data,
        "all_weights": blocks,
        "at_val_thresholds": None,
        "val_thresholds": thresholds,
    }
    if thresholds is not None:
        cut = np.asarray(thresholds["per_class"])
        rates = _rates_at(result, headline, len(classes), cut, (threshold_metrics, masked_threshold_metrics))
        report["at_val_thresholds"] = {**{k: _clean(rates[k]) for k in F1_KEYS}, "rule": describe(thresholds)}
    return report


def per_class_csv(
    result: Any, classes: list[str], headline: str, threshold: float, thresholds: dict[str, Any] | None
) -> str:
    """One row per class: positives, AP, and precision/recall/F1 (percent) at the val threshold (else the fixed
    one), with the threshold used."""
    import csv
    import io

    from pumlc_cli.evaluate.metrics import masked_per_class_rates, per_class_rates

    cut = np.asarray(thresholds["per_class"]) if thresholds is not None else np.full(len(classes), threshold)
    rates = _rates_at(result, headline, len(classes), cut, (per_class_rates, masked_per_class_rates))
    ap = result.metrics[headline]["per_class_ap"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["class", "support", "AP", "threshold", "precision", "recall", "F1", "predicted"])
    for i, name in enumerate(classes):
        cells = (ap[i], cut[i], rates["precision"][i], rates["recall"][i], rates["F1"][i])
        writer.writerow(
            [name, int(rates["support"][i]), *("" if np.isnan(v) else f"{v:.6g}" for v in cells), rates["predicted"][i]]
        )
    return buf.getvalue()


def _rates_at(result: Any, headline: str, n_classes: int, cut: np.ndarray, rate_fns: tuple) -> dict[str, Any]:
    """Rates of the headline scores at per-class thresholds: on the dense matrix, or on the label entries (Open
    Images: scores only where a label is stated)."""
    dense, masked = rate_fns
    if result.entries is None:
        return dense(result.scores[headline], result.targets, cut)
    return masked(result.entries[1], result.targets, result.scores[headline], n_classes, cut)


def render(report: dict[str, Any], voc11: bool, stderr: bool = False) -> None:
    """Metrics as rows and weight sets as columns, then per-class AP: both fit 80 columns."""
    from rich import box
    from rich.table import Table

    from pumlc_cli.textout import table_console

    console = table_console(stderr)
    blocks = report["all_weights"]
    overall = Table(title=f"{report['split']}: {report['n_images']} images", box=box.SIMPLE_HEAD)
    overall.add_column("metric")
    for name in blocks:
        overall.add_column(f"{name} *" if name == report["weights"] else name, justify="right")
    rows = [(key, lambda b, k=key: b[k]) for key in METRIC_KEYS]
    rows += [(f"{key}@top3", lambda b, k=key: b["top3"].get(k)) for key in ("CP", "CR", "CF1", "OF1")]
    if voc11:
        rows.append(("mAP (11-pt)", lambda b: b.get("mAP11")))
    for label, get in rows:
        overall.add_row(label, *(_fmt(get(block)) for block in blocks.values()))
    console.print(overall)
    console.print(f"targets: {report['targets']} of the {report['split']} split; threshold {report['threshold']}")
    console.print("* selected on the val split during training")
    if len(blocks) == 1:
        console.print("best.pt keeps only these weights; for regular vs EMA: pumlc eval RUN/last.pt")
    _render_thresholds(console, report)
    per_class = Table(title=f"AP per class ({report['weights']})", box=box.SIMPLE_HEAD)
    per_class.add_column("class", overflow="fold")
    per_class.add_column("AP", justify="right", no_wrap=True)
    ranked = sorted(((c, ap) for c, ap in report["per_class"].items() if ap is not None), key=lambda t: -t[1])
    hidden = len(ranked) - SHOWN_CLASSES if len(ranked) > MANY_CLASSES else 0
    for cls, ap in ranked[: SHOWN_CLASSES // 2] if hidden else ranked:
        per_class.add_row(cls, _fmt(ap))
    if hidden:
        per_class.add_row(f"… {hidden:,} more (--json)", "")
        for cls, ap in ranked[-(SHOWN_CLASSES // 2) :]:
            per_class.add_row(cls, _fmt(ap))
    console.print(per_class)
    without = report["classes_without_positives"]
    if without:
        listed = ", ".join(without[:SHOWN_CLASSES]) + (
            f", … ({len(without):,} in all)" if len(without) > SHOWN_CLASSES else ""
        )
        console.print("classes without positives (excluded from mAP): " + listed)


def _render_thresholds(console: Any, report: dict[str, Any]) -> None:
    """F1 figures at the fixed threshold beside those at the val-chosen thresholds (headline weights)."""
    from rich import box
    from rich.table import Table

    from pumlc_cli.evaluate.thresholds import NO_VAL_THRESHOLDS

    at_val = report["at_val_thresholds"]
    if at_val is None:
        console.print(f"{NO_VAL_THRESHOLDS}; F1 above is at threshold {report['threshold']:g} only")
        return
    table = Table(title=f"F1 figures ({report['weights']} weights)", box=box.SIMPLE_HEAD)
    table.add_column("metric")
    table.add_column(f"at {report['threshold']:g}", justify="right")
    table.add_column("at val thresholds", justify="right")
    for key in F1_KEYS:
        table.add_row(key, _fmt(report[key]), _fmt(at_val[key]))
    console.print(table)
    console.print(at_val["rule"])


def _clean(value: Any) -> float | None:
    import math

    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
