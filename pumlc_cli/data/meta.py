"""Class lists of the standard datasets, loaded from the data files in `datasets_meta/`.

Why data files: the lists are facts about the datasets, not code; keeping them as JSON lets users diff and
cite them, and lets every module (readers, evaluation, reports) agree on one class order.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from pumlc_cli.errors import PumlcError

META_DIR = Path(__file__).resolve().parents[2] / "datasets_meta"


@cache
def _load(name: str) -> dict:
    path = META_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PumlcError(f"{path}: cannot read dataset metadata ({err})") from err


def coco_categories() -> list[tuple[int, str]]:
    """The 80 COCO 2014 categories as (original sparse id, name), in id order = contiguous class index."""
    return [(int(c["id"]), str(c["name"])) for c in _load("coco2014")["classes"]]


def coco_classes() -> list[str]:
    """The 80 COCO class names in contiguous-index order (sorted by original category id)."""
    return [name for _, name in coco_categories()]


def voc_classes() -> list[str]:
    """The 20 PASCAL VOC 2007 class names in the standard devkit order."""
    return [str(c["name"]) for c in _load("voc2007")["classes"]]
