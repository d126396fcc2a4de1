"""`make demo`: synth data → noisy partial labels → stats → train `pu` and `bce-an` → evaluate → one table.

Every step is the real CLI in a child process, so what the demo prints is what a user would type.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pumlc_cli.benchmarks.runner import flags, pumlc

METHODS = ("pu", "bce-an")


def run_demo(out: Path, *, images: int, epochs: int, image_size: int, model: str, workers: int) -> dict:
    """Run the whole loop under `out` and return {method: eval report + train seconds}."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    synth, prepared = out / "synth", out / "prepared"
    pumlc("synth", str(synth), "--images", str(images), "--seed", "0")
    pumlc(
        "prepare",
        "coco",
        "--root",
        str(synth),
        "--out",
        str(prepared),
        "--noise-fn",
        "0.2",
        "--partial",
        "0.5",
        "--strip-negatives",
        "--seed",
        "0",
    )
    pumlc("stats", str(prepared), "--split", "train")
    results: dict[str, dict] = {}
    for method in METHODS:
        run = out / "runs" / method
        # The recipe's own values from random weights (no download): only size, length and machine are set here.
        options = {"out": run, "loss": method, "model": model, "epochs": epochs, "image_size": image_size}
        options |= {"workers": workers, "device": "cpu", "seed": 0}
        seconds = pumlc("train", str(prepared), *flags(**options), "--no-pretrained")
        report_path = out / f"eval-{method}.json"
        pumlc(
            "eval",
            str(run / "best.pt"),
            *flags(split="test", json=report_path, workers=workers, device="cpu"),
            quiet=True,
        )
        report = json.loads(report_path.read_text())
        report["train_seconds"] = seconds
        results[method] = report
    return results


def print_comparison(results: dict, title: str) -> None:
    table = Table(title=title)
    for col in ("method", "mAP", "CF1", "OF1", "CF1@top3", "OF1@top3", "weights", "train time"):
        table.add_column(col, justify="left" if col in {"method", "weights"} else "right")
    for method, rep in results.items():
        table.add_row(
            method,
            f"{rep['mAP']:.2f}",
            f"{rep['CF1']:.2f}",
            f"{rep['OF1']:.2f}",
            f"{rep['top3']['CF1']:.2f}",
            f"{rep['top3']['OF1']:.2f}",
            rep["weights"],
            f"{rep['train_seconds']:.0f} s",
        )
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--images", type=int, default=1000, help="synth images (train+test)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--model", default="test_resnet", help="timm backbone (timm's tiny test ResNet by default)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    results = run_demo(
        args.out,
        images=args.images,
        epochs=args.epochs,
        image_size=args.image_size,
        model=args.model,
        workers=args.workers,
    )
    print_comparison(results, "demo: clean test split, synth data with 20% false negatives, p=0.5, negatives stripped")
    audit_training_labels(args.out, args.workers)


def audit_training_labels(out: Path, workers: int) -> None:
    """The demo ends where a user's work goes next: which training labels does the `pu` model think are missing?"""
    pumlc(
        "audit",
        str(out / "runs" / "pu"),
        *flags(split="train", top=5, csv=out / "audit.csv", workers=workers, device="cpu"),
    )


if __name__ == "__main__":
    main()
