"""`pumlc export`: ONNX and TorchScript files that score as `pumlc predict` does, at any batch size, and refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import pumlc_cli
from pumlc_cli import load_prepared
from tests.helpers import error_line, run_cli, train_args, tree_digest


@pytest.fixture(scope="module")
def trained(synth_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch tiny run (local-global branches, linear head, 32 px) on the synthetic set."""
    run = tmp_path_factory.mktemp("export") / "run"
    run_cli(*train_args(synth_prepared, run, epochs=1))
    return run


@pytest.fixture(scope="module")
def images(synth_prepared: Path) -> list[Path]:
    prepared = load_prepared(synth_prepared)
    return [prepared.image_path(p) for p in prepared.split_data("test").images[:3]]


@pytest.fixture(scope="module")
def predicted(trained: Path, images: list[Path]) -> np.ndarray:
    """`pumlc predict --json -` scores of the three images, columns in class order."""
    doc = json.loads(run_cli("predict", trained, *images, "--json", "-", "--device", "cpu").stdout)
    classes = pumlc_cli.load_model(trained).classes
    return np.array([[row["scores"][c] for c in classes] for row in doc["predictions"]], np.float32)


def _batch(trained: Path, images: list[Path]) -> np.ndarray:
    """The images as the documented preprocessing makes them (the exported graph's input)."""
    model = pumlc_cli.load_model(trained)
    return np.stack([model.preprocess(p).numpy() for p in images])


def _check_metadata(meta: dict, trained: Path) -> None:
    model = pumlc_cli.load_model(trained)
    assert meta["format"] == "pumlc-export-v1"
    assert meta["classes"] == model.classes
    assert meta["input"]["image_size"] == 32 and meta["input"]["shape"] == ["batch", 3, 32, 32]
    assert meta["input"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert meta["input"]["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert meta["output"] == {"name": "scores", "shape": ["batch", len(model.classes)], "activation": "sigmoid"}
    assert meta["source"]["weights"] == model.weights and meta["source"]["checkpoint"] == str(trained / "best.pt")


def test_onnx_round_trip_matches_predict_at_any_batch_size(
    trained: Path, images: list[Path], predicted: np.ndarray, tmp_path: Path
) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'pumlc[export]')")
    import onnx

    out = tmp_path / "model.onnx"
    done = run_cli("export", trained, "--format", "onnx", "--out", out)
    assert "matches pumlc predict within" in done.stderr and f"exported {out}" in done.stderr
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, outp.name) == ("images", "scores") and isinstance(inp.shape[0], str)  # a dynamic batch
    batch = _batch(trained, images)
    three = session.run(None, {"images": batch})[0]
    ones = np.concatenate([session.run(None, {"images": batch[i : i + 1]})[0] for i in range(3)])
    np.testing.assert_allclose(three, predicted, atol=1e-4)
    np.testing.assert_allclose(ones, predicted, atol=1e-4)
    assert predicted.std() > 0
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    _check_metadata(json.loads(props["pumlc"]), trained)
    recorded = pumlc_cli.load_model(trained).thresholds  # chosen on val in training
    assert recorded is not None and json.loads(props["pumlc"])["thresholds"] == recorded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # one file: no external data, no temp


def test_torchscript_round_trip_carries_the_thresholds(
    trained: Path, images: list[Path], predicted: np.ndarray, tmp_path: Path
) -> None:
    import torch

    from pumlc_cli.runtime.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(trained / "best.pt")
    n = len(payload["classes"])
    thresholds = {"global": 0.35, "per_class": [0.05 * i for i in range(n)], "min_positives": 2}
    thresholds.update(chosen_on="val", val_images=24)
    payload["thresholds"] = thresholds
    ckpt = tmp_path / "with-thresholds.pt"
    save_checkpoint(ckpt, {k: v for k, v in payload.items() if k != "format"})
    out = tmp_path / "model.pt"
    run_cli("export", ckpt, "--format", "torchscript", "--out", out)
    extra = {"pumlc.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch marks TorchScript deprecated; the format is asked for
        loaded = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["pumlc.json"])
    assert meta["thresholds"] == thresholds and meta["source"]["checkpoint"] == str(ckpt)
    batch = torch.from_numpy(_batch(trained, images))
    with torch.no_grad():
        np.testing.assert_allclose(loaded(batch).numpy(), predicted, atol=1e-4)
        np.testing.assert_allclose(loaded(batch[:1]).numpy(), predicted[:1], atol=1e-4)
    # --force replaces an earlier export, nothing else
    again = run_cli("export", ckpt, "--format", "torchscript", "--out", out, "--force")
    assert again.returncode == 0 and zipfile.is_zipfile(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "with-thresholds.pt"]


def test_a_run_without_best_pt_is_refused(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "unselected"
    run.mkdir()
    for name in ("last.pt", "config.json"):
        (run / name).write_bytes((trained / name).read_bytes())
    line = error_line(run_cli("export", run, "--format", "torchscript", "--out", tmp_path / "m.pt", check=False))
    assert "no best.pt" in line and "last.pt" in line
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize(
    ("target", "force", "expect"),
    [
        (".", False, "contains the input"),
        ("best.pt", True, "is the input"),
        ("last.pt", True, "would overwrite a checkpoint"),
        ("config.json", True, "run folder's own config.json"),
        ("-", False, "must be a file"),
    ],
)
def test_outputs_that_overlap_the_run_are_refused(
    trained: Path, target: str, force: bool, expect: str, tmp_path: Path
) -> None:
    before = tree_digest(trained)
    out = "-" if target == "-" else trained / target
    args = ["export", trained, "--format", "torchscript", "--out", out, *(["--force"] if force else [])]
    assert expect in error_line(run_cli(*args, check=False))
    assert tree_digest(trained) == before


def test_force_replaces_only_an_export_of_the_same_kind(trained: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    line = error_line(run_cli("export", trained, "--format", "torchscript", "--out", notes, "--force", check=False))
    assert "is not a TorchScript archive pumlc exported" in line
    assert notes.read_text() == "my notes\n"
    exists = error_line(run_cli("export", trained, "--format", "torchscript", "--out", notes, check=False))
    assert "already exists" in exists


def test_an_unsupported_head_is_one_line(trained: Path, tmp_path: Path) -> None:
    from pumlc_cli.runtime.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(trained / "best.pt")
    payload["config"] = {**payload["config"], "head": "transformer"}
    ckpt = tmp_path / "odd-head.pt"
    save_checkpoint(ckpt, {k: v for k, v in payload.items() if k != "format"})
    line = error_line(run_cli("export", ckpt, "--format", "torchscript", "--out", tmp_path / "m.pt", check=False))
    assert "'transformer'" in line and "linear, semantic" in line


def test_onnx_without_the_extra_names_the_install(trained: Path, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"  # as if `pumlc[export]` were not installed
        "from pumlc_cli.cli import main; main()"
    )
    argv = ["export", str(trained), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    line = error_line(proc)
    assert "onnxruntime" in line and "pip install 'pumlc[export]'" in line
    assert not (tmp_path / "m.onnx").exists()


def test_without_the_run_data_the_check_uses_noise_images(trained: Path, tmp_path: Path) -> None:
    from pumlc_cli.runtime.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(trained / "best.pt")
    payload["config"] = {**payload["config"], "data": str(tmp_path / "moved-away")}
    ckpt = tmp_path / "moved.pt"
    save_checkpoint(ckpt, {k: v for k, v in payload.items() if k != "format"})
    done = run_cli("export", ckpt, "--format", "torchscript", "--out", tmp_path / "m.pt")
    assert "on 4 noise images (the run's data is gone)" in done.stderr and (tmp_path / "m.pt").is_file()
