"""`pumlc eval CKPT`: metrics of a checkpoint on a prepared split, as rich tables and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer

from pumlc_cli.atomic import atomic_path, write_text_atomic
from pumlc_cli.errors import PumlcError

METRIC_KEYS = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")


def eval_command(
    ckpt: Path = typer.Argument(..., help="Checkpoint (best.pt or last.pt of a run)."),
    data: Path | None = typer.Option(None, help="Prepared folder; default: the one the run trained on."),
    split: str = typer.Option("test", help="train, val or test."),
    threshold: float = typer.Option(0.5, min=0.0, max=1.0, help="Score threshold for CP/CR/CF1/OP/OR/OF1."),
    json_file: Path | None = typer.Option(None, "--json", help="Write every number to this JSON file."),
    plot: Path | None = typer.Option(None, help="PNG of per-class AP (and AP vs missed-positive rate)."),
    scores_file: Path | None = typer.Option(None, "--save-scores", help="Write images, targets, scores (.npz)."),
    mask_unknown: bool = typer.Option(False, "--mask-unknown", help="Score observed labels, unknowns ignored."),
    voc11: bool = typer.Option(False, "--voc11", help="Also report VOC 11-point interpolated AP."),
    weights: str = typer.Option("best", help="Headline weights: best (val-selected), regular or ema."),
    batch_size: int = typer.Option(64, min=1, help="Images per batch per process."),
    workers: int = typer.Option(min(8, os.cpu_count() or 1), min=0, help="Data-loading workers (default: cores)."),
    decode: str = typer.Option("pil", help="JPEG decoding: pil (CPU workers) or gpu (nvJPEG on the device, faster)."),
    device: str = typer.Option("auto", help="cuda, cpu or auto."),
    gpus: int = typer.Option(1, min=1, help="Shard across this many GPUs (torchrun)."),
    nproc: int = typer.Option(1, min=1, help="Shard across this many CPU processes (gloo)."),
    force: bool = typer.Option(False, "--force", help="Replace existing --json/--plot/--save-scores files."),
) -> None:
    """Evaluate regular and EMA weights; headline numbers use the weights selected on val during training."""
    import torch

    from pumlc_cli.checkpoint import load_checkpoint
    from pumlc_cli.evaluate import selected_weights

    if weights not in {"best", "regular", "ema"}:
        raise PumlcError(f"--weights must be best, regular or ema, not {weights!r}")
    if split not in {"train", "val", "test"}:
        raise PumlcError(f"--split must be train, val or test, not {split!r}")
    if decode not in {"pil", "gpu"}:
        raise PumlcError(f"--decode must be pil or gpu, not {decode!r}")
    payload = load_checkpoint(ckpt)
    data = data or Path(payload["config"]["data"])
    if not (data / "manifest.json").is_file():
        raise PumlcError(f"{data}: not a prepared folder (no manifest.json); pass --data")
    from pumlc_cli.outputs import check_report_files, prepared_inputs

    check_report_files(  # before the evaluation, so a bad path never costs its results
        {"--json": json_file, "--plot": plot, "--save-scores": scores_file},
        inputs=[ckpt, *prepared_inputs(data)],
        force=force or "LOCAL_RANK" in os.environ,  # torchrun children follow the parent's check
    )
    kind = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if decode == "gpu" and (kind != "cuda" or not torch.cuda.is_available()):
        raise PumlcError("--decode gpu needs a CUDA device (use --decode pil on the CPU)")
    procs = gpus if kind == "cuda" else nproc
    if procs > 1 and "LOCAL_RANK" not in os.environ:
        raise typer.Exit(
            _relaunch(
                procs,
                ckpt,
                data,
                split,
                threshold,
                json_file,
                plot,
                scores_file,
                mask_unknown,
                voc11,
                weights,
                batch_size,
                workers,
                kind,
                decode,
            )
        )

    from pumlc_cli import dist
    from pumlc_cli.evaluate import evaluate

    info = dist.setup(kind)
    try:
        amp = "bf16" if kind == "cuda" and torch.cuda.is_bf16_supported() else "none"
        result = evaluate(
            payload,
            ckpt,
            data,
            split,
            threshold=threshold,
            mask_unknown=mask_unknown,
            voc11=voc11,
            batch_size=batch_size,
            workers=workers,
            info=info,
            amp=amp,
            decode_device=info.device if decode == "gpu" else None,
        )
    finally:
        dist.teardown(info)
    if not info.is_main:
        return
    from pumlc_cli import load_prepared

    classes = list(payload["classes"])
    headline = selected_weights(payload) if weights == "best" else weights
    report = build_report(result, classes, headline, threshold, str(ckpt), str(data), split, mask_unknown)
    render(report, voc11)
    if json_file:
        write_text_atomic(json_file, json.dumps(report, indent=2, allow_nan=False) + "\n")
    if scores_file:
        import numpy as np

        with atomic_path(scores_file) as tmp, open(tmp, "wb") as fh:  # a file object: savez adds no suffix
            np.savez_compressed(
                fh,
                images=np.array(result.images),
                targets=result.targets,
                scores_regular=result.scores["regular"],
                scores_ema=result.scores["ema"],
                classes=np.array(classes),
            )
    if plot:
        from pumlc_cli.plots import plot_per_class

        plot_per_class(plot, classes, result.metrics[headline]["per_class_ap"], load_prepared(data))


def build_report(
    result: Any,
    classes: list[str],
    headline: str,
    threshold: float,
    ckpt: str,
    data: str,
    split: str,
    mask_unknown: bool,
) -> dict[str, Any]:
    """The JSON document: headline metrics at top level, both weight sets under `all_weights`."""

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
        "targets": "observed (unknown ignored)" if mask_unknown else "truth",
        "checkpoint": ckpt,
        "data": data,
        "all_weights": blocks,
    }
    return report


def render(report: dict[str, Any], voc11: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    overall = Table(
        title=f"{report['split']} split, {report['n_images']} images, threshold {report['threshold']}"
        f" (targets: {report['targets']})"
    )
    # One row per metric, one column per weight set: narrow enough for an 80-column terminal.
    blocks = report["all_weights"]
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
    console.print("* selected on the val split during training")
    per_class = Table(title=f"per-class AP ({report['weights']} weights), best first")
    per_class.add_column("class")
    per_class.add_column("AP", justify="right")
    ranked = sorted(((c, ap) for c, ap in report["per_class"].items() if ap is not None), key=lambda t: -t[1])
    for cls, ap in ranked:
        per_class.add_row(cls, _fmt(ap))
    console.print(per_class)
    if report["classes_without_positives"]:
        console.print(
            "classes without positives (excluded from mAP): " + ", ".join(report["classes_without_positives"])
        )


def _relaunch(
    procs: int,
    ckpt: Path,
    data: Path,
    split: str,
    threshold: float,
    json_file: Path | None,
    plot: Path | None,
    scores_file: Path | None,
    mask_unknown: bool,
    voc11: bool,
    weights: str,
    batch_size: int,
    workers: int,
    kind: str,
    decode: str,
) -> int:
    from pumlc_cli.launch import free_port

    args = [
        str(ckpt),
        "--data",
        str(data),
        "--split",
        split,
        "--threshold",
        str(threshold),
        "--weights",
        weights,
        "--batch-size",
        str(batch_size),
        "--workers",
        str(workers),
        "--device",
        kind,
        "--decode",
        decode,
    ]
    for flag, value in (("--json", json_file), ("--plot", plot), ("--save-scores", scores_file)):
        if value is not None:
            args += [flag, str(value)]
    args += ["--mask-unknown"] if mask_unknown else []
    args += ["--voc11"] if voc11 else []
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={procs}",
        "--nnodes=1",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "-m",
        "pumlc_cli",
        "eval",
        *args,
    ]
    return subprocess.call(cmd)


def _clean(value: Any) -> float | None:
    import math

    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
