"""bench/openimages_scale.py's generator: official names and headers, the stated label statistics, determinism
and reuse of files whose stamp matches (issue 19)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "openimages_scale.py"
OFFICIAL = [
    "oidv7-class-descriptions.csv",
    "oidv7-classes-trainable.txt",
    "oidv7-train-annotations-human-imagelabels.csv",
    "oidv7-val-annotations-human-imagelabels.csv",
    "oidv7-test-annotations-human-imagelabels.csv",
]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("openimages_scale", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(bench, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("oi") / "a"
    bench.CHUNK = 1500  # several chunks per split: rows must stay sorted and unique across them
    bench.generate(root, 5000, seed=1)
    return root


def as_strings(path: Path) -> pa.Table:
    return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types={"ImageID": pa.string()}))


def test_official_files_and_statistics(generated):
    assert sorted(p.name for p in generated.iterdir()) == sorted([*OFFICIAL, "generated.json"])
    first_lines = {name: (generated / name).read_text().split("\n", 1)[0] for name in OFFICIAL}
    assert first_lines["oidv7-class-descriptions.csv"] == "LabelName,DisplayName"
    for name in OFFICIAL[2:]:
        assert first_lines[name] == "ImageID,Source,LabelName,Confidence"
    classes = pcsv.read_csv(generated / "oidv7-class-descriptions.csv")["LabelName"].to_pylist()
    trainable = (generated / "oidv7-classes-trainable.txt").read_text().split()
    assert len(classes) == len(set(classes)) == 20_638 and len(set(trainable)) == 9_605
    assert set(trainable) <= set(classes) and all(c.startswith("/m/0") for c in classes)

    tables = {name: as_strings(generated / name) for name in OFFICIAL[2:]}
    images = [len(set(t["ImageID"].to_pylist())) for t in tables.values()]
    assert images == [4909, 23, 68]  # 5000 in the real split proportions
    labels = pa.concat_tables(tables.values())
    ids = labels["ImageID"].to_pylist()
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids[:500])
    for table in tables.values():
        image_ids = table["ImageID"].to_pylist()
        assert image_ids == sorted(image_ids)
        pairs = set(zip(image_ids, table["LabelName"].to_pylist(), strict=True))
        assert len(pairs) == table.num_rows  # no (image, class) verified twice
    assert 6.3 <= labels.num_rows / 5000 <= 6.7
    assert 0.47 <= pc.mean(labels["Confidence"]).as_py() <= 0.53
    assert set(labels["Source"].unique().to_pylist()) == {"verification", "crowdsource-verification"}
    names = labels["LabelName"].to_numpy(zero_copy_only=False)
    assert set(names) <= set(classes)
    on_trainable = np.isin(names, trainable).mean()
    assert 0.85 <= on_trainable <= 0.95
    # Zipf-like: the most frequent class carries far more labels than the median class
    counts = np.sort(np.unique(names, return_counts=True)[1])[::-1]
    assert counts[0] >= 20 * np.median(counts)


def test_deterministic_and_reused(bench, generated, tmp_path):
    again = tmp_path / "b"
    bench.generate(again, 5000, seed=1)
    for name in OFFICIAL:
        assert (again / name).read_bytes() == (generated / name).read_bytes(), name
    before = {name: (again / name).stat().st_mtime_ns for name in OFFICIAL}
    bench.generate(again, 5000, seed=1)  # stamp matches: nothing rewritten
    assert {name: (again / name).stat().st_mtime_ns for name in OFFICIAL} == before
    bench.generate(again, 5000, seed=2)  # another seed: regenerated, different labels
    assert (again / OFFICIAL[2]).read_bytes() != (generated / OFFICIAL[2]).read_bytes()
