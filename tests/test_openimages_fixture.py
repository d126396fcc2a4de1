"""The Open Images test fixture itself: official names and headers, determinism, and hostile damage where it says."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest

from tests.openimages_fixture import HOSTILE, SPLITS, UNKNOWN_MID, write_openimages


def digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `root`."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.*")}


@pytest.mark.parametrize("version", ["v6", "v7"])
def test_official_layout(tmp_path, version):
    oi = write_openimages(tmp_path / version, version=version)
    names = {p.name for p in oi.files.values()}
    assert ("oidv7-val-annotations-human-imagelabels.csv" in names) == (version == "v7")
    assert ("validation-annotations-human-imagelabels.csv" in names) == (version == "v6")
    with oi.files["descriptions"].open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["LabelName", "DisplayName"] and ["/m/0x2c4", "Marvel, Hearst"] in rows
    trainable = oi.files["trainable"].read_text().split()
    assert trainable == oi.trainable and set(trainable) < {r[0] for r in rows[1:]}
    for split in SPLITS:
        for kind in ("human", "machine"):
            with oi.files[f"{kind}:{split}"].open(newline="") as fh:
                rows = list(csv.reader(fh))
            assert rows[0] == ["ImageID", "Source", "LabelName", "Confidence"]
            assert {r[0] for r in rows[1:]} <= set(oi.image_ids[split])
            assert [r[0] for r in rows[1:]] == sorted(r[0] for r in rows[1:])
        human = {(r[0], r[2]): r[3] for r in oi.human[split]}
        assert set(human.values()) == {"0", "1"} and len(human) == len(oi.human[split])  # no duplicate pairs
        # a verified positive on a shape is a shape drawn in the image, a verified negative one that is not
        for (image_id, mid), conf in human.items():
            if mid in oi.trainable:
                assert (mid in oi.present[split][image_id]) == (conf == "1")
        assert sorted(p.stem for p in (oi.root / split).glob("*.jpg")) == oi.image_ids[split]


def test_deterministic(tmp_path):
    a, b = write_openimages(tmp_path / "a", seed=3), write_openimages(tmp_path / "b", seed=3)
    assert digest(a.root) == digest(b.root) and len(digest(a.root)) == 8 + 60
    assert write_openimages(tmp_path / "c", seed=4).image_ids != a.image_ids


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile(tmp_path, kind):
    oi = write_openimages(tmp_path / kind, hostile=kind)
    where = oi.hostile
    if kind == "missing_image":
        assert where["count"] == 4 and not (oi.root / "train" / f"{where['missing']['train'][0]}.jpg").exists()
        return
    lines = where["file"].read_text().splitlines()
    line = lines[where["line"] - 1].split(",")
    assert len(lines) == len(oi.human["train"]) + 1 + (kind != "wrong_header")
    expected = {
        "bad_row": lambda: line[3] == "yes",
        "short_row": lambda: len(line) == 3,
        "unknown_mid": lambda: line[2] == UNKNOWN_MID,
        "conflict": lambda: line[3] == "0" and lines[where["line"] - 2].split(",")[2:] == [where["label"], "1"],
        "wrong_header": lambda: line == ["ImageId", "Source", "Label", "Score"],
    }[kind]
    assert expected(), line
