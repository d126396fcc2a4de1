"""A deterministic multi-label image dataset in real COCO format: coloured shapes on cluttered backgrounds.

Why: tests, `make demo` and first experiments need a dataset that downloads nothing, reads through the same
COCO path as the real thing, and that a small CNN learns on a laptop CPU in a minute or two. Classes are
shape x colour combinations in which every shape and most colours occur in two classes, so a model must
combine both cues. Each image holds 1-4 objects (random class, position, size; repeats allowed) over a noisy
background with grey clutter strokes. Category ids are sparse (as in COCO) and do not match COCO's 80, so
readers use the file's own categories. Same arguments -> same files, byte for byte (for a given Pillow
version).
"""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import numpy as np

from pumlc_cli.atomic import remove_stale, temp_dir_beside
from pumlc_cli.errors import PumlcError
from pumlc_cli.inputs import MAX_IMAGE_SIDE
from pumlc_cli.outputs import claim

# (category id, name, shape, RGB colour)
CLASSES: list[tuple[int, str, str, tuple[int, int, int]]] = [
    (1, "red_circle", "circle", (220, 40, 40)),
    (2, "blue_circle", "circle", (40, 80, 230)),
    (3, "green_square", "square", (40, 190, 60)),
    (5, "red_square", "square", (220, 40, 40)),
    (7, "yellow_triangle", "triangle", (235, 215, 40)),
    (8, "blue_triangle", "triangle", (40, 80, 230)),
    (11, "magenta_cross", "cross", (210, 50, 210)),
    (13, "green_cross", "cross", (40, 190, 60)),
    (17, "cyan_ring", "ring", (40, 210, 220)),
    (19, "yellow_diamond", "diamond", (235, 215, 40)),
]
SPLITS = (("train2014", 0), ("val2014", 1))
SYNTH_ENTRIES = {"annotations", "train2014", "val2014"}
SUPERSAMPLE = 2


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Outline of a shape centred at (cx, cy) with 'radius' r (circles approximated by 24 points)."""

    def rot(pts):
        ca, sa = math.cos(angle), math.sin(angle)
        return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in pts]

    if shape in ("circle", "ring"):
        return [(cx + r * math.cos(2 * math.pi * k / 24), cy + r * math.sin(2 * math.pi * k / 24)) for k in range(24)]
    if shape == "square":
        s = r * 0.85
        return rot([(-s, -s), (s, -s), (s, s), (-s, s)])
    if shape == "diamond":
        return rot([(0, -r), (r * 0.65, 0), (0, r), (-r * 0.65, 0)])
    if shape == "triangle":
        return rot([(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)])
    if shape == "cross":
        a, b = r, r * 0.33
        pts = [
            (-b, -a),
            (b, -a),
            (b, -b),
            (a, -b),
            (a, b),
            (b, b),
            (b, a),
            (-b, a),
            (-b, b),
            (-a, b),
            (-a, -b),
            (-b, -b),
        ]
        return rot(pts)
    raise ValueError(shape)


def _render(rng: np.random.Generator, size: int):
    """One image (PIL, RGB) and its objects [(class index, bbox [x, y, w, h], polygon)]."""
    from PIL import Image, ImageDraw

    big = size * SUPERSAMPLE
    base = rng.integers(40, 150, size=3)
    grad = np.linspace(-25, 25, big)[None, :, None] * rng.choice([-1, 1])
    pixels = np.clip(base[None, None, :] + grad + rng.normal(0, 14, size=(big, big, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):  # clutter: grey strokes
        g = int(rng.integers(60, 200))
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, big, size=4))
        draw.line([(x0, y0), (x1, y1)], fill=(g, g, g), width=int(rng.integers(1, 3)) * SUPERSAMPLE)

    objects, boxes = [], []
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(len(CLASSES)))
        _, _, shape, colour = CLASSES[cls]
        for _attempt in range(12):
            r = rng.uniform(0.13, 0.22) * big
            cx, cy = rng.uniform(r, big - r, size=2)
            box = (cx - r, cy - r, cx + r, cy + r)
            if all(_overlap(box, other) < 0.25 for other in boxes):
                break
        boxes.append(box)
        jitter = rng.integers(-20, 21, size=3)
        fill = tuple(int(v) for v in np.clip(np.array(colour) + jitter, 0, 255))
        poly = _polygon(shape, cx, cy, r, float(rng.uniform(-0.3, 0.3)))
        if shape == "ring":
            draw.ellipse(box, outline=fill, width=max(2, int(r * 0.3)))
        else:
            draw.polygon(poly, fill=fill)
        xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        x0, y0 = max(min(xs), 0) / SUPERSAMPLE, max(min(ys), 0) / SUPERSAMPLE
        x1, y1 = min(max(xs), big) / SUPERSAMPLE, min(max(ys), big) / SUPERSAMPLE
        flat = [round(v / SUPERSAMPLE, 2) for p in poly for v in p]
        objects.append((cls, [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)], flat))
    return img.resize((size, size), Image.BILINEAR), objects


def _overlap(a, b) -> float:
    """Intersection over the smaller box."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / small if small > 0 else 0.0


def _split(folder: Path, split: str, n: int, first_id: int, seed: int, stream: int, size: int) -> dict:
    rng = np.random.default_rng([seed, stream])
    images, anns = [], []
    (folder / split).mkdir(parents=True, exist_ok=True)
    for k in range(n):
        image_id = first_id + k
        name = f"COCO_{split}_{image_id:012d}.jpg"
        img, objects = _render(rng, size)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=92)
        (folder / split / name).write_bytes(buf.getvalue())
        images.append({"id": image_id, "file_name": name, "width": size, "height": size, "license": 1})
        for cls, bbox, poly in objects:
            anns.append(
                {
                    "id": len(anns) + 1 + first_id * 10,
                    "image_id": image_id,
                    "category_id": CLASSES[cls][0],
                    "bbox": bbox,
                    "area": round(bbox[2] * bbox[3], 2),
                    "segmentation": [poly],
                    "iscrowd": 0,
                }
            )
    return {
        "info": {"description": "pumlc synthetic shapes (deterministic)", "version": "1.0", "seed": seed},
        "licenses": [{"id": 1, "name": "CC0", "url": ""}],
        "images": images,
        "annotations": anns,
        "categories": [{"id": cid, "name": name, "supercategory": shape} for cid, name, shape, _ in CLASSES],
    }


def make_synth(out: Path, n_train: int, n_test: int, seed: int, image_size: int, *, force: bool = False) -> None:
    """Write a COCO root: `out/annotations/instances_{train,val}2014.json`, `out/{train,val}2014/*.jpg`.

    train2014 holds `n_train` images (-> train + val after `prepare`), val2014 `n_test` (-> test).
    Written into a temporary folder beside `out`, then renamed; an existing `out` is refused unless `force`.
    """
    out = Path(out)
    if n_train < 1 or n_test < 0:
        raise PumlcError(f"synth needs at least 1 training image, got {n_train} train / {n_test} test")
    if not 16 <= image_size <= MAX_IMAGE_SIDE:
        raise PumlcError(f"--image-size must be between 16 and {MAX_IMAGE_SIDE}, got {image_size}")
    if seed < 0:
        raise PumlcError(f"--seed must be a non-negative integer, got {seed}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with claim(out, "pumlc synth"):
        remove_stale(out)  # what a killed synth left
        if out.exists() and not force:
            raise PumlcError(f"{out}: already exists (use --force to replace it)")
        if out.exists() and not (out.is_dir() and {p.name for p in out.iterdir()} <= SYNTH_ENTRIES):
            raise PumlcError(f"{out}: not a folder written by `pumlc synth`; --force only replaces those")
        tmp = temp_dir_beside(out)
        try:
            (tmp / "annotations").mkdir()
            first_id = 1
            for (split, stream), n in zip(SPLITS, (n_train, n_test), strict=True):
                doc = _split(tmp, split, n, first_id, seed, stream, image_size)
                first_id += n
                path = tmp / "annotations" / f"instances_{split}.json"
                path.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
            if out.exists():
                shutil.rmtree(out)
            tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
