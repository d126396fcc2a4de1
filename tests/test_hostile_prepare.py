"""Hostile and unlucky inputs to `pumlc prepare` (issue 9): every refusal is one line, exit 2, and leaves the
inputs and earlier outputs byte-identical and no temporary file behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import error_line, run_cli, tree_digest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def coco(synth_root, tmp_path) -> Path:
    """A private copy of the synth COCO root (tests may damage it)."""
    root = tmp_path / "coco"
    shutil.copytree(synth_root, root)
    return root


def refused(*args, watch: tuple[Path, ...], expect: str) -> str:
    """Run `pumlc ARGS`; assert exit 2, one line containing `expect`, `watch` byte-identical and no temp file left
    beside it by this run (a concurrent run's own temp folder may be there before and after)."""

    def temps() -> set[Path]:
        return {p for folder in {w.parent for w in watch} for p in folder.iterdir() if p.name.endswith(".tmp")}

    before, temps_before = tree_digest(*watch), temps()
    line = error_line(run_cli(*args, check=False))
    assert expect in line, line
    assert tree_digest(*watch) == before
    assert not temps() - temps_before
    return line


def _coco_args(ann: Path, images: Path, out: Path) -> list:
    """`prepare coco` on one annotation file and image folder: the command most cases here vary."""
    return ["prepare", "coco", "--train-ann", ann, "--train-images", images, "--out", out]


def _coco_file(path: Path, images: list[dict], anns: list[dict] | None = None, cats=None) -> Path:
    doc = {
        "images": images,
        "annotations": anns if anns is not None else [],
        "categories": cats if cats is not None else [{"id": 1, "name": "dog"}],
    }
    path.write_text(json.dumps(doc))
    return path


# ------------------------------------------------------------------------ rule 1: outputs never overlap inputs


@pytest.mark.parametrize(
    "where,how",
    [
        (lambda r, t: r, "is the input"),
        (lambda r, t: r / "annotations" / "p", "lies inside the input"),
        (lambda r, t: r / "train2014", "lies inside the input"),
        (lambda r, t: t, "contains the input"),
        (lambda r, t: r / "annotations" / "instances_train2014.json", "lies inside the input"),
    ],
    ids=["root", "inside-root", "image-folder", "parent-of-root", "annotation-file"],
)
def test_out_overlapping_the_source_is_refused_even_with_force(coco, tmp_path, where, how):
    out = where(coco, tmp_path)
    refused("prepare", "coco", "--root", coco, "--out", out, "--force", watch=(coco,), expect=how)


def test_out_through_a_symlink_alias_of_the_images(coco, tmp_path):
    (tmp_path / "alias").symlink_to(coco / "val2014")
    refused("prepare", "coco", "--root", coco, "--out", tmp_path / "alias", "--force", watch=(coco,), expect="input")


def test_out_equal_to_explicit_files(coco, tmp_path):
    ann = coco / "annotations" / "instances_train2014.json"
    noise = tmp_path / "noise.csv"
    noise.write_text("class,fn\nc0,0.1\n")
    refused("prepare", "coco", "--train-ann", ann, "--out", ann, watch=(coco,), expect="is the input")
    refused(
        "prepare", "coco", "--root", coco, "--noise-file", noise, "--out", noise, watch=(coco, noise), expect="input"
    )
    # the default image folder of an --train-ann without --root is found after reading, still before writing
    refused("prepare", "coco", "--train-ann", ann, "--out", coco / "train2014" / "x", watch=(coco,), expect="inside")


def test_csv_out_inside_the_image_folder(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    (img / "a.jpg").write_bytes(b"x")
    (tmp_path / "t.csv").write_text("image,labels\na.jpg,dog\n")
    refused(
        "prepare",
        "csv",
        "--train",
        tmp_path / "t.csv",
        "--images",
        img,
        "--out",
        img / "p",
        watch=(img,),
        expect="inside",
    )


# --------------------------------------------------------------- rule 2-3: output locations, replacing, claiming


def test_out_locations_checked_first(coco, tmp_path):
    (tmp_path / "file").write_text("mine")
    refused(
        "prepare",
        "coco",
        "--root",
        coco,
        "--out",
        tmp_path / "file" / "p",
        watch=(coco, tmp_path / "file"),
        expect="is a file, not a folder",
    )
    refused(
        "prepare",
        "coco",
        "--root",
        coco,
        "--out",
        tmp_path / "file",
        "--force",
        watch=(coco, tmp_path / "file"),
        expect="is a file, not a folder",
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_out_in_an_unwritable_folder(coco, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    refused("prepare", "coco", "--root", coco, "--out", ro / "p", watch=(coco,), expect="cannot write in")


def test_force_replaces_only_prepared_folders(coco, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    refused(
        "prepare",
        "coco",
        "--root",
        coco,
        "--out",
        mine,
        "--force",
        watch=(coco, mine),
        expect="--force only replaces prepared folders",
    )
    run_cli("prepare", "coco", "--root", coco, "--out", tmp_path / "p")
    first = tree_digest(tmp_path / "p")
    refused(
        "prepare",
        "coco",
        "--root",
        coco,
        "--out",
        tmp_path / "p",
        watch=(coco, tmp_path / "p"),
        expect="already exists (use --force",
    )
    run_cli("prepare", "coco", "--root", coco, "--out", tmp_path / "p", "--force", "--seed", "3")
    assert tree_digest(tmp_path / "p") != first  # replaced, as asked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco", "mine", "p"]


def _start_cached_prepare(coco: Path, out: Path, *, workers: int) -> subprocess.Popen:
    """A real `prepare` slow enough to be caught mid-run: it writes an image cache with `workers` processes."""
    return subprocess.Popen(
        [sys.executable, "-m", "pumlc_cli", "prepare", "coco", "--root", coco, "--out", out]
        + ["--cache-size", "40", "--cache-workers", str(workers)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_second_prepare_on_the_same_out_is_refused_naming_the_holder(coco, tmp_path):
    """A real concurrent run: the first (slow: image cache, one worker) holds the lock; the second is refused."""
    out = tmp_path / "p"
    first = _start_cached_prepare(coco, out, workers=1)
    try:
        lock = tmp_path / ".p.pumlc-lock"
        deadline = time.monotonic() + 60
        # the first run holds the lock and has made its temp folder (the second must add none of its own)
        while first.poll() is None and time.monotonic() < deadline:
            if lock.exists() and lock.read_text() and list(tmp_path.glob(".p.*.tmp")):
                break
            time.sleep(0.05)
        line = refused("prepare", "coco", "--root", coco, "--out", out, watch=(coco,), expect="in use by")
        assert f"pid {first.pid}" in line and "pumlc prepare" in line
    finally:
        assert first.wait(timeout=120) == 0, first.stderr.read()
    assert (out / "images").is_dir() and not lock.exists()


def test_lock_held_in_process_and_released(coco, tmp_path):
    from pumlc_cli.outputs import claim

    out = tmp_path / "p"
    with claim(out, "another pumlc"):
        line = refused("prepare", "coco", "--root", coco, "--out", out, watch=(coco,), expect="in use by")
        assert f"pid {os.getpid()}" in line
    run_cli("prepare", "coco", "--root", coco, "--out", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco", "p"]


# ---------------------------------------------------------------------- rule 4: interrupted means clean


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_cache_workers_leaves_nothing(coco, tmp_path, sig):
    out = tmp_path / "p"
    before = tree_digest(coco)
    proc = _start_cached_prepare(coco, out, workers=2)
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        temps = list(tmp_path.glob(".p.*.tmp/images/*/*.jpg"))
        workers = _children(proc.pid)
        if temps and len(workers) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "prepare finished before it could be interrupted"
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    err = proc.stderr.read().strip().splitlines()
    assert code == 128 + sig
    assert err == [f"pumlc: interrupted ({sig.name}); nothing was written to {out}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco"]  # no temp folder, no lock file, no out
    time.sleep(0.2)
    assert not [w for w in workers if _alive(w)], "orphaned cache workers"
    assert tree_digest(coco) == before


def test_stale_temps_of_a_killed_run_are_removed_by_the_next(coco, tmp_path):
    stale = tmp_path / ".p.abcd1234.tmp"
    (stale / "images").mkdir(parents=True)
    (stale / "labels.parquet").write_bytes(b"")
    (tmp_path / ".p.old-0123456789abcdef0123456789abcdef").mkdir()
    (tmp_path / ".p.pumlc-lock").write_text('{"pid": 999999}')  # a killed holder's lock file (its flock is gone)
    other = tmp_path / ".q.abcd1234.tmp"  # another output's temp folder is not ours to remove
    other.mkdir()
    run_cli("prepare", "coco", "--root", coco, "--out", tmp_path / "p")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".q.abcd1234.tmp", "coco", "p"]


# --------------------------------------------------------------- rule 5: contained and unique image paths


@pytest.mark.parametrize(
    "name,expect",
    [
        ("../val2014/COCO_val2014_000000000241.jpg", "leaves the image folder"),
        ("/etc/passwd", "is absolute"),
        ("a/../../x.jpg", "leaves the image folder"),
        ("", "empty image file name"),
        (None, "must be a string, got None"),
        (7, "must be a string, got 7"),
        ("a\x00.jpg", "NUL"),
    ],
)
def test_coco_file_names_must_stay_inside(coco, name, expect):
    ann = coco / "annotations" / "instances_train2014.json"
    doc = json.loads(ann.read_text())
    doc["images"][3]["file_name"] = name
    ann.write_text(json.dumps(doc))
    refused(
        "prepare", "coco", "--root", coco, "--out", coco.parent / "p", "--check-images", watch=(coco,), expect=expect
    )


@pytest.mark.parametrize(
    "names,expect",
    [
        (["a.jpg", "a.jpg"], "listed twice"),
        (["sub/a.jpg", "sub//a.jpg"], "listed twice"),
        (["./a.jpg", "a.jpg"], "listed twice"),
    ],
)
def test_coco_duplicate_file_names(tmp_path, names, expect):
    images = [{"id": i + 1, "file_name": n} for i, n in enumerate(names)]
    ann = _coco_file(tmp_path / "ann.json", images, [{"image_id": 1, "category_id": 1}])
    (tmp_path / "img").mkdir()
    line = refused(
        *_coco_args(ann, tmp_path / "img", tmp_path / "p"),
        watch=(ann,),
        expect=expect,
    )
    assert "image id 2" in line and "image id 1" in line  # names both entries


def test_same_annotation_file_as_train_and_test_is_a_duplicate(coco, tmp_path):
    ann = coco / "annotations" / "instances_train2014.json"
    refused(
        "prepare",
        "coco",
        "--train-ann",
        ann,
        "--test-ann",
        ann,
        "--out",
        tmp_path / "p",
        watch=(coco,),
        expect="listed twice",
    )


@pytest.mark.parametrize(
    "rows,expect",
    [
        ("./a.jpg,dog\na.jpg,cat\n", "listed twice"),
        ("a.jpg,dog\nsub/../a.jpg,cat\n", "leaves the image folder"),
        ("../../x.jpg,dog\n", "leaves the image folder"),
        ("/etc/hostname,dog\n", "is not under the image folder"),
    ],
)
def test_csv_paths(tmp_path, rows, expect):
    img = tmp_path / "img"
    img.mkdir()
    (img / "a.jpg").write_bytes(b"x")
    (tmp_path / "t.csv").write_text("image,labels\n" + rows)
    line = refused(
        "prepare",
        "csv",
        "--train",
        tmp_path / "t.csv",
        "--images",
        img,
        "--out",
        tmp_path / "p",
        watch=(img, tmp_path / "t.csv"),
        expect=expect,
    )
    if expect == "listed twice":
        assert "t.csv:3" in line and "t.csv:2" in line


def test_csv_train_and_test_share_an_image(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    (img / "a.jpg").write_bytes(b"x")
    (tmp_path / "t.csv").write_text("image,labels\na.jpg,dog\n")
    (tmp_path / "s.csv").write_text("image,labels\n./a.jpg,dog\n")
    refused(
        "prepare",
        "csv",
        "--train",
        tmp_path / "t.csv",
        "--test",
        tmp_path / "s.csv",
        "--images",
        img,
        "--out",
        tmp_path / "p",
        watch=(img,),
        expect="listed twice",
    )


@pytest.mark.parametrize(
    "train,test,expect",
    [
        ("image,labels,negatives\na.jpg,dog,cat\n", "image,labels\nb.jpg,dog\n", "s.csv: has no 'negatives' column"),
        ("image,labels,negatives\na.jpg,dog cat,cat\n", None, "t.csv:2: class 'cat' is both in labels and in"),
        ("image,labels,negatives\na.jpg,dog,owl\n", None, "t.csv:2: unknown class name 'owl' in negatives"),
        ("image,labels\na.jpg,dog -cat\n", None, "t.csv:2: '-cat': a '-name' is not a class"),
    ],
)
def test_csv_negatives_inconsistent(tmp_path, train, test, expect):
    """Checked negatives said in contradictory ways: one line, exit 2, nothing written."""
    img = tmp_path / "img"
    img.mkdir()
    for name in "ab":
        (img / f"{name}.jpg").write_bytes(b"x")
    (tmp_path / "t.csv").write_text(train)
    args = ["prepare", "csv", "--train", tmp_path / "t.csv", "--images", img, "--out", tmp_path / "p"]
    if test is not None:
        (tmp_path / "s.csv").write_text(test)
        args += ["--test", tmp_path / "s.csv"]
    classes = [] if "owl" not in expect else ["--classes", "dog,cat"]
    refused(*args, *classes, watch=(img, tmp_path / "t.csv"), expect=expect)
    assert not (tmp_path / "p").exists()


def _mini_voc(tmp_path: Path, xml: dict[str, str], trainval: str) -> Path:
    root = tmp_path / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for image_id, body in xml.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(body)
        (root / "JPEGImages" / f"{image_id}.jpg").write_bytes(b"x")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text(trainval)
    return root


_DOG = "<object><name>dog</name><difficult>0</difficult></object>"


@pytest.mark.parametrize(
    "xml,trainval,expect",
    [
        ({"a": f"<annotation><filename>../a.jpg</filename>{_DOG}</annotation>"}, "a\n", "leaves the image folder"),
        ({"a": f"<annotation><filename>/etc/passwd</filename>{_DOG}</annotation>"}, "a\n", "is absolute"),
        (
            {
                "a": f"<annotation><filename>a.jpg</filename>{_DOG}</annotation>",
                "b": f"<annotation><filename>a.jpg</filename>{_DOG}</annotation>",
            },
            "a\nb\n",
            "listed twice",
        ),
        ({"a": f"<annotation>{_DOG}</annotation>"}, "\n\n", "lists no images"),
        ({"a": f"<annotation>{_DOG}</annotation>"}, "../a\n", "leaves the image folder"),
    ],
)
def test_voc_paths(tmp_path, xml, trainval, expect):
    root = _mini_voc(tmp_path, xml, trainval)
    refused("prepare", "voc", "--root", root, "--out", tmp_path / "p", watch=(root,), expect=expect)


@pytest.mark.parametrize(
    "body,expect",
    [
        (
            '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxxxx"><!ENTITY y "&x;&x;&x;&x;&x;&x;&x;&x;">]>'
            f"<annotation><filename>&y;</filename>{_DOG}</annotation>",
            "entities and DTDs are not allowed",
        ),
        (
            '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            f"<annotation><filename>&e;</filename>{_DOG}</annotation>",
            "entities and DTDs are not allowed",
        ),
        ("<annotation><object>", "malformed XML"),
    ],
    ids=["entity-expansion", "external-entity", "malformed"],
)
def test_voc_xml_attacks_are_refused(tmp_path, body, expect):
    root = _mini_voc(tmp_path, {"a": body}, "a\n")
    refused("prepare", "voc", "--root", root, "--out", tmp_path / "p", watch=(root,), expect=expect)


def test_missing_and_irregular_images(coco, tmp_path):
    refused(
        "prepare",
        "coco",
        "--root",
        coco,
        "--train-images",
        tmp_path / "does" / "not" / "exist",
        "--out",
        tmp_path / "p",
        watch=(coco,),
        expect="image folder not found (240 of 320",
    )
    for name in ("COCO_train2014_000000000003.jpg", "COCO_train2014_000000000007.jpg"):
        (coco / "train2014" / name).unlink()
    line = refused(
        "prepare",
        "coco",
        "--root",
        coco,
        "--out",
        tmp_path / "p",
        watch=(coco,),
        expect="2 of 320 listed images are missing",
    )
    assert "COCO_train2014_000000000003.jpg" in line
    os.mkfifo(coco / "train2014" / "COCO_train2014_000000000003.jpg")
    (coco / "train2014" / "COCO_train2014_000000000007.jpg").mkdir()
    refused(
        "prepare",
        "coco",
        "--root",
        coco,
        "--out",
        tmp_path / "p",
        "--check-images",
        watch=(coco,),
        expect="2 of 320 listed images are not regular files",
    )


def test_zero_images(tmp_path):
    (tmp_path / "img").mkdir()
    ann = _coco_file(tmp_path / "ann.json", [])
    refused(
        *_coco_args(ann, tmp_path / "img", tmp_path / "p"),
        watch=(ann,),
        expect="lists no images",
    )
    (tmp_path / "t.csv").write_text("image,labels\n")
    refused(
        "prepare",
        "csv",
        "--train",
        tmp_path / "t.csv",
        "--images",
        tmp_path / "img",
        "--classes",
        "dog",
        "--out",
        tmp_path / "p",
        watch=(tmp_path / "t.csv",),
        expect="lists no images",
    )
    (tmp_path / "img" / "a.jpg").write_bytes(b"x")
    ann = _coco_file(tmp_path / "ann2.json", [{"id": 1, "file_name": "a.jpg"}])  # its one image has no annotation
    refused(
        "prepare",
        "coco",
        "--train-ann",
        ann,
        "--train-images",
        tmp_path / "img",
        "--empty-images",
        "drop",
        "--out",
        tmp_path / "p",
        watch=(ann,),
        expect="no training images",
    )


# ------------------------------------------------------------------ rule 6: annotation fields are type-checked


@pytest.mark.parametrize(
    "section,key,value,expect",
    [
        ("images", "id", 1.7, "'images' id must be an integer, got 1.7"),
        ("images", "id", True, "'images' id must be an integer, got true"),
        ("images", "id", "5", "'images' id must be an integer, got \"5\""),
        ("images", "id", None, "'images' id must be an integer, got null"),
        ("images", "id", 2**70, "outside the 64-bit integer range"),
        ("annotations", "image_id", 1.0, "'annotations' image_id must be an integer, got 1.0"),
        ("annotations", "category_id", False, "category_id must be an integer, got false"),
        ("categories", "id", 1.5, "'categories' id must be an integer, got 1.5"),
        ("categories", "name", None, "name must be a non-empty string, got null"),
    ],
)
def test_coco_field_types(coco, section, key, value, expect):
    ann = coco / "annotations" / "instances_train2014.json"
    doc = json.loads(ann.read_text())
    doc[section][0][key] = value
    ann.write_text(json.dumps(doc))
    refused("prepare", "coco", "--root", coco, "--out", coco.parent / "p", watch=(coco,), expect=expect)


# ------------------------------------------------------------------------------ rule 11: the umask is respected


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_prepared_folder_respects_umask(coco, tmp_path, mask):
    old = os.umask(mask)
    try:
        run_cli(
            "prepare", "coco", "--root", coco, "--out", tmp_path / "p", "--cache-size", "40", "--cache-workers", "1"
        )
    finally:
        os.umask(old)
    folders = [tmp_path / "p", tmp_path / "p" / "images", tmp_path / "p" / "images" / "train2014"]
    files = [tmp_path / "p" / "manifest.json", tmp_path / "p" / "labels.parquet", tmp_path / "p" / "images.parquet"]
    files += list((tmp_path / "p" / "images" / "val2014").iterdir())[:3]
    assert {oct(f.stat().st_mode & 0o777) for f in folders} == {oct(0o777 & ~mask)}
    assert {oct(f.stat().st_mode & 0o777) for f in files} == {oct(0o666 & ~mask)}


def test_stats_report_never_overwrites_the_prepared_folder(synth_prepared, tmp_path):
    for target, expect in [
        (synth_prepared / "manifest.json", "lies inside the input"),
        (synth_prepared, "is the input"),
        (tmp_path / "missing" / "s.json", "does not exist"),
    ]:
        refused("stats", synth_prepared, "--json", target, watch=(synth_prepared,), expect=expect)
    run_cli("stats", synth_prepared, "--json", tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text())["summary"]


# ------------------------------------------------------ issue 21, item 16: no silent drops, no symlink escapes


def _csv_images(tmp_path: Path, names: tuple[str, ...] = ("a.jpg", "b.jpg")) -> Path:
    img = tmp_path / "img"
    img.mkdir(parents=True)
    for name in names:
        (img / name).write_bytes(b"x")
    return img


def _csv_args(csv: Path, img: Path, out: Path, *extra) -> list:
    return ["prepare", "csv", "--train", csv, "--images", img, "--out", out, "--val-fraction", "0", *extra]


def test_csv_row_with_extra_fields_is_refused_naming_it(tmp_path):
    """`img,a,extra,cols` kept `a` and dropped the rest without a word."""
    img = _csv_images(tmp_path)
    csv = tmp_path / "t.csv"
    csv.write_text("image,labels\na.jpg,dog\nb.jpg,dog,cat,bird\n")
    line = refused(*_csv_args(csv, img, tmp_path / "p"), watch=(img, csv), expect=f"{csv}:3: 4 fields but the header")
    assert "quote a field" in line and not (tmp_path / "p").exists()
    csv.write_text('image,labels\na.jpg,dog\nb.jpg,"dog cat",\n')  # quoted, and an empty trailing field drops nothing
    run_cli(*_csv_args(csv, img, tmp_path / "p"))
    from pumlc_cli import load_prepared

    assert load_prepared(tmp_path / "p").classes == ["cat", "dog"]


@pytest.mark.parametrize("extra", [(), ("--check-images",), ("--cache-size", "32")])
def test_symlink_out_of_the_image_root_is_refused(coco, tmp_path, extra):
    """A symlink inside the image root pointing outside it was accepted (with --check-images too) and cached."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = coco / "train2014" / "COCO_train2014_000000000003.jpg"
    shutil.copy(victim, outside / "secret.jpg")
    victim.unlink()
    victim.symlink_to(outside / "secret.jpg")
    line = refused(
        "prepare",
        "coco",
        "--root",
        coco,
        "--out",
        tmp_path / "p",
        *extra,
        watch=(coco, outside),
        expect="1 of 320 listed images are symlinks leading outside the image folder",
    )
    assert victim.name in line and str(outside / "secret.jpg") in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco", "outside"]


def test_symlinked_folder_is_a_layout_but_not_an_escape_route(tmp_path):
    """A linked sub-folder (`sub -> /elsewhere`) is followed; a linked file in it leading out is still refused."""
    img = _csv_images(tmp_path)
    elsewhere = _csv_images(tmp_path / "x", ("c.jpg",))
    (img / "sub").symlink_to(elsewhere)
    csv = tmp_path / "t.csv"
    csv.write_text("image,labels\na.jpg,dog\nsub/c.jpg,cat\n")
    run_cli(*_csv_args(csv, img, tmp_path / "p"))
    (elsewhere / "d.jpg").symlink_to(tmp_path / "t.csv")
    csv.write_text("image,labels\na.jpg,dog\nsub/d.jpg,cat\n")
    refused(*_csv_args(csv, img, tmp_path / "q"), watch=(img, csv), expect="symlinks leading outside")


def test_symlink_alias_of_a_listed_image_is_a_duplicate(tmp_path):
    """A symlink alias of a listed image was not refused as a duplicate."""
    img = _csv_images(tmp_path)
    (img / "alias.jpg").symlink_to("a.jpg")
    csv = tmp_path / "t.csv"
    csv.write_text("image,labels\na.jpg,dog\nb.jpg,cat\nalias.jpg,cat\n")
    line = refused(*_csv_args(csv, img, tmp_path / "p"), watch=(img, csv), expect="listed twice")
    assert "'alias.jpg'" in line and "'a.jpg'" in line
    csv.write_text("image,labels\nb.jpg,cat\nalias.jpg,cat\n")  # a link within the folder to an unlisted file
    run_cli(*_csv_args(csv, img, tmp_path / "p"))
