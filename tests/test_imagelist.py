"""ImageList: image paths over one Arrow string array, read as a sequence of str."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest

from pumlc_cli.data.imagelist import ImageList


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
