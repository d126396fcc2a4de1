"""`pumlc prepare` end to end: folder layout, manifest, determinism, splits, and every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pumlc_cli.cli import app
from pumlc_cli.data.corrupt import hcp_partial_mask
from pumlc_cli.data.prepared import load_prepared
from pumlc_cli.errors import PumlcError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The real entry point (`main()`): PumlcError becomes one stderr line and exit code 2."""
    return subprocess.run(
        [sys.executable, "-m", "pumlc_cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def invoke(*args):
    """In-process run; returns the result, re-raising PumlcError like the plain app does."""
    result = runner.invoke(app, [str(a) for a in args])
    if isinstance(result.exception, PumlcError):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def test_cli_import_does_not_load_torch():
    code = "import sys, pumlc_cli, pumlc_cli.cli; pumlc_cli.load_prepared; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_prepare_synth_subprocess(synth_root, tmp_path):
    out = tmp_path / "p"
    res = run_cli("prepare", "coco", "--root", synth_root, "--out", out, "--partial", "0.3", "--strip-negatives")
    assert res.returncode == 0, res.stderr
    assert "train" in res.stdout and "partial" in res.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    classes = manifest["classes"]
    assert len(classes) == 10 and manifest["source"]["class_source"] == "file"
    labels = pd.read_parquet(out / "labels.parquet")
    assert list(labels.columns) == ["image_idx", "class_idx", "truth", "observed"]
    assert [str(t) for t in labels.dtypes] == ["int32", "int32", "int8", "int8"]
    assert manifest["labels"]["absent_truth"] == "negative"
    assert manifest["labels"]["absent_observed"] == {"train": "unknown", "val": "unknown", "test": "negative"}
    assert manifest["counts"]["train"] + manifest["counts"]["val"] == 240 and manifest["counts"]["test"] == 80
    assert manifest["counts"]["val"] == 24
    assert [s["step"] for s in manifest["corruptions"]] == ["partial", "strip_negatives"]
    assert manifest["toolkit"]["version"] and Path(manifest["image_root"]).is_absolute()
    for src in manifest["sources"]:
        assert len(src["sha256"]) == 64 and Path(src["path"]).is_file()
    assert manifest["policies"] == {
        "empty_images": "keep",
        "crowd": "positive",
        "absent_class": "negative",
        "image_files": "checked",
    }
    prep = load_prepared(out)
    assert prep.frame["image"].iloc[0] == "train2014/COCO_train2014_000000000001.jpg"
    # HCP mask over the whole training file in annotation order, drawn before the val carve-out
    is_train = (prep.frame["split"] != "test").to_numpy()
    truth = np.full((320, 10), -1, np.int8)
    obs = np.full((320, 10), -1, np.int8)
    for split in ("train", "val", "test"):
        part = prep.split_data(split)
        rows = (prep.frame["split"] == split).to_numpy()
        truth[rows], obs[rows] = part.truth, part.observed
    # stored: the entries that differ from each split's absent pair, and no others
    assert len(labels) == int(((truth != -1) | (obs != 0))[is_train].sum() + (truth[~is_train] == 1).sum())
    mask = hcp_partial_mask(240, 10, 0.3, 0)
    np.testing.assert_array_equal(obs[is_train], np.where(mask & (truth[is_train] == 1), 1, 0))
    np.testing.assert_array_equal(obs[~is_train], truth[~is_train])
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "p"]
    assert leftovers == []


def test_load_prepared_api(synth_prepared):
    import pumlc_cli

    prep = pumlc_cli.load_prepared(synth_prepared)
    assert prep.classes == prep.manifest["classes"] and len(prep.manifest_hash) == 64
    assert prep.splits == ["train", "val", "test"]
    train = prep.split_data("train")
    assert train.truth.dtype == np.int8 and train.observed.shape == (len(train.images), 10)
    assert prep.image_path(train.images[0]).is_file()
    test = prep.split_data("test")
    np.testing.assert_array_equal(test.truth, test.observed)
    assert len(test) == 80
    with pytest.raises(PumlcError, match="unknown split"):
        prep.split_data("dev")


def test_determinism_byte_identical(synth_root, tmp_path):
    args = [
        "--root",
        synth_root,
        "--noise-fn",
        "0.1",
        "--noise-fp",
        "0.02",
        "--partial",
        "0.5",
        "--seed",
        "3",
    ]
    invoke("prepare", "coco", *args, "--out", tmp_path / "a")
    invoke("prepare", "coco", *args, "--out", tmp_path / "b")
    for name in ("labels.parquet", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    invoke("prepare", "coco", *args[:-1], "4", "--out", tmp_path / "c")
    assert (tmp_path / "a" / "labels.parquet").read_bytes() != (tmp_path / "c" / "labels.parquet").read_bytes()


def test_clean_val_and_val_fraction(synth_root, tmp_path):
    invoke(
        "prepare",
        "coco",
        "--root",
        synth_root,
        "--out",
        tmp_path / "p",
        "--single-positive",
        "--clean-val",
        "--val-fraction",
        "0.25",
    )
    import pumlc_cli

    prep = pumlc_cli.load_prepared(tmp_path / "p")
    val, train = prep.split_data("val"), prep.split_data("train")
    assert len(val) == 60 and len(train) == 180
    np.testing.assert_array_equal(val.truth, val.observed)
    assert ((train.observed == 1).sum(axis=1) == 1).all()
    assert prep.manifest["corrupted_splits"] == ["train"]


def test_force_replaces(synth_root, tmp_path):
    out = tmp_path / "p"
    invoke("prepare", "coco", "--root", synth_root, "--out", out)
    with pytest.raises(PumlcError, match="already exists"):
        invoke("prepare", "coco", "--root", synth_root, "--out", out, "--partial", "0.1")
    invoke("prepare", "coco", "--root", synth_root, "--out", out, "--partial", "0.1", "--force")
    assert json.loads((out / "manifest.json").read_text())["corruptions"][0]["p"] == 0.1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


def test_coco128_train_only_and_empty_policy(shared_dir, tmp_path):
    ann = shared_dir / "data" / "coco128" / "annotations" / "instances_train2017.json"
    invoke(
        "prepare",
        "coco",
        "--train-ann",
        ann,
        "--out",
        tmp_path / "keep",
        "--val-fraction",
        "0",
        "--check-images",
    )
    invoke("prepare", "coco", "--train-ann", ann, "--out", tmp_path / "drop", "--empty-images", "drop")
    keep = json.loads((tmp_path / "keep" / "manifest.json").read_text())
    drop = json.loads((tmp_path / "drop" / "manifest.json").read_text())
    assert keep["counts"]["train"] == 128 and keep["counts"]["empty_in_source"] == 2
    assert keep["image_root"] == str((shared_dir / "data" / "coco128" / "train2017").resolve())
    assert drop["counts"]["train"] + drop["counts"]["val"] == 126 and drop["counts"]["dropped_empty"] == 2
    frame = pd.read_parquet(tmp_path / "drop" / "images.parquet")
    assert "000000000250.jpg" not in set(frame["image"])


def test_voc_prepare(shared_dir, tmp_path):
    root = shared_dir / "data" / "voc2007" / "VOCdevkit" / "VOC2007"
    invoke(
        "prepare",
        "voc",
        "--root",
        root,
        "--out",
        tmp_path / "v",
        "--voc-difficult",
        "negative",
        "--check-images",
    )
    manifest = json.loads((tmp_path / "v" / "manifest.json").read_text())
    assert manifest["counts"]["test"] == 9 and manifest["counts"]["train"] + manifest["counts"]["val"] == 500
    assert manifest["policies"]["voc_difficult"] == "negative"
    assert [s["role"] for s in manifest["sources"]] == ["train_image_set", "test_image_set", "annotations"]


def test_csv_prepare(tmp_path):
    (tmp_path / "train.csv").write_text("image,labels\na.jpg,dog\nb.jpg,cat dog\nc.jpg,\n")
    (tmp_path / "img").mkdir()
    for name in "abc":
        (tmp_path / "img" / f"{name}.jpg").write_bytes(b"listed, not opened without --check-images")
    invoke(
        "prepare",
        "csv",
        "--train",
        tmp_path / "train.csv",
        "--images",
        tmp_path / "img",
        "--out",
        tmp_path / "p",
        "--val-fraction",
        "0",
    )
    train = load_prepared(tmp_path / "p").split_data("train")
    classes = load_prepared(tmp_path / "p").classes
    assert train.truth[:, classes.index("dog")].tolist() == [1, 1, -1]
    assert train.observed[:, classes.index("cat")].tolist() == [-1, 1, -1]


def test_csv_prepare_with_checked_negatives(tmp_path):
    """A `negatives` column: unlisted classes stay unknown in truth and observed; --strip-negatives still works."""
    (tmp_path / "train.csv").write_text("image,labels,negatives\na.jpg,dog,cat\nb.jpg,cat,\n")
    (tmp_path / "img").mkdir()
    for name in "ab":
        (tmp_path / "img" / f"{name}.jpg").write_bytes(b"listed, not opened without --check-images")
    common = ("prepare", "csv", "--train", tmp_path / "train.csv", "--images", tmp_path / "img")
    invoke(*common, "--out", tmp_path / "p", "--val-fraction", "0", "--classes", "bird,cat,dog")
    train = load_prepared(tmp_path / "p").split_data("train")
    np.testing.assert_array_equal(train.truth, [[0, -1, 1], [0, 1, 0]])
    np.testing.assert_array_equal(train.observed, train.truth)
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["policies"]["absent_class"] == "unknown"
    invoke(*common, "--out", tmp_path / "q", "--val-fraction", "0", "--strip-negatives")
    stripped = load_prepared(tmp_path / "q").split_data("train")
    np.testing.assert_array_equal(stripped.observed, [[0, 1], [1, 0]])
    np.testing.assert_array_equal(stripped.truth, [[-1, 1], [1, 0]])


# ------------------------------------------------------------------------------------------ bad input


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "bad.json").write_text('{"images": [')
    (tmp_path / "t.csv").write_text("image,labels\na.jpg,dog owl\n")
    (tmp_path / "noise.csv").write_text("class,fn\nunicorn,0.2\n")
    return {k: tmp_path / k for k in ("bad.json", "t.csv", "noise.csv")}


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing-json", "no instances_train2014.json or instances_train2017.json"),
        ("malformed-json", "bad.json: malformed JSON"),
        ("unknown-class-csv", "t.csv:2: unknown class name 'owl'"),
        ("unknown-class-noise", "noise.csv:2: unknown class name 'unicorn'"),
        ("partial-range", r"--partial must be within \[0, 1\], got 1.5"),
        ("noise-range", r"--noise-fp must be within \[0, 1\], got -0.2"),
        ("exclusive", "mutually exclusive"),
    ],
)
def test_bad_input_in_process(case, message, tmp_path, synth_root, shared_dir):
    src = tmp_path / "src"
    src.mkdir()
    f = _bad_files(src)
    out = tmp_path / "out"
    args = {
        "missing-json": ["coco", "--root", src],
        "malformed-json": ["coco", "--train-ann", f["bad.json"]],
        "unknown-class-csv": ["csv", "--train", f["t.csv"], "--images", src, "--classes", "dog,cat"],
        "unknown-class-noise": ["coco", "--root", synth_root, "--noise-file", f["noise.csv"]],
        "partial-range": ["coco", "--root", synth_root, "--partial", "1.5"],
        "noise-range": ["coco", "--root", synth_root, "--noise-fp", "-0.2"],
        "exclusive": ["coco", "--root", synth_root, "--partial", "0.5", "--drop-positives", "0.5"],
    }[case]
    with pytest.raises(PumlcError, match=message) as err:
        invoke("prepare", *args, "--out", out)
    assert "\n" not in str(err.value)
    assert not out.exists() and [p for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def _coco_copy(synth_root: Path, tmp_path: Path) -> Path:
    """A COCO root with the synth annotations and images, two of them damaged."""
    import shutil

    root = tmp_path / "coco"
    shutil.copytree(synth_root, root)
    return root


def test_check_images_missing_and_corrupt(synth_root, tmp_path):
    root = _coco_copy(synth_root, tmp_path)
    victim = root / "val2014" / "COCO_val2014_000000000241.jpg"
    victim.unlink()
    res = run_cli("prepare", "coco", "--root", root, "--out", tmp_path / "o1", "--check-images")
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f"pumlc: error: {root}: 1 of 320 listed images are missing (e.g. val2014/{victim.name})"
    )
    assert not (tmp_path / "o1").exists()
    victim.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(PumlcError, match="000000000241.jpg: cannot be opened as an image"):
        invoke("prepare", "coco", "--root", root, "--out", tmp_path / "o2", "--check-images")
    assert not (tmp_path / "o2").exists()
    invoke("prepare", "coco", "--root", root, "--out", tmp_path / "o3")  # without the check: not opened


def test_seed_not_integer_and_existing_output(synth_root, tmp_path):
    res = run_cli("prepare", "coco", "--root", synth_root, "--out", tmp_path / "o", "--seed", "1.5")
    assert res.returncode != 0 and "seed" in res.stderr and not (tmp_path / "o").exists()
    (tmp_path / "o").mkdir()
    res = run_cli("prepare", "coco", "--root", synth_root, "--out", tmp_path / "o")
    assert res.returncode == 2
    assert res.stderr.strip() == f"pumlc: error: {tmp_path / 'o'}: already exists (use --force to replace it)"


def test_voc_listed_image_without_file(shared_dir, tmp_path):
    """000002.xml exists without its image: ignored unless listed; listed, it is reported (a stat per file)."""
    real = shared_dir / "data" / "voc2007" / "VOCdevkit" / "VOC2007"
    root = tmp_path / "VOC2007"
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "Annotations").symlink_to(real / "Annotations")
    (root / "JPEGImages").symlink_to(real / "JPEGImages")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("000005\n000002\n000007\n")
    for extra in (["--check-images"], []):
        with pytest.raises(PumlcError, match=r"1 of 3 listed images are missing \(e.g. JPEGImages/000002.jpg\)"):
            invoke("prepare", "voc", "--root", root, "--out", tmp_path / "o", *extra)
        assert not (tmp_path / "o").exists()
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("000005\n000007\n")
    invoke("prepare", "voc", "--root", root, "--out", tmp_path / "o", "--val-fraction", "0")
    frame = pd.read_parquet(tmp_path / "o" / "images.parquet")
    assert frame["image"].tolist() == ["JPEGImages/000005.jpg", "JPEGImages/000007.jpg"]
