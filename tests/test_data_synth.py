"""`pumlc synth`: COCO format that pycocotools and our reader accept, determinism, layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pumlc_cli.cli import app
from pumlc_cli.data.readers.coco import read_coco
from pumlc_cli.data.synth import CLASSES, make_synth
from pumlc_cli.errors import PumlcError


def test_synth_layout_and_pycocotools(synth_root):
    from pycocotools.coco import COCO

    assert sorted(p.name for p in (synth_root / "annotations").iterdir()) == [
        "instances_train2014.json",
        "instances_val2014.json",
    ]
    coco = COCO(str(synth_root / "annotations" / "instances_train2014.json"))
    assert len(coco.getImgIds()) == 240 and len(coco.getCatIds()) == len(CLASSES) == 10
    per_image = [len(coco.getAnnIds(imgIds=i)) for i in coco.getImgIds()]
    assert min(per_image) >= 1 and max(per_image) <= 4
    ann = coco.loadAnns(coco.getAnnIds(imgIds=1))[0]
    x, y, w, h = ann["bbox"]
    assert x >= 0 and y >= 0 and x + w <= 48.01 and y + h <= 48.01 and w > 3
    assert len(list((synth_root / "val2014").glob("*.jpg"))) == 80


def test_synth_reads_as_coco_and_is_multilabel(synth_root):
    table = read_coco(synth_root / "annotations" / "instances_train2014.json", None)
    assert table.classes == [name for _, name, _, _ in CLASSES]
    assert table.info["class_source"] == "file"
    k = (table.truth == 1).sum(axis=1)
    assert k.min() >= 1 and k.max() <= 4 and (k > 1).mean() > 0.4
    assert ((table.truth == 1).mean(axis=0) > 0.1).all()  # every class common enough to learn


def test_synth_deterministic(tmp_path):
    make_synth(tmp_path / "a", 6, 2, seed=1, image_size=32)
    make_synth(tmp_path / "b", 6, 2, seed=1, image_size=32)
    make_synth(tmp_path / "c", 6, 2, seed=2, image_size=32)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 10
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    a = json.loads((tmp_path / "a" / "annotations" / "instances_train2014.json").read_text())
    c = json.loads((tmp_path / "c" / "annotations" / "instances_train2014.json").read_text())
    assert a["annotations"] != c["annotations"]
    ids = [im["id"] for im in a["images"]]
    val = json.loads((tmp_path / "a" / "annotations" / "instances_val2014.json").read_text())
    assert not set(ids) & {im["id"] for im in val["images"]}


def test_synth_images_differ_by_class():
    """The centre of a lone (filled) object has its class colour: the signal is there to learn."""
    from pumlc_cli.data.synth import _render

    rng = np.random.default_rng(0)
    checked = 0
    while checked < 5:
        img, objects = _render(rng, 64)
        cls, (x, y, w, h), _ = objects[0]
        if len(objects) > 1 or CLASSES[cls][2] in ("ring", "triangle", "cross"):
            continue
        arr = np.asarray(img).astype(float)
        cy, cx = int(y + h / 2), int(x + w / 2)
        centre = arr[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(axis=0)
        assert np.abs(centre - np.array(CLASSES[cls][3])).max() < 45
        checked += 1


def test_synth_cli(tmp_path):
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), "--images", "10", "--image-size", "32", "--seed", "4"])
    assert res.exit_code == 0, res.output
    assert "8 train2014 + 2 val2014" in res.output
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), "--images", "10"])
    assert isinstance(res.exception, PumlcError) and "already exists" in str(res.exception)
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), "--images", "10", "--force"])
    assert res.exit_code == 0


@pytest.mark.parametrize("args", [["--images", "1"], ["--image-size", "8"], ["--seed", "-3"]])
def test_synth_bad_values(tmp_path, args):
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), *args])
    assert isinstance(res.exception, PumlcError) and not (tmp_path / "s").exists()
