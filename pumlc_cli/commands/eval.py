"""`pumlc eval CKPT`: metrics of a checkpoint on a prepared split, as rich tables and JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from pumlc_cli.atomic import atomic_path
from pumlc_cli.errors import PumlcError
from pumlc_cli.help import examples

METRIC_KEYS = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")

EXAMPLES = examples(
    "pumlc eval runs/pu",
    "pumlc eval runs/pu/last.pt --split val --json - | jq .mAP",
)


_OUT = "Output"
_RUN = "Devices and speed"


def eval_command(
    ctx: typer.Context,
    ckpt: Annotated[Path, typer.Argument(help="Run folder (its best.pt) or a checkpoint file (best.pt, last.pt).")],
    data: Annotated[Path | None, typer.Option(help="Prepared folder; default: the one the run trained on.")] = None,
    split: Annotated[Literal["train", "val", "test"], typer.Option(help="Split to score.")] = "test",
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Score threshold for CP/CR/CF1/OP/OR/OF1.")] = 0.5,
    mask_unknown: Annotated[
        bool, typer.Option("--mask-unknown", help="Score against the observed labels, unknowns ignored.")
    ] = False,
    weights: Annotated[
        Literal["best", "regular", "ema"], typer.Option(help="Headline weights; best = selected on val.")
    ] = "best",
    voc11: Annotated[bool, typer.Option("--voc11", help="Also report VOC 11-point interpolated AP.")] = False,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write every number as JSON ('-': stdout).", rich_help_panel=_OUT)
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="PNG of per-class AP (and AP vs missed rate).", rich_help_panel=_OUT)
    ] = None,
    scores_file: Annotated[
        Path | None,
        typer.Option("--save-scores", help="Write images, targets, scores (.npz).", rich_help_panel=_OUT),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch per process.", rich_help_panel=_RUN)] = 64,
    workers: Annotated[
        int, typer.Option(min=0, help="Data-loading workers (default: cores).", rich_help_panel=_RUN)
    ] = min(8, os.cpu_count() or 1),
    decode: Annotated[
        Literal["pil", "gpu"],
        typer.Option(help="JPEG decoding: CPU workers or nvJPEG on the device.", rich_help_panel=_RUN),
    ] = "pil",
    device: Annotated[Literal["auto", "cuda", "cpu"], typer.Option(help="Device.", rich_help_panel=_RUN)] = "auto",
    gpus: Annotated[int, typer.Option(min=1, help="Shard across GPUs (torchrun).", rich_help_panel=_RUN)] = 1,
    nproc: Annotated[int, typer.Option(min=1, help="Shard across CPU processes (gloo).", rich_help_panel=_RUN)] = 1,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace existing --json/--plot/--save-scores files.", rich_help_panel=_OUT),
    ] = False,
) -> None:
    """Metrics of a run's val-selected weights (best.pt), or of both weight sets of a last.pt, on one split."""
    import torch

    from pumlc_cli.checkpoint import load_checkpoint, resolve_checkpoint
    from pumlc_cli.evaluate import available_weights, selected_weights

    ckpt = resolve_checkpoint(ckpt)
    payload = load_checkpoint(ckpt)
    if weights != "best" and weights not in available_weights(payload):
        raise PumlcError(
            f"{ckpt}: holds only the {selected_weights(payload)} weights; use last.pt for --weights {weights}"
        )
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
    from pumlc_cli.dist import check_gpus

    check_gpus(gpus, kind)  # several GPUs asked for and none there: refused, not silently one CPU process
    procs = gpus if kind == "cuda" else nproc
    if procs > 1 and "LOCAL_RANK" not in os.environ:
        from pumlc_cli.launch import repeat_argv, run_local

        # the children need no process count, and torchrun's parser would take `--nproc` for its own option
        argv = repeat_argv(ctx, ckpt=ckpt, data=data, device=kind, gpus=None, nproc=None)
        raise typer.Exit(run_local(procs, ["eval", *argv]))

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
    from pumlc_cli.textout import is_stdout, write_text

    render(report, voc11, stderr=is_stdout(json_file))
    if json_file:
        write_text(json_file, json.dumps(report, indent=2, allow_nan=False) + "\n")
    if scores_file:
        import numpy as np

        with atomic_path(scores_file) as tmp, open(tmp, "wb") as fh:  # a file object: savez adds no suffix
            np.savez_compressed(
                fh,
                images=np.array(result.images),
                targets=result.targets,
                classes=np.array(classes),
                **{f"scores_{name}": scores for name, scores in result.scores.items()},
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
        "targets": "observed labels, unknown ignored" if mask_unknown else "true labels",
        "checkpoint": ckpt,
        "data": data,
        "all_weights": blocks,
    }
    return report


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
    per_class = Table(title=f"AP per class ({report['weights']})", box=box.SIMPLE_HEAD)
    per_class.add_column("class", overflow="fold")
    per_class.add_column("AP", justify="right", no_wrap=True)
    ranked = sorted(((c, ap) for c, ap in report["per_class"].items() if ap is not None), key=lambda t: -t[1])
    for cls, ap in ranked:
        per_class.add_row(cls, _fmt(ap))
    console.print(per_class)
    if report["classes_without_positives"]:
        console.print(
            "classes without positives (excluded from mAP): " + ", ".join(report["classes_without_positives"])
        )


def _clean(value: Any) -> float | None:
    import math

    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
