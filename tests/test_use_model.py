"""Using a trained run outside training: the Python API (`pumlc_cli.load_model`) and `pumlc export`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pumlc_cli
from pumlc_cli import load_prepared
from pumlc_cli.errors import PumlcError
from tests.helpers import run_cli, train_args


@pytest.fixture(scope="module")
def trained(synth_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch tiny run (linear head, 32 px) on the synthetic set."""
    run = tmp_path_factory.mktemp("use") / "run"
    run_cli(*train_args(synth_prepared, run, epochs=1))
    return run


@pytest.fixture(scope="module")
def images(synth_prepared: Path) -> list[Path]:
    prepared = load_prepared(synth_prepared)
    return [prepared.image_path(p) for p in prepared.split_data("test").images[:5]]


def test_load_model_scores_equal_pumlc_predict(trained: Path, images: list[Path], synth_prepared: Path) -> None:
    done = run_cli("predict", trained, *images, "--json", "-", "--device", "cpu", "--batch-size", "2")
    doc = json.loads(done.stdout)
    model = pumlc_cli.load_model(trained)
    assert model.classes == list(load_prepared(synth_prepared).classes)
    assert model.weights in ("regular", "ema") and model.image_size == 32
    cli = np.array([[row["scores"][c] for c in model.classes] for row in doc["predictions"]])
    assert [row["image"] for row in doc["predictions"]] == [str(p) for p in images]
    scores = model.predict(images, batch_size=3)
    assert scores.shape == (len(images), len(model.classes)) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, cli, atol=1e-6)  # the CLI rounds to 6 decimals
    assert scores.std() > 0  # distinct images, distinct scores: the comparison is not between constants


def test_predict_takes_paths_pil_images_and_arrays_alike(trained: Path, images: list[Path]) -> None:
    model = pumlc_cli.load_model(str(trained / "best.pt"), device="cpu")
    by_path = model.predict(images[:3], batch_size=1)
    pil = [Image.open(p) for p in images[:3]]
    np.testing.assert_allclose(model.predict(pil), by_path, atol=1e-6)
    np.testing.assert_allclose(model.predict([np.asarray(im.convert("RGB")) for im in pil]), by_path, atol=1e-6)
    one = model.predict(images[0])
    assert one.shape == (1, len(model.classes))
    np.testing.assert_allclose(one[0], by_path[0], atol=1e-6)
    assert model.predict([]).shape == (0, len(model.classes))


def test_api_refuses_what_it_cannot_score(trained: Path, tmp_path: Path) -> None:
    model = pumlc_cli.load_model(trained)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(PumlcError, match="bad.jpg: cannot read image"):
        model.predict([bad])
    with pytest.raises(PumlcError, match="H x W x 3 uint8"):
        model.predict(np.zeros((8, 8), np.float32))
    with pytest.raises(PumlcError, match="no CUDA device|unknown device"):
        pumlc_cli.load_model(trained, device="cuda:7" if not _has_cuda() else "tpu")
    with pytest.raises(PumlcError, match="a folder without best.pt or last.pt"):
        pumlc_cli.load_model(tmp_path)


def test_thresholds_come_from_the_checkpoint(trained: Path, tmp_path: Path) -> None:
    from pumlc_cli.runtime.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(trained / "best.pt")
    assert pumlc_cli.load_model(trained).thresholds == payload["thresholds"]  # training records them
    del payload["thresholds"]  # a checkpoint from before they were recorded
    save_checkpoint(tmp_path / "old.pt", {k: v for k, v in payload.items() if k != "format"})
    assert pumlc_cli.load_model(tmp_path / "old.pt").thresholds is None
    n = len(payload["classes"])
    chosen = {"global": 0.4, "per_class": [0.1 * (i % 9) for i in range(n)], "min_positives": 3}
    payload.update(thresholds={**chosen, "chosen_on": "val", "val_images": 24})
    save_checkpoint(tmp_path / "with.pt", {k: v for k, v in payload.items() if k != "format"})
    model = pumlc_cli.load_model(tmp_path / "with.pt")
    assert model.thresholds is not None
    assert model.thresholds["per_class"] == chosen["per_class"] and model.thresholds["global"] == 0.4


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
