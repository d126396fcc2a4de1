"""ImageList: image paths over one Arrow string array, read as a sequence of str."""

from __future__ import annotations

import pickle
import sys
import tracemalloc

import numpy as np
import pyarrow as pa
import pytest

from pumlc_cli.data.datasets import EvalTransform, LabelledImages
from pumlc_cli.data.entries import Entries
from pumlc_cli.data.imagelist import ImageList
from pumlc_cli.data.prepared import LabelStore, load_prepared, write_prepared


def test_reads_like_the_list_it_holds(monkeypatch):
    monkeypatch.setattr("pumlc_cli.data.imagelist.ITER_CHUNK", 4)  # iteration crosses chunk boundaries
    paths = [f"train/{i:04x}.jpg" for i in range(11)]
    images = ImageList(pa.chunked_array([pa.array(paths[:6]), pa.array(paths[6:])]))
    assert len(images) == 11 and list(images) == paths and images == paths and paths == images
    assert images[0] == paths[0] and images[-1] == paths[-1] and isinstance(images[3], str)
    assert images[2:9:3] == paths[2:9:3] and images[5:] == paths[5:] and images[20:] == []
    assert images.take(np.array([7, 1, 1])) == [paths[7], paths[1], paths[1]]
    assert images.take(np.arange(11) % 2 == 0) == paths[::2]
    assert images.index(paths[4]) == 4 and paths[9] in images and images != paths[:-1]
    assert np.array_equal(np.asarray(images), np.array(paths, dtype=object))
    assert pickle.loads(pickle.dumps(images)) == paths
    assert ImageList(paths) == ImageList(images) and not ImageList([])
    with pytest.raises(IndexError):
        images[11]
    with pytest.raises(TypeError):
        hash(images)


def test_a_loaded_split_holds_no_python_string_per_image(tmp_path):
    """load_prepared + split_entries keep the paths as stored bytes: the Python heap they use stays below what a
    list of the paths as str would take alone (tracemalloc sees Python and numpy memory, not Arrow's)."""
    n = 300_000
    paths = [f"train/{i:016x}.jpg" for i in range(n)]
    split = np.where(np.arange(n) % 10 == 0, "test", "train")
    rows = np.arange(0, n, 7, dtype=np.int32)
    ones = np.ones(len(rows), np.int8)
    entries = Entries(rows, (rows % 5).astype(np.int32), ones, ones)
    store = LabelStore(ImageList(paths), split, entries, 0, dict.fromkeys(("train", "val", "test"), 0))
    write_prepared(tmp_path / "p", store, {"classes": list("abcde"), "image_root": str(tmp_path)})
    as_strings = sum(sys.getsizeof(p) for p in paths) + 8 * n
    train = [p for p, s in zip(paths, split, strict=True) if s == "train"]
    del paths
    tracemalloc.start()
    try:
        part = load_prepared(tmp_path / "p").split_entries("train")
        dataset = LabelledImages(tmp_path, part.images, None, EvalTransform(8))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(dataset.images, ImageList) and len(dataset) == len(train)
    assert dataset.images[54_321] == train[54_321] and part.images[-1] == train[-1]
    assert peak < 0.8 * as_strings, (peak, as_strings)
