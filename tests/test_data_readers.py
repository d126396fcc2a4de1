"""Readers on the real files in ../shared/data and on small hand-made inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pumlc_cli.data.meta import coco_categories, coco_classes, voc_classes
from pumlc_cli.data.readers.coco import read_coco
from pumlc_cli.data.readers.csv_reader import parse_class_list, read_csv_labels
from pumlc_cli.data.readers.voc import read_voc
from pumlc_cli.errors import PumlcError


def voc_root(shared: Path) -> Path:
    return shared / "data" / "voc2007" / "VOCdevkit" / "VOC2007"


def official_matrix(root: Path, split: str) -> tuple[list[str], np.ndarray]:
    """Image ids of ImageSets/Main/<split>.txt and the devkit's per-class values (1 / -1 / 0)."""
    main = root / "ImageSets" / "Main"
    ids = main.joinpath(f"{split}.txt").read_text().split()
    out = np.zeros((len(ids), 20), dtype=np.int8)
    pos = {i: k for k, i in enumerate(ids)}
    for j, name in enumerate(voc_classes()):
        for line in main.joinpath(f"{name}_{split}.txt").read_text().splitlines():
            image_id, value = line.split()
            out[pos[image_id], j] = int(value)
    return ids, out


def test_meta_lists():
    cats = coco_categories()
    assert len(cats) == 80 and cats[0] == (1, "person") and cats[-1] == (90, "toothbrush")
    assert [i for i, _ in cats] == sorted(i for i, _ in cats)
    gaps = sorted(set(range(1, 91)) - {i for i, _ in cats})
    assert gaps == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]
    assert coco_classes()[:3] == ["person", "bicycle", "car"]
    voc = voc_classes()
    assert len(voc) == 20 and voc[0] == "aeroplane" and voc[-1] == "tvmonitor"


@pytest.mark.parametrize("split,part", [("trainval", "train"), ("test", "test")])
def test_voc_default_policy_equals_official_lists(shared_dir, split, part):
    root = voc_root(shared_dir)
    table = read_voc(root)
    ids, expected = official_matrix(root, split)
    rows = np.flatnonzero(table.part == part)
    assert [Path(table.images[r]).stem for r in rows] == ids  # image-set order kept
    np.testing.assert_array_equal(table.truth[rows], expected)


def test_voc_counts_and_stray_xml(shared_dir):
    table = read_voc(voc_root(shared_dir))
    assert (table.part == "train").sum() == 500 and (table.part == "test").sum() == 9
    assert "JPEGImages/000002.jpg" not in table.images  # XML without listing (and without image) is ignored
    assert table.images[0] == "JPEGImages/000005.jpg"
    assert table.info["policies"]["voc_difficult"] == "ignore"
    assert table.info["difficult_only_labels"] == int((table.truth == 0).sum()) > 0


@pytest.mark.parametrize("policy,value", [("negative", -1), ("positive", 1)])
def test_voc_difficult_policies(shared_dir, policy, value):
    root = voc_root(shared_dir)
    base = read_voc(root)
    table = read_voc(root, difficult=policy)
    hard = base.truth == 0
    assert hard.any()
    assert (table.truth[hard] == value).all()
    np.testing.assert_array_equal(table.truth[~hard], base.truth[~hard])


def _mini_voc(tmp_path: Path, objects: dict[str, str], listed: list[str]) -> Path:
    root = tmp_path / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for image_id, body in objects.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(body)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("".join(f"{i}\n" for i in listed))
    return root


def _xml(*objs: tuple[str, int]) -> str:
    inner = "".join(f"<object><name>{n}</name><difficult>{d}</difficult></object>" for n, d in objs)
    return f"<annotation>{inner}</annotation>"


def test_voc_difficult_mixed_and_no_test_set(tmp_path):
    root = _mini_voc(tmp_path, {"a": _xml(("dog", 1), ("dog", 0), ("cat", 1)), "b": _xml(("person", 0))}, ["a", "b"])
    table = read_voc(root)
    cls = {n: i for i, n in enumerate(voc_classes())}
    assert table.truth[0, cls["dog"]] == 1  # one non-difficult object suffices
    assert table.truth[0, cls["cat"]] == 0
    assert table.truth[1, cls["person"]] == 1 and table.truth[1, cls["dog"]] == -1
    assert set(table.part) == {"train"}


@pytest.mark.parametrize(
    "objects,listed,message",
    [
        ({"a": "<annotation><object>"}, ["a"], "a.xml: malformed XML"),
        ({"a": _xml(("dragon", 0))}, ["a"], "unknown class name 'dragon'"),
        ({"a": _xml(("dog", 0))}, ["a", "b"], "b.xml: annotation missing"),
    ],
)
def test_voc_bad_input(tmp_path, objects, listed, message):
    root = _mini_voc(tmp_path, objects, listed)
    with pytest.raises(PumlcError, match=message):
        read_voc(root)


def test_voc_missing_root_and_imageset(tmp_path):
    with pytest.raises(PumlcError, match="VOC root folder not found"):
        read_voc(tmp_path / "nope")
    (tmp_path / "VOC").mkdir()
    with pytest.raises(PumlcError, match="trainval.txt: VOC image set not found"):
        read_voc(tmp_path / "VOC")


def coco128(shared: Path) -> tuple[Path, Path]:
    base = shared / "data" / "coco128"
    return base / "annotations" / "instances_train2017.json", base / "train2017"


def test_coco128_all_images_kept_and_matches_pycocotools(shared_dir):
    from pycocotools.coco import COCO

    ann, images = coco128(shared_dir)
    table = read_coco(ann, None, images)
    assert len(table.images) == 128 and set(table.part) == {"train"}
    assert table.info["class_source"] == "coco2014" and table.classes == coco_classes()
    assert table.image_root == images.resolve() and table.images[0] == "000000000009.jpg"
    empty = sorted(Path(table.images[i]).stem for i in np.flatnonzero(table.empty))
    assert empty == ["000000000250", "000000000508"]
    assert (table.truth[table.empty] == -1).all()
    # reference: pycocotools index, per image, in file order
    coco = COCO(str(ann))
    index = {cid: j for j, cid in enumerate(sorted(coco.getCatIds()))}
    expected = np.full((128, 80), -1, np.int8)
    for r, img in enumerate(coco.dataset["images"]):
        for a in coco.imgToAnns[img["id"]]:
            expected[r, index[a["category_id"]]] = 1
    np.testing.assert_array_equal(table.truth, expected)
    per_image = (table.truth == 1).sum(axis=1)
    assert (per_image > 1).sum() == 101 and per_image.mean() == pytest.approx(2.83, abs=0.005)


def _coco_doc(images, anns, cats=((3, "b"), (1, "a"), (7, "c"))):
    return {
        "images": [{"id": i, "file_name": f"{i}.jpg"} for i in images],
        "annotations": [
            {"id": k, "image_id": i, "category_id": c, "iscrowd": crowd} for k, (i, c, crowd) in enumerate(anns)
        ],
        "categories": [{"id": i, "name": n} for i, n in cats],
    }


def test_coco_own_categories_crowd_and_layout(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train2014.json").write_text(
        json.dumps(_coco_doc([10, 5, 7], [(5, 1, 0), (5, 7, 1), (10, 3, 0), (10, 3, 0)]))
    )
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(_coco_doc([1], [(1, 7, 1)])))
    table = read_coco(
        root / "annotations" / "instances_train2014.json", root / "annotations" / "instances_val2014.json"
    )
    assert table.classes == ["a", "b", "c"] and table.info["class_source"] == "file"
    assert table.image_root == root.resolve()
    assert table.images == ["train2014/10.jpg", "train2014/5.jpg", "train2014/7.jpg", "val2014/1.jpg"]
    assert table.part.tolist() == ["train", "train", "train", "test"]
    np.testing.assert_array_equal(table.truth, [[-1, 1, -1], [1, -1, 1], [-1, -1, -1], [-1, -1, 1]])
    assert table.empty.tolist() == [False, False, True, False]
    assert table.info["train_crowd_annotations"] == 1  # crowd annotations are positives
    assert [s["role"] for s in table.sources] == ["train_annotations", "test_annotations"]


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "malformed JSON"),
        ("[]", "not a COCO instances file"),
        ('{"images": [], "annotations": []}', "no 'categories' list"),
        (json.dumps(_coco_doc([1], [(2, 1, 0)])), "refers to image id 2"),
        (json.dumps(_coco_doc([1], [(1, 99, 0)])), "category id 99"),
        (json.dumps(_coco_doc([1, 1], [])), "image id 1 is listed twice"),
    ],
)
def test_coco_bad_input(tmp_path, content, message):
    ann = tmp_path / "instances_train2014.json"
    ann.write_text(content)
    with pytest.raises(PumlcError, match=message) as err:
        read_coco(ann, None)
    assert str(ann) in str(err.value) and "\n" not in str(err.value)


def test_coco_missing_file(tmp_path):
    with pytest.raises(PumlcError, match="instances_x.json: COCO annotation file not found"):
        read_coco(tmp_path / "instances_x.json", None)


def test_csv_reader(tmp_path):
    (tmp_path / "train.csv").write_text("image,labels\na.jpg,dog cat\nsub/b.jpg,\nc.jpg,  bird\n")
    (tmp_path / "test.csv").write_text("image,labels\nd.jpg,zebra dog\n")
    table = read_csv_labels(tmp_path / "train.csv", tmp_path / "test.csv", tmp_path)
    assert table.classes == ["bird", "cat", "dog", "zebra"]
    assert table.images == ["a.jpg", "sub/b.jpg", "c.jpg", "d.jpg"]
    np.testing.assert_array_equal(table.truth, [[-1, 1, 1, -1], [-1, -1, -1, -1], [1, -1, -1, -1], [-1, -1, 1, 1]])
    assert table.empty.tolist() == [False, True, False, False]
    assert table.part.tolist() == ["train"] * 3 + ["test"]


def test_csv_separator_and_given_classes(tmp_path):
    (tmp_path / "t.csv").write_text('labels,image\n"traffic light;dog",x.jpg\n')
    (tmp_path / "classes.txt").write_text("dog\ntraffic light\ncat\n")
    classes = parse_class_list(str(tmp_path / "classes.txt"))
    table = read_csv_labels(tmp_path / "t.csv", None, tmp_path, sep=";", classes=classes)
    assert table.classes == ["dog", "traffic light", "cat"]
    np.testing.assert_array_equal(table.truth, [[1, 1, -1]])
    assert parse_class_list("a, b,c") == ["a", "b", "c"]


def test_csv_negatives_column_makes_unlisted_classes_unknown(tmp_path):
    (tmp_path / "train.csv").write_text(
        "image,labels,negatives\na.jpg,dog,cat\nb.jpg,,\nc.jpg,cat,dog bird\nd.jpg,,bird\n"
    )
    (tmp_path / "test.csv").write_text("image,negatives,labels\ne.jpg,dog,bird\n")
    table = read_csv_labels(tmp_path / "train.csv", tmp_path / "test.csv", tmp_path)
    assert table.classes == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(table.truth, [[0, -1, 1], [0, 0, 0], [-1, 1, -1], [-1, 0, 0], [1, 0, -1]])
    # a row with only checked negatives is annotated; a row with nothing is an empty image
    assert table.empty.tolist() == [False, True, False, False, False]
    assert table.info["policies"]["absent_class"] == "unknown"
    without = read_csv_labels(tmp_path / "test.csv", None, tmp_path, classes=["bird", "cat", "dog"])
    assert without.info["policies"]["absent_class"] == "unknown"
    (tmp_path / "plain.csv").write_text("image,labels\nf.jpg,dog\n")
    plain = read_csv_labels(tmp_path / "plain.csv", None, tmp_path, classes=["bird", "cat", "dog"])
    np.testing.assert_array_equal(plain.truth, [[-1, -1, 1]])
    assert plain.info["policies"]["absent_class"] == "negative"


@pytest.mark.parametrize(
    "train,test,classes,message",
    [
        ("image,labels,negatives\na.jpg,dog,dog\n", None, None, r"t.csv:2: class 'dog' is both in labels and in"),
        ("image,labels,negatives\na.jpg,dog,owl\n", None, ["dog"], r"t.csv:2: unknown class name 'owl' in negatives"),
        ("image,labels\na.jpg,dog -cat\n", None, None, r"t.csv:2: '-cat': a '-name' is not a class.*add a 'neg"),
        ("image,labels,negatives\na.jpg,dog -cat,\n", None, None, r"'-cat'.*list it in the 'negatives' column"),
        ("image,labels,negatives\na.jpg,dog,\n", "image,labels\nb.jpg,dog\n", None, r"s.csv: has no 'negatives'"),
        ("image,labels\na.jpg,dog\n", "image,labels,negatives\nb.jpg,dog,\n", None, r"t.csv: has no 'negatives'"),
        ("image,labels,negatives\na.jpg,dog\n", None, None, r"t.csv:2: expected 3 fields, got 2"),
    ],
)
def test_csv_negatives_refusals(tmp_path, train, test, classes, message):
    (tmp_path / "t.csv").write_text(train)
    if test is not None:
        (tmp_path / "s.csv").write_text(test)
    with pytest.raises(PumlcError, match=message):
        read_csv_labels(tmp_path / "t.csv", tmp_path / "s.csv" if test else None, tmp_path, classes=classes)


def test_csv_dash_class_listed_in_classes_is_a_class(tmp_path):
    (tmp_path / "t.csv").write_text("image,labels\na.jpg,-x\n")
    table = read_csv_labels(tmp_path / "t.csv", None, tmp_path, classes=["-x", "y"])
    np.testing.assert_array_equal(table.truth, [[1, -1]])


@pytest.mark.parametrize(
    "content,classes,message",
    [
        ("image,labels\na.jpg,dog owl\n", ["dog"], r"t.csv:2: unknown class name 'owl'"),
        ("img,tags\na.jpg,dog\n", None, "header must have columns"),
        ("image,labels\na.jpg,dog\na.jpg,cat\n", None, "listed twice"),
        ("", None, "empty file"),
    ],
)
def test_csv_bad_input(tmp_path, content, classes, message):
    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(PumlcError, match=message):
        read_csv_labels(tmp_path / "t.csv", None, tmp_path, classes=classes)
