"""Time `pumlc prepare coco` against `pycocotools.coco.COCO(path)` on a COCO-val2014-sized instances file.

The file is generated (no download): 40,504 images, 291,875 annotations over COCO's 80 categories, each with
a box and a polygon segmentation, in the layout of `instances_val2014.json`. Both sides run in this process
on the same file; each is timed `--repeat` times and the best run counts. "prepare" covers everything the
command does after argument parsing: reading and hashing the file, building the label table, writing the
prepared folder.
Target: prepare / pycocotools <= 1.2.

    python bench/prepare.py [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_IMAGES, N_ANNOTATIONS = 40_504, 291_875


def generate(path: Path, seed: int = 0, points: int = 12) -> None:
    """A val2014-sized instances file with realistic fields (boxes, polygons, areas, crowd flags)."""
    from pumlc_cli.data.meta import coco_categories

    rng = np.random.default_rng(seed)
    cats = coco_categories()
    image_ids = np.sort(rng.choice(600_000, size=N_IMAGES, replace=False)) + 1
    # ~1.3% of images have no annotation, as in val2014; the rest get a skewed number of annotations
    owners = rng.choice(image_ids[: int(N_IMAGES * 0.987)], size=N_ANNOTATIONS)
    cat_of = rng.choice([c for c, _ in cats], size=N_ANNOTATIONS, p=np.r_[0.2, np.full(79, 0.8 / 79)])
    boxes = np.round(rng.uniform(1, 400, size=(N_ANNOTATIONS, 4)), 2)
    polys = np.round(rng.uniform(0, 640, size=(N_ANNOTATIONS, 2 * points)), 2)
    crowd = rng.random(N_ANNOTATIONS) < 0.01
    images = [
        {
            "license": int(k % 8) + 1,
            "file_name": f"COCO_val2014_{i:012d}.jpg",
            "coco_url": f"http://images.cocodataset.org/val2014/COCO_val2014_{i:012d}.jpg",
            "height": 480,
            "width": 640,
            "date_captured": "2013-11-14 11:18:45",
            "flickr_url": f"http://farm3.staticflickr.com/2443/{i}_z.jpg",
            "id": int(i),
        }
        for k, i in enumerate(image_ids)
    ]
    anns = [
        {
            "segmentation": [polys[k].tolist()],
            "area": float(boxes[k, 2] * boxes[k, 3]),
            "iscrowd": int(crowd[k]),
            "image_id": int(owners[k]),
            "bbox": boxes[k].tolist(),
            "category_id": int(cat_of[k]),
            "id": int(k + 1),
        }
        for k in range(N_ANNOTATIONS)
    ]
    doc = {
        "info": {"description": "pumlc bench: synthetic COCO val2014-sized file", "year": 2014},
        "images": images,
        "licenses": [{"id": i, "name": f"license {i}", "url": ""} for i in range(1, 9)],
        "annotations": anns,
        "categories": [{"supercategory": "thing", "id": cid, "name": name} for cid, name in cats],
    }
    path.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")


def time_pycocotools(path: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of `COCO(path)`."""
    from pycocotools.coco import COCO

    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    assert len(coco.imgs) == N_IMAGES and len(coco.anns) == N_ANNOTATIONS
    del coco
    return dt, dc


def touch_images(path: Path, images: Path) -> None:
    """Empty files for the listed images: prepare checks that each one exists (a `stat` each, timed with it)."""
    images.mkdir(parents=True, exist_ok=True)
    for entry in json.loads(path.read_text())["images"]:
        (images / entry["file_name"]).touch()


def time_prepare(path: Path, images: Path, out: Path) -> tuple[float, float]:
    """(wall, CPU) of reading the file, building the table, checking the images and writing the prepared folder."""
    from pumlc_cli.data.prepared import WriteOptions, prepare_dataset
    from pumlc_cli.data.readers.coco import read_coco

    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    table = read_coco(path, None, images)
    prepare_dataset(table, out, options=WriteOptions(force=True))
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    assert len(table.images) == N_IMAGES and table.info["class_source"] == "coco2014"
    del table
    return dt, dc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the generated file here and keep it")
    parser.add_argument("--target", type=float, default=1.2)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pumlc-bench-"))
    try:
        path = (args.keep or tmp) / "instances_val2014.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if not path.exists():
            generate(path)
        print(
            f"file: {path} ({path.stat().st_size / 1e6:.0f} MB, {N_IMAGES:,} images, "
            f"{N_ANNOTATIONS:,} annotations; ready in {time.perf_counter() - t0:.1f}s)"
        )
        touch_images(path, tmp / "images")
        # warm-up: imports (pyarrow, pandas) and the page cache, so neither side pays them in the timed runs
        time_prepare(path, tmp / "images", tmp / "prepared")
        coco_runs, prep_runs = [], []
        for _ in range(args.repeat):  # interleaved, so drift in machine load hits both sides alike
            coco_runs.append(time_pycocotools(path))
            prep_runs.append(time_prepare(path, tmp / "images", tmp / "prepared"))
        coco_t, prep_t = min(t for t, _ in coco_runs), min(t for t, _ in prep_runs)
        coco_c, prep_c = min(c for _, c in coco_runs), min(c for _, c in prep_runs)
        ratio = prep_t / coco_t

        def runs(rs):
            return ", ".join(f"{t:.2f}" for t, _ in rs)

        print(f"pycocotools COCO(path): {coco_t:.2f}s wall, {coco_c:.2f}s CPU  (wall runs: {runs(coco_runs)})")
        print(f"pumlc prepare coco:     {prep_t:.2f}s wall, {prep_c:.2f}s CPU  (wall runs: {runs(prep_runs)})")
        print(
            f"ratio prepare / pycocotools: {ratio:.2f} wall, {prep_c / coco_c:.2f} CPU  "
            f"(target <= {args.target}) -> {'OK' if ratio <= args.target else 'TOO SLOW'}"
        )
        return 0 if ratio <= args.target else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
