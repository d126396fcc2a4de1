"""Shared fixtures: the read-only `../shared` data folder and a small synthetic COCO dataset, prepared."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` beside the project (real COCO128 / VOC2007 files); tests skip if it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent (real-file tests need ../shared/data)")
    return SHARED


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic COCO root: 240 train2014 + 80 val2014 images at 48 px, seed 0."""
    from pumlc_cli.data.synth import make_synth

    root = tmp_path_factory.mktemp("synth") / "coco"
    make_synth(root, n_train=240, n_test=80, seed=0, image_size=48)
    return root


@pytest.fixture(scope="session")
def synth_prepared(synth_root, tmp_path_factory) -> Path:
    """`pumlc prepare coco --root <synth_root> --partial 0.5 --seed 0` (val fraction 0.1)."""
    from pumlc_cli.data.corrupt import CorruptionSpec
    from pumlc_cli.data.prepared import prepare_dataset
    from pumlc_cli.data.readers.coco import read_coco

    out = tmp_path_factory.mktemp("prepared") / "synth-p0.5"
    table = read_coco(
        synth_root / "annotations" / "instances_train2014.json",
        synth_root / "annotations" / "instances_val2014.json",
    )
    prepare_dataset(table, out, CorruptionSpec(partial=0.5))
    return out


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread is as fast and avoids OpenMP stalls on a busy shared machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
