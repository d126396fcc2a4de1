"""`make reproduce`: the partial-label protocol of the paper as one resumable command.

For each known-label proportion p the training labels are the HCP mask at seed 0; `pu` sees them with negatives
stripped (its input by design), the baselines see the same mask with negatives kept. Each method trains on the
train split, is selected on val, and its best checkpoint is evaluated once on the untouched test split.
A finished cell (its eval JSON exists) is never retrained.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import platform
import shlex
from importlib import metadata
from pathlib import Path

from pumlc_cli.atomic import write_text_atomic
from pumlc_cli.runner import console, flags, pumlc

FULL_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Per-dataset recipe: the paper's α/γ; backbone, resolution, schedule as in its released training commands.
_PAPER = {
    "model": "resnet101",
    "image_size": 448,
    "scale_size": 512,
    "batch_size": 32,
    "lr": 1e-4,
    "epochs": 40,
    "train": "last",
    "grid": FULL_GRID,
    "methods": ("pu", "bce-known", "bce-an", "asl", "wan", "epr"),
}
RECIPES: dict[str, dict[str, object]] = {
    "voc2007": {**_PAPER, "alpha": 2.0, "gamma": 0.85},
    "coco2014": {**_PAPER, "alpha": 1.0, "gamma": 0.55},
    # Small enough for a laptop CPU: reduced grid and methods, tiny backbone, 64 px.
    "synth": {
        "model": "test_resnet",
        "image_size": 64,
        "scale_size": 72,
        "batch_size": 32,
        "lr": 3e-3,
        "epochs": 8,
        "alpha": 1.0,
        "gamma": 0.55,
        "train": "all",
        "grid": (0.1, 0.5, 0.9),
        "methods": ("pu", "bce-known", "bce-an"),
    },
}


def prepare_args(dataset: str, data: Path | None, out: Path, p: float, strip: bool) -> list[str]:
    kind = {"voc2007": "voc", "coco2014": "coco", "synth": "coco"}[dataset]
    args = [
        "prepare",
        kind,
        "--root",
        str(data),
        "--out",
        str(out),
        "--partial",
        str(p),
        "--seed",
        "0",
        "--force",
    ]
    return args + (["--strip-negatives"] if strip else [])


def train_args(
    recipe: dict, prepared: Path, run: Path, method: str, gpus: int, device: str, extra: list[str]
) -> list[str]:
    keys = ("model", "epochs", "batch_size", "lr", "image_size", "scale_size", "train")
    args = ["train", str(prepared), *flags(out=run, loss=method, **{k: recipe[k] for k in keys})]
    args += flags(seed=0, device=device)
    if method == "pu":
        args += ["--alpha", str(recipe["alpha"]), "--gamma", str(recipe["gamma"])]
    if gpus > 1:
        args += ["--gpus", str(gpus)] if device == "cuda" else ["--nproc", str(gpus)]
    return args + extra


def run_grid(
    dataset: str,
    data: Path | None,
    out: Path,
    grid: tuple[float, ...],
    methods: tuple[str, ...],
    gpus: int,
    device: str,
    extra: list[str],
    overrides: dict[str, object],
) -> dict:
    """Prepare, train and evaluate every (p, method) cell not already done; return the cell reports."""
    recipe = {**RECIPES[dataset], **overrides}
    root = out / dataset
    if dataset == "synth" and data is None:
        data = root / "synth-data"
        if not (data / "annotations" / "instances_val2014.json").is_file():
            pumlc("synth", str(data), "--seed", "0", *(["--force"] if data.exists() else []))
    if data is None:
        raise SystemExit(f"pumlc reproduce: error: {dataset} needs DATA=/path/to/the/dataset")
    cells: dict[tuple[str, float], dict] = {}
    commands: list[str] = []
    for p in grid:
        for method in methods:
            strip = method == "pu"
            prepared = root / "prepared" / (f"p{p:g}" + ("-pu" if strip else ""))
            run = root / "runs" / f"p{p:g}" / method
            report_path = root / "cells" / f"p{p:g}-{method}.json"
            prep = prepare_args(dataset, data, prepared, p, strip)
            train = train_args(recipe, prepared, run, method, gpus, device, extra)
            evaluate = [
                "eval",
                str(run / "best.pt"),
                *flags(split="test", json=report_path, device=device),
            ]
            commands += ["pumlc " + shlex.join(a) for a in (prep, train, evaluate)]
            if report_path.is_file():
                console.print(f"[green]done[/] p={p:g} {method} (cached: {report_path})")
                cells[(method, p)] = json.loads(report_path.read_text())
                continue
            if not (prepared / "manifest.json").is_file():
                pumlc(*prep)
            if not (run / "best.pt").is_file() or _unfinished(run, int(recipe["epochs"])):
                pumlc(*train, *(["--resume"] if (run / "last.pt").is_file() else []))
            report_path.parent.mkdir(parents=True, exist_ok=True)
            pumlc(*evaluate, quiet=True)
            cells[(method, p)] = json.loads(report_path.read_text())
    write_tables(out, dataset, grid, methods, cells, list(dict.fromkeys(commands)), recipe)
    return cells


def _unfinished(run: Path, epochs: int) -> bool:
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        return True
    lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    return not lines or lines[-1]["epoch"] < epochs


def write_tables(
    out: Path,
    dataset: str,
    grid: tuple[float, ...],
    methods: tuple[str, ...],
    cells: dict,
    commands: list[str],
    recipe: dict,
) -> None:
    """results/<dataset>.md and .csv: rows = method, columns = p and the average (test mAP, %)."""
    header = ["method", *(f"p={p:g}" for p in grid), "avg"]
    rows = []
    for method in methods:
        values = [cells[(method, p)]["mAP"] for p in grid]
        rows.append([method, *(f"{v:.2f}" for v in values), f"{sum(values) / len(values):.2f}"])
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    _write(out / f"{dataset}.csv", buf.getvalue())
    versions = {name: _version(name) for name in ("pumlc", "torch", "torchvision", "timm", "numpy", "pandas")}
    md = [
        f"# {dataset}: test mAP (%) with a proportion p of known labels",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += [
        "",
        "Model selected on the val split (held out from train, same corruption); test labels untouched;"
        " mAP over all test images, classes without positives excluded.",
        "",
        f"Recipe: `{json.dumps({k: v for k, v in recipe.items() if k not in {'grid', 'methods'}})}`",
        "",
        "## Commands",
        "",
        "```",
        *commands,
        "```",
        "",
        "## Versions",
        "",
        f"- python {platform.python_version()}",
    ]
    md += [f"- {name} {ver}" for name, ver in versions.items()]
    _write(out / f"{dataset}.md", "\n".join(md) + "\n")
    console.print(f"wrote {out / f'{dataset}.md'} and {out / f'{dataset}.csv'}")
    console.print("\n".join(["| " + " | ".join(header) + " |"] + ["| " + " | ".join(r) + " |" for r in rows]))


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(RECIPES), default="synth")
    parser.add_argument("--data", type=Path, default=None, help="VOC2007 folder or COCO root (not for synth)")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--device", choices=("cuda", "cpu", "auto"), default="auto")
    parser.add_argument("--grid", default=None, help="comma-separated p values (default: the recipe's)")
    parser.add_argument("--methods", default=None, help="comma-separated losses (default: the recipe's)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--train-arg", action="append", default=[], help="extra `pumlc train` argument")
    args = parser.parse_args(argv)
    recipe = RECIPES[args.dataset]
    grid = tuple(float(x) for x in args.grid.split(",")) if args.grid else tuple(recipe["grid"])
    methods = tuple(args.methods.split(",")) if args.methods else tuple(recipe["methods"])
    overrides = {k: v for k, v in (("epochs", args.epochs), ("model", args.model)) if v is not None}
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    run_grid(args.dataset, args.data, args.out, grid, methods, args.gpus, device, args.train_arg, overrides)


if __name__ == "__main__":
    main()
