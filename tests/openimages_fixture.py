"""A small Open Images root as Google distributes it (V6 or V7 file names), for the reader's tests (issue 19).

Why: `pumlc prepare openimages` must read the official files as they are, so the tests need files with the real
names, headers, quoting and ID formats, and images a tiny CNN can learn from. Images are the synth shapes
(`pumlc_cli.data.synth`): each of the ten shape classes is a trainable MID. The layout:

    <root>/oidv7-class-descriptions.csv        LabelName,DisplayName  (V6: oidv6-class-descriptions.csv)
    <root>/oidv7-classes-trainable.txt         one MID a line, no header
    <root>/oidv7-{train,val,test}-annotations-{human,machine}-imagelabels.csv
        (V6: oidv6-train-annotations-human-imagelabels.csv, {validation,test}-annotations-human-imagelabels.csv,
         {train,validation,test}-annotations-machine-imagelabels.csv)
    <root>/{train,validation,test}/<ImageID>.jpg

What is in the labels (all drawn from one seed):
- human-verified labels (`ImageID,Source,LabelName,Confidence`, Confidence 1 or 0): each shape present in an
  image is verified positive with probability 0.8 (else unknown); one to three absent shapes are verified
  negative; the non-trainable parent class "Shape" is verified positive on about half the images. Rows are
  sorted by ImageID, as in the official files; Source is `verification` or `crowdsource-verification`.
- machine labels (Source `machine`, Confidence 0.5 ... 0.9 or 1): every present shape, plus on about a
  third of the images one absent shape (a wrong machine label, which `pumlc audit` should find).
- class descriptions hold more classes than the trainable list (as 20k vs 9,605), one DisplayName with a comma
  (quoted, as in the real file), and one trainable class ("Unicorn") that no image is labelled with.

`hostile` damages one thing (see `HOSTILE`); the returned `OpenImagesRoot.hostile` says where, so tests can
check that the error names it. Same arguments -> same bytes (for a given Pillow version).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pumlc_cli.data.synth import CLASSES, _render

Version = Literal["v6", "v7"]
Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
HUMAN_HEADER = ["ImageID", "Source", "LabelName", "Confidence"]
DESCRIPTIONS_HEADER = ["LabelName", "DisplayName"]
HOSTILE = ("bad_row", "short_row", "conflict", "unknown_mid", "missing_image", "wrong_header")
UNKNOWN_MID = "/m/0zzzzz"


def file_names(version: Version) -> dict[str, str]:
    """Role -> official file name: `descriptions`, `trainable`, `human:<split>`, `machine:<split>`."""
    if version == "v7":
        short = {"train": "train", "validation": "val", "test": "test"}
        names = {"descriptions": "oidv7-class-descriptions.csv", "trainable": "oidv7-classes-trainable.txt"}
        for split in SPLITS:
            for kind in ("human", "machine"):
                names[f"{kind}:{split}"] = f"oidv7-{short[split]}-annotations-{kind}-imagelabels.csv"
        return names
    names = {"descriptions": "oidv6-class-descriptions.csv", "trainable": "oidv6-classes-trainable.txt"}
    for split in SPLITS:
        names[f"human:{split}"] = (
            "oidv6-train-annotations-human-imagelabels.csv"
            if split == "train"
            else f"{split}-annotations-human-imagelabels.csv"
        )
        names[f"machine:{split}"] = f"{split}-annotations-machine-imagelabels.csv"
    return names


# MIDs look like the real ones (/m/ + base-36 id); the ten shapes are trainable, in CLASSES order.
SHAPE_MIDS = [f"/m/0{k:x}{7 * k + 3:02x}q" for k in range(len(CLASSES))]
PARENT_MID, UNICORN_MID = "/m/0shp7", "/m/0un1c"
# In the descriptions but neither trainable nor labelled (Open Images lists ~20k classes, trains on 9,605).
OTHER_CLASSES = [("/m/0x11b", "Bunny ears"), ("/m/0x2c4", "Marvel, Hearst"), ("/m/0x39z", "Teacup")]


@dataclass(frozen=True)
class OpenImagesRoot:
    """What `write_openimages` wrote, so tests can compute the expected labels without our reader."""

    root: Path
    version: Version
    files: dict[str, Path]  # role (see `file_names`) -> path
    descriptions: list[tuple[str, str]]  # (LabelName, DisplayName), file order
    trainable: list[str]
    image_ids: dict[str, list[str]]  # split -> ImageIDs, sorted
    present: dict[str, dict[str, list[str]]]  # split -> ImageID -> MIDs of the shapes drawn in it (ground truth)
    human: dict[str, list[tuple[str, str, str, str]]]  # split -> rows as written (before any damage)
    machine: dict[str, list[tuple[str, str, str, str]]]
    hostile: dict[str, object] = field(default_factory=dict)  # kind, file, line (1-based), ...


def _image_ids(rng: np.random.Generator, n: int) -> list[str]:
    """Unique 16-hex-digit ImageIDs (the official format, e.g. 000060e3121c7305), sorted."""
    ids: set[str] = set()
    while len(ids) < n:
        ids.add(f"{int(rng.integers(0, 2**63)):016x}")
    return sorted(ids)


def _write_csv(path: Path, header: list[str], rows: list[tuple[str, ...]]) -> None:
    """Minimal quoting and LF line ends, like the distributed files."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def _labels(rng: np.random.Generator, image_id: str, present: list[int]) -> tuple[list, list]:
    """Human and machine rows of one image, sorted by LabelName."""
    human, machine = [], []
    absent = [c for c in range(len(CLASSES)) if c not in present]
    for c in present:
        if rng.random() < 0.8:
            human.append((SHAPE_MIDS[c], 1))
        machine.append((SHAPE_MIDS[c], f"{rng.integers(6, 11) / 10:g}"))
    for c in rng.choice(absent, size=min(len(absent), int(rng.integers(1, 4))), replace=False):
        human.append((SHAPE_MIDS[int(c)], 0))
    if rng.random() < 0.5:
        human.append((PARENT_MID, 1))
    if absent and rng.random() < 1 / 3:
        machine.append((SHAPE_MIDS[int(rng.choice(absent))], f"{rng.integers(5, 9) / 10:g}"))
    sources = ("verification", "crowdsource-verification")
    human_rows = [(image_id, sources[int(rng.random() < 0.1)], mid, str(conf)) for mid, conf in sorted(human)]
    machine_rows = [(image_id, "machine", mid, conf) for mid, conf in sorted(machine)]
    return human_rows, machine_rows


def write_openimages(
    root: Path,
    *,
    version: Version = "v7",
    sizes: tuple[int, int, int] = (36, 12, 12),
    seed: int = 0,
    image_size: int = 32,
    hostile: str | None = None,
) -> OpenImagesRoot:
    """Write an Open Images root with `sizes` = (train, validation, test) images; see the module docstring."""
    if hostile is not None and hostile not in HOSTILE:
        raise ValueError(f"hostile must be one of {HOSTILE}, got {hostile!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = file_names(version)
    files = {role: root / name for role, name in names.items()}
    rng = np.random.default_rng(seed)

    shape_names = [name.replace("_", " ").capitalize() for _, name, _, _ in CLASSES]
    descriptions = sorted(
        [*zip(SHAPE_MIDS, shape_names, strict=True), (PARENT_MID, "Shape"), (UNICORN_MID, "Unicorn"), *OTHER_CLASSES]
    )
    trainable = sorted([*SHAPE_MIDS, UNICORN_MID])
    _write_csv(files["descriptions"], DESCRIPTIONS_HEADER, descriptions)
    files["trainable"].write_text("".join(f"{mid}\n" for mid in trainable), encoding="utf-8")

    image_ids, present, human, machine = {}, {}, {}, {}
    for split, n in zip(SPLITS, sizes, strict=True):
        folder = root / split
        folder.mkdir(exist_ok=True)
        image_ids[split] = _image_ids(rng, n)
        present[split], human[split], machine[split] = {}, [], []
        for image_id in image_ids[split]:
            img, objects = _render(rng, image_size)
            img.save(folder / f"{image_id}.jpg", format="JPEG", quality=92)
            shapes = sorted({cls for cls, _, _ in objects})
            present[split][image_id] = [SHAPE_MIDS[c] for c in shapes]
            h, m = _labels(rng, image_id, shapes)
            human[split] += h
            machine[split] += m
        _write_csv(files[f"human:{split}"], HUMAN_HEADER, human[split])
        _write_csv(files[f"machine:{split}"], HUMAN_HEADER, machine[split])

    written = OpenImagesRoot(root, version, files, descriptions, trainable, image_ids, present, human, machine)
    if hostile is not None:
        written.hostile.update(_damage(written, hostile))
    return written


def _insert_row(path: Path, line: int, row: str) -> None:
    """Insert `row` so that it becomes 1-based line `line` of the file."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(line - 1, row + "\n")
    path.write_text("".join(lines), encoding="utf-8")


def _damage(oi: OpenImagesRoot, kind: str) -> dict[str, object]:
    """Apply one hostile change to the train split (or its images) and say where it is."""
    path = oi.files["human:train"]
    rows = oi.human["train"]
    middle = len(rows) // 2
    image_id = rows[middle][0]
    line = middle + 2  # header is line 1; the new row goes before the middle row
    if kind == "bad_row":
        _insert_row(path, line, f"{image_id},verification,{SHAPE_MIDS[0]},yes")
    elif kind == "short_row":
        _insert_row(path, line, f"{image_id},verification,{SHAPE_MIDS[0]}")
    elif kind == "unknown_mid":
        _insert_row(path, line, f"{image_id},verification,{UNKNOWN_MID},1")
    elif kind == "conflict":
        # the same image and class verified both ways: a positive row of the file, repeated with Confidence 0
        positive = next(r for r in rows[middle:] if r[3] == "1" and r[2] in SHAPE_MIDS)
        line = rows.index(positive) + 3  # right after the positive row
        _insert_row(path, line, f"{positive[0]},{positive[1]},{positive[2]},0")
        return {"kind": kind, "file": path, "line": line, "image_id": positive[0], "label": positive[2]}
    elif kind == "wrong_header":
        text = path.read_text(encoding="utf-8").split("\n", 1)[1]
        path.write_text("ImageId,Source,Label,Score\n" + text, encoding="utf-8")
        return {"kind": kind, "file": path, "line": 1}
    elif kind == "missing_image":
        missing = {"train": oi.image_ids["train"][:3], "test": oi.image_ids["test"][:1]}
        for split, ids in missing.items():
            for mid in ids:
                (oi.root / split / f"{mid}.jpg").unlink()
        return {"kind": kind, "missing": missing, "count": sum(len(v) for v in missing.values())}
    return {"kind": kind, "file": path, "line": line, "image_id": image_id}
