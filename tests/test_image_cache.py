"""`pumlc prepare --cache-size`: the pre-resized image cache and how `load_prepared` serves it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from pumlc_cli import load_prepared
from tests.helpers import run_cli, train_args


def _csv_dataset(root: Path) -> tuple[Path, Path]:
    """Six images: four larger than the cache size (JPEG landscape/portrait, PNG with alpha, grayscale JPEG),
    two smaller (JPEG and PNG)."""
    images = root / "img"
    (images / "sub").mkdir(parents=True)
    specs = {
        "a.jpg": ("RGB", (80, 60)),
        "sub/b.jpg": ("RGB", (50, 90)),
        "c.png": ("RGBA", (70, 70)),
        "d.jpg": ("L", (64, 48)),
        "small.jpg": ("RGB", (30, 20)),
        "small.png": ("RGB", (20, 36)),
    }
    for i, (name, (mode, size)) in enumerate(specs.items()):
        color = (40 * i, 200 - 30 * i, 90) if mode != "L" else 120
        color = (*color, 255) if mode == "RGBA" else color
        Image.new(mode, size, color).save(images / name)
    csv = root / "train.csv"
    labels = ["cat", "dog", "cat dog", "dog", "cat", "cat"]
    csv.write_text("image,labels\n" + "".join(f"{n},{lab}\n" for n, lab in zip(specs, labels, strict=True)))
    return csv, images


def test_cache_written_resized_and_served(tmp_path: Path) -> None:
    csv, images = _csv_dataset(tmp_path)
    out = tmp_path / "prep"
    run_cli("prepare", "csv", "--train", csv, "--images", images, "--out", out, "--cache-size", "40")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image_cache"] == {"dir": "images", "shorter_side": 40, "quality": 95}
    assert manifest["image_root"] == str(images.resolve())  # the originals stay recorded
    data = load_prepared(out)
    assert data.image_root == (out / "images").resolve() and data.source_image_root == images.resolve()
    rel = data.frame["image"].tolist()
    assert len(rel) == 6
    for name in rel:
        with Image.open(data.image_path(name)) as cached, Image.open(images / name) as orig:
            assert cached.format == "JPEG"
            if min(orig.size) > 40:
                assert min(cached.size) == 40
                ratio = max(orig.size) / min(orig.size)
                assert max(cached.size) == round(40 * ratio)
            else:
                assert cached.size == orig.size  # never upscaled
    assert (out / "images" / "small.jpg").read_bytes() == (images / "small.jpg").read_bytes()  # copied as is

    # Without the option the table is byte-identical: the cache changes only the manifest.
    plain = tmp_path / "plain"
    run_cli("prepare", "csv", "--train", csv, "--images", images, "--out", plain)
    assert (plain / "labels.parquet").read_bytes() == (out / "labels.parquet").read_bytes()
    assert load_prepared(plain).image_root == images.resolve() == load_prepared(plain).source_image_root

    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(out), str(moved))
    data = load_prepared(moved)
    assert data.image_root == (moved / "images").resolve()
    assert all(data.image_path(name).is_file() for name in rel)


def test_cache_with_a_pool_is_deterministic(synth_root: Path, tmp_path: Path) -> None:
    outs = [tmp_path / "one", tmp_path / "two"]
    for out, workers in zip(outs, ("1", "2"), strict=True):
        run_cli("prepare", "coco", "--root", synth_root, "--out", out, "--cache-size", "40", "--cache-workers", workers)
    names = load_prepared(outs[0]).frame["image"].tolist()
    for name in names[:: max(1, len(names) // 20)]:
        a, b = (out / "images" / name for out in outs)
        assert a.read_bytes() == b.read_bytes()
        with Image.open(a) as im:
            assert min(im.size) == 40
    assert sum(1 for p in (outs[1] / "images").rglob("*") if p.is_file()) == len(names)
    assert (outs[0] / "labels.parquet").read_bytes() == (outs[1] / "labels.parquet").read_bytes()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_corrupt_image_fails_cleanly(tmp_path: Path, workers: str) -> None:
    csv, images = _csv_dataset(tmp_path)
    (images / "sub" / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "prep"
    done = run_cli(
        "prepare", "csv", "--train", csv, "--images", images, "--out", out, "--cache-size", "40",
        "--cache-workers", workers, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "b.jpg" in done.stderr and done.stderr.count("\n") == 1
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".prep")] == []  # no temp folder left


def test_bad_cache_size_refused(tmp_path: Path) -> None:
    csv, images = _csv_dataset(tmp_path)
    done = run_cli(
        "prepare", "csv", "--train", csv, "--images", images, "--out", tmp_path / "p", "--cache-size", "0",
        check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "--cache-size" in done.stderr


def test_train_on_cached_folder(tmp_path: Path) -> None:
    from pumlc_cli.data.synth import make_synth

    root, data = tmp_path / "coco", tmp_path / "cached"
    make_synth(root, n_train=64, n_test=16, seed=1, image_size=48)
    run_cli("prepare", "coco", "--root", root, "--out", data, "--partial", "0.5", "--cache-size", "36")
    shutil.rmtree(root)  # the originals are gone: training can only read the cache
    run = tmp_path / "run"
    run_cli(*train_args(data, run, epochs=1))
    assert (run / "best.pt").is_file()
